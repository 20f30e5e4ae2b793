"""The policy file and the renderer of the refined prompt (stage 3, response guidance).

The refined prompt is *rendered* from the model's judgement and its evidence, not generated:
auditable, editable, and it can never garble the user's request, which is always kept
verbatim between markers that do not occur in it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .taxonomy import CATEGORIES, STRATEGIES


@dataclass(frozen=True)
class Judgement:
    """The model's reading of one request, before rendering."""

    risk: float
    category: str
    source: str
    strategy: str
    concepts: tuple[str, ...]
    ocr_text: str
    intent_span: str


class Policy:
    """Per-category guidance; load the bundled file, then override any part of it."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        missing = [c for c in CATEGORIES if c != "none" and c not in data.get("categories", {})]
        if missing:
            raise ModelLoadError(f"policy lacks guidance for categories: {', '.join(missing)}")
        unknown = [s for s in data.get("strategies", {}) if s not in STRATEGIES]
        if unknown:
            raise ModelLoadError(f"policy names unknown strategies: {', '.join(unknown)}")
        self.data: dict[str, Any] = copy.deepcopy(dict(data))

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        try:
            return cls(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read policy file {path}: {exc}") from exc

    def override(self, overrides: Mapping[str, Any]) -> Policy:
        """A new policy with ``overrides`` merged in (e.g. ``{"categories": {"hate": {...}}}``)."""

        def merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
            for k, v in new.items():
                base[k] = merge(dict(base.get(k, {})), v) if isinstance(v, Mapping) else v
            return base

        return Policy(merge(copy.deepcopy(self.data), overrides))

    def category(self, key: str) -> dict[str, str]:
        return self.data["categories"][key]

    def threat_text(self, j: Judgement) -> str:
        title = self.category(j.category)["title"]
        where = self.data["sources"].get(j.source, j.source)
        return f"Possible {title} risk (risk {j.risk:.2f}), coming from {where}."

    def intent_text(self, j: Judgement) -> str:
        intent = self.category(j.category)["intent"]
        if j.intent_span:
            return f'The part "{_clip(j.intent_span)}" suggests the user may want to {intent}.'
        return f"The user may want to {intent}."

    def guidance_text(self, j: Judgement) -> str:
        cat = self.category(j.category)
        strategy = self.data["strategies"].get(j.strategy, "")
        return f"{strategy} {cat['guidance']} You may still help with: {cat['may_help_with']}."

    def render(self, text: str, j: Judgement) -> str:
        """The refined prompt: evidence, guidance, then the request verbatim between markers."""
        lines = [self.data["header"], self.threat_text(j)]
        seen = []
        if j.concepts:
            seen.append("the image appears to show " + ", ".join(j.concepts))
        if j.ocr_text:
            seen.append(f'the image contains the text "{_clip(j.ocr_text, 300)}"')
        if seen:
            lines.append("Evidence: " + "; ".join(seen) + ".")
        lines += [self.intent_text(j), "How to respond: " + self.guidance_text(j),
                  self.data["footer"]]
        begin, end = _markers(text)
        return "\n".join(lines) + f"\n{begin}\n{text}\n{end}"


def _clip(s: str, n: int = 160) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _markers(text: str) -> tuple[str, str]:
    """Begin/end markers that do not occur in the text, so the request cannot close them."""
    n = 0
    while True:
        tag = "USER_REQUEST" + (f"_{n}" if n else "")
        begin, end = f"<<<{tag}", f"{tag}>>>"
        if begin not in text and end not in text:
            return begin, end
        n += 1

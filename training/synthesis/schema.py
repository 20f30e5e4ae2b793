"""The record every teacher produces: one example with its three reasoning stages.

Stage 1 (threat): ``unsafe``, ``category``, ``source``, ``threat`` and the evidence fields.
Stage 2 (intent): ``intent`` and ``intent_span`` (where in the request or image text it sits).
Stage 3 (guidance): ``strategy`` and ``guidance``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from vlmguard.taxonomy import CATEGORIES, SOURCES, STRATEGIES


@dataclass
class SeedItem:
    """What a teacher is given: an image (path, optional), its evidence, and the request."""

    seed_id: str                      # the split key: examples of one seed never cross splits
    text: str                         # the user's request
    image: str | None = None          # path of a real or rendered image, when there is one
    concepts: list[str] = field(default_factory=list)  # tagger concepts (words)
    ocr_text: str = ""                # text written in the image
    origin: str = ""                  # corpus or generator that made it
    licence: str = ""


@dataclass
class Example:
    """One annotated training/evaluation example (JSON lines on disk)."""

    id: str
    seed_id: str
    text: str
    concepts: list[str]
    ocr_text: str
    unsafe: bool
    category: str | None              # a key of CATEGORIES; None = unknown (loss masked)
    source: str                       # a key of SOURCES
    strategy: str                     # a key of STRATEGIES
    threat: str = ""                  # stage 1, in words
    intent: str = ""                  # stage 2, in words
    intent_span: tuple[str, int, int] | None = None  # ("text" | "ocr", start, end) char offsets
    guidance: str = ""                # stage 3, in words
    image: str | None = None
    origin: str = ""
    licence: str = ""
    split: str = "train"
    bare_text: str = ""               # the request before a label-keeping clause was added

    @property
    def has_image(self) -> bool:
        """Whether the request comes with an image: a file, or evidence read from one."""
        return self.image is not None or bool(self.concepts) or bool(self.ocr_text)

    def validate(self) -> None:
        """Raise ValueError when a label is outside the taxonomy or inconsistent."""
        if self.category is not None and self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if not self.unsafe and (self.category not in (None, "none") or self.source != "none"):
            raise ValueError("a safe example has category 'none' and source 'none'")
        if self.intent_span is not None:
            where, start, end = self.intent_span
            field_text = self.text if where == "text" else self.ocr_text
            if where not in ("text", "ocr") or not 0 <= start < end <= len(field_text):
                raise ValueError(f"intent span {self.intent_span} outside the {where} field")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        d = dict(d)
        if d.get("intent_span") is not None:
            d["intent_span"] = tuple(d["intent_span"])
        return cls(**d)

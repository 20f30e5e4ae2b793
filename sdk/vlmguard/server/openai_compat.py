"""OpenAI's moderation schema from guard verdicts.

``categories`` and ``category_scores`` carry the guard's own thirteen MLCommons hazard keys
(Llama Guard 3's S1-S13) *and* OpenAI's thirteen keys, so the official clients parse them.
OpenAI's keys are a coarse mapping: each takes the highest score of the guard categories that
fall under it; five have no counterpart in the taxonomy (``harassment/threatening``,
``hate/threatening``, ``self-harm/intent``, ``self-harm/instructions``, ``violence/graphic``)
and always read 0 / false.
"""

from __future__ import annotations

from typing import Any

from ..result import RewriteResult
from ..taxonomy import CATEGORIES

OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)

TO_OPENAI: dict[str, tuple[str, ...]] = {
    "violent_crimes": ("violence", "illicit/violent"),
    "non_violent_crimes": ("illicit",),
    "sex_related_crimes": ("sexual", "illicit"),
    "child_sexual_exploitation": ("sexual/minors", "sexual"),
    "defamation": ("harassment",),
    "specialized_advice": (),
    "privacy": (),
    "intellectual_property": (),
    "indiscriminate_weapons": ("illicit/violent", "violence"),
    "hate": ("hate",),
    "suicide_self_harm": ("self-harm",),
    "sexual_content": ("sexual",),
    "elections": (),
}
assert set(TO_OPENAI) == set(CATEGORIES[1:])


def guard_fields(result: RewriteResult) -> dict[str, Any]:
    """The guard's own reading of one input: verdict, rewrite, evidence and reasoning."""
    d = result.to_dict()
    return {k: d[k] for k in ("action", "safe", "risk", "category", "hazard_code", "source",
                              "strategy", "flagged_categories", "prompt", "reasoning",
                              "evidence", "timings_ms")}


def moderation_result(result: RewriteResult, input_types: list[str]) -> dict[str, Any]:
    """One ``results[]`` entry. ``flagged`` is the guard's verdict (also in monitor mode)."""
    ours = {c: float(result.category_scores.get(c, 0.0)) for c in CATEGORIES[1:]}
    flagged_ours = set(result.flagged_categories) if not result.safe else set()
    scores: dict[str, float] = dict(ours)
    flags: dict[str, bool] = {c: c in flagged_ours for c in ours}
    for key in OPENAI_CATEGORIES:
        sources = [c for c, keys in TO_OPENAI.items() if key in keys]
        scores[key] = max((ours[c] for c in sources), default=0.0)
        flags[key] = any(c in flagged_ours for c in sources)
    applied = {k: (list(input_types) if k in ours or any(
        k in keys for keys in TO_OPENAI.values()) else []) for k in scores}
    return {"flagged": not result.safe, "categories": flags, "category_scores": scores,
            "category_applied_input_types": applied, "vlmguard": guard_fields(result)}

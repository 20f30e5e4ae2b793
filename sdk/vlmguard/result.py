"""The typed result of a guard call: frozen dataclasses that serialise to JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Evidence:
    """What the guard saw: the tagger's concepts and the text read in the image."""

    concepts: tuple[str, ...] = ()
    concept_scores: tuple[float, ...] = ()
    ocr_text: str = ""
    intent_span: str = ""      # the words the model marked as carrying the intent
    ocr_truncated: bool = False  # the image held more text boxes than the OCR budget reads


@dataclass(frozen=True)
class Reasoning:
    """The three stages in words: threat identification, intent, response guidance."""

    threat: str
    intent: str
    guidance: str


@dataclass(frozen=True)
class RewriteResult:
    """The guard's verdict and the prompt to send downstream.

    ``prompt`` equals the original text exactly when ``action`` is ``"pass"`` (safe) or
    ``"monitor"`` (unsafe, but the guard runs in monitor-only mode and only reports);
    on ``"rewrite"`` it wraps the original request, verbatim and quoted, in guidance for the
    downstream model.

    ``category_scores`` holds every harmful category's score (P(unsafe) shared out by the
    category head, the highest over the request's windows), so a caller can apply its own
    thresholds; ``flagged_categories`` the categories that made the verdict, ``category``
    first.

    ``safe`` is False with ``category`` ``"none"`` (and ``source`` ``"jailbreak"``) when no
    hazard was found but the text imitates the guard's own section (its header, footer or
    request markers): forwarded verbatim it would read downstream as the guard's words, so
    it is rewritten between real markers (:meth:`vlmguard.Policy.imitates_guard`). Likewise
    (``source`` ``"typography"``) when the image held more text than the guard read
    (``evidence.ocr_truncated``): what went unread could be the harmful line.

    ``decided_by`` is ``"precedent"`` when the judge passed the request but its nearest
    training texts by meaning are harmful ones (:mod:`vlmguard.precedent`); ``risk`` is then
    that score on the judge's scale. ``precedent_score`` is set whenever the check ran.
    ``decided_by`` is ``"signature"`` when the text is one of the guard's own sections,
    unchanged (:meth:`vlmguard.Guard.is_own_section`): already guarded, it passes as it is
    (``safe`` True, ``action`` ``"pass"``, ``risk`` 0: no model ran).
    """

    safe: bool
    risk: float                       # P(unsafe) restricted to the enforced categories
    category: str                     # a key of vlmguard.taxonomy.CATEGORIES; "none" if safe
    hazard_code: str | None           # "S1".."S13" (Llama Guard 3 numbering) or None
    source: str                       # text / image / typography / cross_modal / jailbreak / none
    strategy: str                     # response strategy; "none" if safe
    prompt: str
    reasoning: Reasoning
    evidence: Evidence
    timings_ms: dict[str, float] = field(default_factory=dict)
    category_scores: dict[str, float] = field(default_factory=dict)
    flagged_categories: tuple[str, ...] = ()
    action: str = "pass"              # pass / rewrite / monitor (unsafe, reported only)
    decided_by: str = "judge"         # judge / precedent / signature (see above)
    precedent_score: float | None = None  # set when the judge passed the request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

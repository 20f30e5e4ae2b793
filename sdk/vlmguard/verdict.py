"""From the model's logits to a verdict: pure arithmetic on arrays, no model and no I/O.

The guard scores a request as several windows (long text, long image text and each reading
of the request get their own). For each window every sequence head is read at the first
token; the window that trips a threshold (or, when none does, comes closest) decides the
verdict, and its span tags name the words that carry the intent. Everything here can be
unit-tested on synthetic scores (``tests/test_verdict.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .encoder import HEADS, Window, head_slices, softmax
from .errors import InvalidConfigError
from .taxonomy import CATEGORIES

SEQUENCE_HEADS = ("safety", "category", "source", "strategy")
HARMFUL = frozenset(c for c in CATEGORIES if c != "none")
"""Every hazard category (all but ``none``): what the guard enforces by default."""
_SLICES = head_slices()


@dataclass(frozen=True)
class Rule:
    """What is enforced: the categories, the joint threshold, and per-category thresholds.

    Categories with their own threshold are judged alone by their own score; the rest
    together, by their summed share of P(unsafe) against ``threshold``.
    """

    threshold: float
    categories: frozenset[str] = HARMFUL
    category_thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def checked(cls, threshold: object, categories: Iterable[str] | None = None,
                category_thresholds: Mapping[str, float] | None = None) -> Rule:
        """A rule from a caller's settings, each checked (:class:`InvalidConfigError`):
        thresholds in (0, 1), known categories (default: all), per-category thresholds
        only for enforced ones."""
        t = check_threshold(threshold)
        chosen = _check_categories(categories)
        return cls(t, chosen, _check_category_thresholds(category_thresholds, chosen))


def check_threshold(value: object) -> float:
    """``value`` as a threshold: a number in (0, 1)."""
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"threshold must be a number, got {value!r}") from exc
    if not (math.isfinite(t) and 0.0 < t < 1.0):
        raise InvalidConfigError(f"threshold must be in (0, 1), got {t}")
    return t


def _check_categories(categories: Iterable[str] | None) -> frozenset[str]:
    if categories is None:
        return HARMFUL
    if isinstance(categories, str | bytes):
        raise InvalidConfigError("categories must be a collection of category keys, "
                                 f"not one {type(categories).__name__}")
    try:
        chosen = frozenset(categories)
    except TypeError as exc:
        raise InvalidConfigError(f"categories must be a collection of category keys: "
                                 f"{exc}") from exc
    unknown = chosen - HARMFUL
    if unknown:
        raise InvalidConfigError(f"unknown categories {sorted(map(repr, unknown))}; "
                                 f"choose from {sorted(HARMFUL)}")
    if not chosen:
        raise InvalidConfigError("enforce at least one category")
    return chosen


def _check_category_thresholds(given: Mapping[str, float] | None,
                               categories: frozenset[str]) -> dict[str, float]:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise InvalidConfigError("category_thresholds must be a mapping of category key "
                                 f"to threshold, not {type(given).__name__}")
    out = {}
    for key, value in given.items():
        if key not in categories:
            raise InvalidConfigError(
                f"category_thresholds names {key!r}, which is not an enforced category; "
                f"choose from {sorted(categories)}")
        out[key] = check_threshold(value)
    return out


@dataclass(frozen=True)
class WindowVerdict:
    """One window judged: the enforced risk, the categories a threshold trips, and how close
    the window comes to tripping one (``level`` >= 1 exactly when something trips)."""

    probs: Mapping[str, np.ndarray]
    scores: Mapping[str, float]
    risk: float
    tripped: frozenset[str]
    level: float


@dataclass(frozen=True)
class Decision:
    """The request's verdict: the deciding window and the request's category scores."""

    window: int
    """Index of the deciding window (the first one that trips, else the closest)."""
    verdict: WindowVerdict
    category_scores: dict[str, float]
    """Each harmful category's highest score over the windows (unrounded)."""

    @property
    def unsafe(self) -> bool:
        return bool(self.verdict.tripped)


def head_probs(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Each sequence head's softmax at the first token of one window's logits (T, labels)."""
    return {h: softmax(logits[0, _SLICES[h]]) for h in SEQUENCE_HEADS}


def category_scores(probs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Each harmful category's share of P(unsafe), as the category head divides it."""
    p_unsafe = float(probs["safety"][1])
    pc = probs["category"]
    cats = HEADS["category"]
    harmful = sum(float(pc[i]) for i, c in enumerate(cats) if c != "none")
    return {c: (p_unsafe * float(pc[i]) / harmful if harmful > 0 else 0.0)
            for i, c in enumerate(cats) if c != "none"}


def enforced_risk(probs: Mapping[str, np.ndarray], categories: frozenset[str]) -> float:
    """P(unsafe) restricted to ``categories`` (all of them: P(unsafe) itself)."""
    p_unsafe = float(probs["safety"][1])
    if len(categories) == len(CATEGORIES) - 1:
        return p_unsafe
    cats = HEADS["category"]
    pc = probs["category"]
    harmful = sum(float(pc[i]) for i, c in enumerate(cats) if c != "none")
    enforced = sum(float(pc[i]) for i, c in enumerate(cats) if c in categories)
    return p_unsafe * (enforced / harmful if harmful > 0 else 0.0)


def judge_window(probs: Mapping[str, np.ndarray], rule: Rule) -> WindowVerdict:
    """One window against the rule. With no per-category thresholds this is exactly
    ``risk >= threshold``."""
    scores = category_scores(probs)
    risk = enforced_risk(probs, rule.categories)
    own = rule.category_thresholds
    if not own:
        tripped = rule.categories if risk >= rule.threshold else frozenset()
        return WindowVerdict(probs, scores, risk, tripped, risk / rule.threshold)
    joint = rule.categories - own.keys()
    joint_risk = enforced_risk(probs, joint) if joint else 0.0
    hit = {c for c, th in own.items() if scores[c] >= th}
    if joint and joint_risk >= rule.threshold:
        hit |= joint
    level = max([joint_risk / rule.threshold] + [scores[c] / th for c, th in own.items()])
    return WindowVerdict(probs, scores, risk, frozenset(hit), level)


def decide(logits: Sequence[np.ndarray], rule: Rule) -> Decision:
    """The deciding window of a request's windows, and its category scores.

    A window that trips beats one that does not; among equals the higher ``level`` wins and
    the earlier window keeps a tie.
    """
    best: WindowVerdict | None = None
    best_i, best_key = 0, (False, -1.0)
    scores = dict.fromkeys(CATEGORIES[1:], 0.0)
    for i, lg in enumerate(logits):
        v = judge_window(head_probs(lg), rule)
        for c, s in v.scores.items():
            scores[c] = max(scores[c], s)
        if best is None or (bool(v.tripped), v.level) > best_key:
            best, best_i, best_key = v, i, (bool(v.tripped), v.level)
    if best is None:
        raise ValueError("no windows to decide on")
    return Decision(best_i, best, scores)


def argmax_named(head: str, probs: np.ndarray, allowed: Iterable[str] | None = None) -> str:
    """The most probable label of ``head`` among ``allowed`` (default: all but ``none``)."""
    names = HEADS[head]
    allowed_set = set(allowed) if allowed is not None else set(names) - {"none"}
    order = np.argsort(-probs)
    picked: str = next(names[i] for i in order if names[i] in allowed_set)
    return picked


def flagged(category: str, scores: Mapping[str, float], rule: Rule) -> tuple[str, ...]:
    """``category`` first, then every other category over its own threshold."""
    return (category,) + tuple(sorted(
        c for c, th in rule.category_thresholds.items() if c != category and scores[c] >= th))


def span_text(window: Window, logits: np.ndarray, text: str, evidence: str,
              ocr_offset: int) -> str:
    """The words the span head tagged, from the segment where most tags fall.

    A window read with the conversation before the request (``Guard.rewrite(context=...)``)
    holds the earlier turns first; its span is cut to the request's own words, so the
    rewritten turn quotes that turn only (the earlier turns reach the VLM as they were).
    """
    tags = logits[: len(window.encoding.ids), _SLICES["span"]].argmax(-1)
    enc = window.encoding
    hits: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for tag, seq, (a, b) in zip(tags, enc.sequence_ids, enc.offsets, strict=True):
        if tag > 0 and seq is not None and b > a:
            hits[seq].append((a, b))
    seg = 1 if len(hits[1]) >= len(hits[0]) else 0
    if not hits[seg]:
        return ""
    a, b = min(x for x, _ in hits[seg]), max(y for _, y in hits[seg])
    if seg == 1:
        request, off = window.request or text, window.request_offset
        start = len(request) - len(text) if request != text and request.endswith(text) else 0
        lo, hi = max(off + a, start), off + b
        return request[lo:hi] if hi > lo else ""
    evidence = window.evidence or evidence
    return evidence[max(a, ocr_offset if ocr_offset >= 0 else a): b]

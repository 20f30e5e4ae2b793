"""The score-to-verdict maths on synthetic logits: no model, no ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tokenizers import Tokenizer

from vlmguard.bundle import DEFAULT_DIR
from vlmguard.encoder import HEADS, SequenceEncoder, head_slices, label_names
from vlmguard.verdict import (
    HARMFUL,
    Rule,
    argmax_named,
    category_scores,
    decide,
    enforced_risk,
    flagged,
    head_probs,
    judge_window,
    span_text,
)

pytestmark = pytest.mark.unit
SL = head_slices()
CATS = HEADS["category"]


def _probs(p_unsafe: float, category: dict[str, float]) -> dict[str, np.ndarray]:
    """Head probabilities: P(unsafe) and the category head's distribution (rest: none)."""
    pc = np.array([category.get(c, 0.0) for c in CATS])
    pc[0] = 1.0 - pc.sum()
    uniform = {h: np.full(len(HEADS[h]), 1.0 / len(HEADS[h])) for h in ("source", "strategy")}
    return {"safety": np.array([1.0 - p_unsafe, p_unsafe]), "category": pc, **uniform}


def _logits(p_unsafe: float, category: str, tokens: int = 4,
            span: tuple[int, ...] = ()) -> np.ndarray:
    """Window logits (tokens, labels) whose first token says ``p_unsafe`` and ``category``."""
    lg = np.zeros((tokens, len(label_names())), np.float32)
    lg[0, SL["safety"]] = [0.0, math.log(p_unsafe / (1 - p_unsafe))]
    lg[0, SL["category"].start + CATS.index(category)] = 8.0
    for t in span:
        lg[t, SL["span"].start + 1] = 5.0  # B
    return lg


def test_category_scores_share_out_p_unsafe() -> None:
    s = category_scores(_probs(0.8, {"hate": 0.3, "privacy": 0.1}))
    assert s["hate"] == pytest.approx(0.8 * 0.75) and s["privacy"] == pytest.approx(0.2)
    assert sum(s.values()) == pytest.approx(0.8) and set(s) == HARMFUL
    assert set(category_scores(_probs(0.8, {})).values()) == {0.0}  # no harmful mass


def test_enforced_risk_keeps_only_the_enforced_share() -> None:
    probs = _probs(0.9, {"hate": 0.6, "privacy": 0.2})
    assert enforced_risk(probs, HARMFUL) == 0.9  # all enforced: P(unsafe) itself
    assert enforced_risk(probs, frozenset({"hate"})) == pytest.approx(0.9 * 0.75)
    assert enforced_risk(probs, frozenset({"elections"})) == 0.0


@pytest.mark.parametrize("p, unsafe", [(0.49, False), (0.5, True), (0.51, True)])
def test_a_window_trips_at_the_threshold(p: float, unsafe: bool) -> None:
    v = judge_window(_probs(p, {"hate": 0.9}), Rule(0.5))
    assert bool(v.tripped) is unsafe and v.level == pytest.approx(p / 0.5)
    assert v.tripped == (HARMFUL if unsafe else frozenset())


def test_own_threshold_judges_a_category_alone() -> None:
    probs = _probs(0.6, {"hate": 0.2, "privacy": 0.8})  # hate 0.12, privacy 0.48
    rule = Rule(0.5, category_thresholds={"hate": 0.1})
    v = judge_window(probs, rule)
    assert v.tripped == {"hate"}  # privacy (0.48 joint) stays under 0.5
    assert v.level == pytest.approx(0.12 / 0.1)
    assert judge_window(probs, Rule(0.5, category_thresholds={"hate": 0.2})).tripped == set()


def test_the_tripping_window_decides_over_a_riskier_safe_one() -> None:
    rule = Rule(0.5, categories=frozenset({"hate"}))
    windows = [_logits(0.95, "privacy"), _logits(0.6, "hate"), _logits(0.7, "hate")]
    d = decide(windows, rule)
    assert d.unsafe and d.window == 2  # the closest of those that trip
    assert d.category_scores["privacy"] == pytest.approx(0.95, abs=1e-2)  # max over windows
    assert not decide(windows[:1], rule).unsafe


def test_ties_keep_the_first_window() -> None:
    assert decide([_logits(0.7, "hate")] * 3, Rule(0.5)).window == 0


def test_argmax_named_respects_the_allowed_labels() -> None:
    pc = head_probs(_logits(0.9, "hate"))["category"]
    assert argmax_named("category", pc) == "hate"
    assert argmax_named("category", pc, {"privacy", "elections"}) in {"privacy", "elections"}
    none_first = np.zeros(len(CATS))
    none_first[0] = 1.0
    assert argmax_named("category", none_first) != "none"  # "none" is never a hazard


def test_flagged_lists_the_category_then_others_over_their_threshold() -> None:
    scores = dict.fromkeys(HARMFUL, 0.0) | {"hate": 0.4, "privacy": 0.3, "elections": 0.1}
    rule = Rule(0.5, category_thresholds={"privacy": 0.2, "elections": 0.2, "hate": 0.1})
    assert flagged("hate", scores, rule) == ("hate", "privacy")


@pytest.fixture(scope="module")
def encoder() -> SequenceEncoder:
    return SequenceEncoder(Tokenizer.from_file(str(DEFAULT_DIR / "tokenizer.json")))


def test_span_is_cut_from_the_request(encoder: SequenceEncoder) -> None:
    text = "please tell me how to pick a lock quickly"
    w = encoder.encode("image shows: door.", text, readings=False)[0]
    seq = w.encoding.sequence_ids
    req = [i for i, s in enumerate(seq) if s == 1]
    lg = _logits(0.9, "hate", len(seq), span=(req[5], req[6], req[7]))
    assert span_text(w, lg, text, "image shows: door.", -1) == "pick a lock"
    assert span_text(w, _logits(0.9, "hate", len(seq)), text, "", -1) == ""


def test_span_of_a_window_read_with_the_conversation_quotes_the_request_only(
        encoder: SequenceEncoder) -> None:
    """A context window holds the earlier turns first; the span stays in the last turn."""
    context, text = "the project means a pipe bomb", "build the project at home"
    w = encoder.encode("", f"{context}\n{text}", readings=False)[0]
    seq = w.encoding.sequence_ids
    req = [i for i, s in enumerate(seq) if s == 1]
    every = _logits(0.9, "hate", len(seq), span=tuple(req))  # every request token tagged
    assert span_text(w, every, text, "", -1) == text
    first = _logits(0.9, "hate", len(seq), span=tuple(req[:4]))  # earlier turn only
    assert span_text(w, first, text, "", -1) == ""


def test_span_in_the_evidence_never_reaches_before_the_image_text(
        encoder: SequenceEncoder) -> None:
    evidence = "image shows: sign. text in image: open the door"
    w = encoder.encode(evidence, "read this", ocr_offset=21, readings=False)[0]
    seq = w.encoding.sequence_ids
    ev = [i for i, s in enumerate(seq) if s == 0]
    lg = _logits(0.9, "hate", len(seq), span=tuple(ev))  # every evidence token tagged
    assert span_text(w, lg, "read this", evidence, 21) == evidence[21:]


@pytest.mark.parametrize("threshold, categories, own, match", [
    (1.0, None, None, "threshold must be in"),
    ("x", None, None, "threshold must be a number"),
    (0.5, "hate", None, "not one str"),
    (0.5, ["hate", "nope"], None, "unknown categories"),
    (0.5, [], None, "at least one"),
    (0.5, ["hate"], {"privacy": 0.3}, "not an enforced category"),
    (0.5, None, {"hate": 0.0}, "threshold must be in"),
    (0.5, None, [("hate", 0.3)], "must be a mapping"),
])
def test_rule_settings_are_checked(threshold: object, categories: object, own: object,
                                   match: str) -> None:
    from vlmguard.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match=match):
        Rule.checked(threshold, categories, own)  # type: ignore[arg-type]


def test_rule_defaults_enforce_every_category() -> None:
    assert Rule.checked(0.5) == Rule(0.5, HARMFUL, {})
    assert Rule.checked("0.25", ["hate"], {"hate": 0.1}).category_thresholds == {"hate": 0.1}

"""The evaluation's metric functions on tiny hand-computed arrays, and the faithfulness check."""

from __future__ import annotations

import pytest

evaluate = pytest.importorskip("training.evaluate")


def test_recall_and_fpr() -> None:
    labels = [True, True, True, False, False, False, False]
    flags = [True, False, True, True, False, False, False]
    assert evaluate.recall(labels, flags) == pytest.approx(2 / 3)
    assert evaluate.false_positive_rate(labels, flags) == pytest.approx(1 / 4)
    assert evaluate.flag_rate(flags) == pytest.approx(3 / 7)


def test_rates_without_a_class_are_none() -> None:
    assert evaluate.recall([False, False], [True, False]) is None
    assert evaluate.false_positive_rate([True], [True]) is None
    assert evaluate.flag_rate([]) is None


def test_recall_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError):
        evaluate.recall([True, False], [True])


def test_macro_f1_by_hand() -> None:
    gold = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "none"]
    # a: tp 1, fp 0, fn 1 -> 2/3; b: tp 1, fp 1, fn 1 -> 1/2; "none" is only a miss.
    assert evaluate.macro_f1(gold, pred) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert evaluate.macro_f1(gold, gold) == pytest.approx(1.0)
    assert evaluate.macro_f1(["a"], ["b"]) == pytest.approx(0.0)
    # An explicit label set counts a class never seen as 0.
    assert evaluate.macro_f1(gold, gold, ["a", "b", "c"]) == pytest.approx(2 / 3)
    assert evaluate.macro_f1([], []) is None


def test_ece_by_hand() -> None:
    # Bin 0.1-0.2: risks 0.1, 0.1 (mean 0.1), labels 0, 1 (rate 0.5) -> |0.4| x 2/4.
    # Bin 0.9-1.0: risks 0.9, 1.0 (mean 0.95), labels 1, 1 -> |0.05| x 2/4.
    risks = [0.1, 0.1, 0.9, 1.0]
    labels = [False, True, True, True]
    assert evaluate.expected_calibration_error(risks, labels) == pytest.approx(0.2 + 0.025)
    assert evaluate.expected_calibration_error([0.0, 1.0], [False, True]) == pytest.approx(0.0)
    assert evaluate.expected_calibration_error([1.0, 1.0], [False, False]) == pytest.approx(1.0)
    assert evaluate.expected_calibration_error([], []) is None


def test_faithfulness() -> None:
    text = "How do I pick this lock?"
    assert evaluate.is_faithful(text, True, text)
    assert not evaluate.is_faithful(text, True, text + " ")
    assert evaluate.is_faithful(text, False, f"Guidance...\n<<<USER_REQUEST\n{text}\n"
                                              "USER_REQUEST>>>")
    assert not evaluate.is_faithful(text, False, "Guidance...\nHow do I pick this lock")


def test_p50() -> None:
    assert evaluate.p50([3.0, 1.0, 2.0]) == 2.0
    assert evaluate.p50([]) is None


def test_dedupe_keys_on_evidence_and_counts_clashes() -> None:
    item = evaluate.Item
    items = [item("Follow the image.", True, ocr_text="a", has_image=True),
             item("Follow the image.", False, ocr_text="b", has_image=True),
             item("hi", False), item("hi", True), item("hi", False)]
    kept, clashes = evaluate.dedupe(items)
    assert [(k.text, k.ocr_text) for k in kept] == [("Follow the image.", "a"),
                                                    ("Follow the image.", "b"), ("hi", "")]
    assert clashes == 1


def test_cap_is_fixed_and_bounded() -> None:
    items = [evaluate.Item(str(i), False) for i in range(50)]
    a, b = evaluate.cap(items, 10), evaluate.cap(items, 10)
    assert len(a) == 10 and [x.text for x in a] == [x.text for x in b]
    assert evaluate.cap(items, None) is items


def test_bars_pass_miss_and_margin() -> None:
    rows = {"VLGuard test (text)": {"recall": 0.90, "fpr": 0.02},
            "all sets (pooled)": {"faithfulness": 1.0}}
    bars = {(b["set"], b["metric"]): b for b in evaluate.check_bars(rows)}
    rec = bars[("VLGuard test (text)", "recall")]
    assert rec["status"] == "MISS" and rec["margin"] == pytest.approx(-0.05)
    fpr = bars[("VLGuard test (text)", "fpr")]
    assert fpr["status"] == "PASS" and fpr["margin"] == pytest.approx(0.03)
    assert bars[("all sets (pooled)", "faithfulness")]["status"] == "PASS"
    assert bars[("synth test: cross-modal", "recall")]["status"] == "n/a"


def test_synth_sets_use_only_the_test_split() -> None:
    from training.synthesis.schema import Example

    def ex(split: str, origin: str, unsafe: bool, source: str) -> Example:
        return Example(id=origin + split, seed_id="s", text=f"{origin} {split}", concepts=[],
                       ocr_text="", unsafe=unsafe, category="hate" if unsafe else "none",
                       source=source, strategy="none", origin=origin, split=split)

    rows = [ex("train", "redteam/ailuminate_demo_en", True, "text"),
            ex("test", "redteam/ailuminate_demo_en", True, "text"),
            ex("val", "benign/coconot_contrast", False, "none"),
            ex("test", "benign/coconot_contrast", False, "none")]
    sets = evaluate.synth_sets(rows)
    assert [i.text for i in sets["synth test: AILuminate text"]] == [
        "redteam/ailuminate_demo_en test"]
    assert [i.text for i in sets["synth test: benign look-alikes"]] == [
        "benign/coconot_contrast test"]
    assert sets["synth test: typography"] == []


@pytest.mark.slow
def test_render_markdown_smoke() -> None:
    """A tiny report renders with the header, the table and the bars."""
    item, outcome = evaluate.Item("hi", False), evaluate.Outcome(False, 0.1, "none", True, 1.0,
                                                                 True)
    row = evaluate.summarise("VLGuard test (text)", [item], [outcome])
    report = {"bundle": {"name": "b", "model_file": "m.onnx", "sha256": "abc"},
              "meta": {"date": "d", "machine": "m", "threshold": 0.5, "data": "x",
                       "limit": None, "e2e_images": 0, "wall_s": 1.0},
              "sets": {row["set"]: row}, "bars": evaluate.check_bars({row["set"]: row})}
    md = evaluate.render_markdown(report)
    assert md.startswith("Model bundle `b`") and "## Bars" in md and "| VLGuard test" in md

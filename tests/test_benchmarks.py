"""The latency benchmark's inputs are what their names say."""

from __future__ import annotations

from benchmarks.latency import JUDGE_TOKENS, NO_IMAGE, text_of_tokens
from vlmguard import Guard


def test_judge_length_inputs_fill_their_windows(guard: Guard) -> None:
    for n in JUDGE_TOKENS:
        windows = guard.encoder.encode(NO_IMAGE, text_of_tokens(guard, n))
        assert len(windows) == 1 and len(windows[0].encoding.ids) == n


def test_vision_shapes_times_every_model_on_the_cpu(capsys) -> None:
    """One row per vision model, each saying which provider really ran it."""
    from benchmarks import vision_shapes

    assert vision_shapes.main(["--calls", "1", "--new", "2"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| CPU |")]
    assert [r.split(" | ")[1] for r in rows] == ["tagger", "ocr_det", "ocr_rec"]
    assert all(" | CPUExecutionProvider | " in r for r in rows)

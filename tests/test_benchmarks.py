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


def test_large_photos_are_past_the_zoom_size_and_so_zoomed(guard: Guard) -> None:
    """The benchmark's large set times the OCR's zoom pass, so its photos must be past
    ZOOM_MIN_SIDE (at LARGE_SIDE on the long side) and zoom when the guard reads them."""
    import io

    import pytest
    from PIL import Image

    from benchmarks._inputs import LARGE_SIDE, large_photo_set
    from vlmguard.vision import ZOOM_MIN_SIDE

    photos = large_photo_set(2)
    if not photos:
        pytest.skip("no development photos on this machine (../shared/data/photos)")
    sizes = [Image.open(io.BytesIO(r.image)).size for r in photos]
    assert all(max(s) == LARGE_SIDE > ZOOM_MIN_SIDE for s in sizes)
    assert guard.ocr is not None
    runs = guard.ocr.zoom_runs
    guard.rewrite(photos[0].image, photos[0].text)
    assert guard.ocr.zoom_runs == runs + 1

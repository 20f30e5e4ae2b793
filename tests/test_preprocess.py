"""resize_normalize: the C path matches the NumPy reference, and the reference matches OpenCV."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from vlmguard import preprocess
from vlmguard.preprocess import resize_normalize, resize_normalize_numpy

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TARGETS = [(224, 224), (48, 320), (320, 320)]

needs_native = pytest.mark.skipif(
    not preprocess.NATIVE,
    reason="vlmguard._native is not built/importable (or VLMGUARD_DISABLE_NATIVE is set); "
    "build it with `pip install --no-deps --force-reinstall .`",
)


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    r = (127 + 127 * np.sin(x / 7.0)).astype(np.uint8)
    g = (127 + 127 * np.cos(y / 5.0)).astype(np.uint8)
    b = ((x + y) % 256).astype(np.uint8)
    return np.stack([r, g, b], axis=2)


def _levels(a: np.ndarray, b: np.ndarray, std: tuple[float, ...] = STD) -> float:
    """Largest difference in uint8 levels between two normalised CHW tensors."""
    return float((np.abs(a - b) * np.asarray(std, np.float32)[:, None, None] * 255).max())


def _native(
    rgb: np.ndarray,
    h: int,
    w: int,
    mean: tuple[float, ...] = MEAN,
    std: tuple[float, ...] = STD,
) -> np.ndarray:
    return resize_normalize(rgb, h, w, mean, std)


SHAPES = [
    (480, 640),  # k = 2 into 224x224
    (1080, 1920),
    (1, 1),
    (1, 4000),
    (4000, 1),
    (37, 53),  # odd, upscale
    (333, 999),  # odd, k >= 2 on some targets
    (225, 225),  # just above the target: mild downscale, no reduction
    (448, 449),  # exactly 2x: box reduction with k = 2
    (3001, 701),  # big downscale, k >= 2 with trailing partial blocks dropped
    (17, 3001),
]


@needs_native
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"to{t[0]}x{t[1]}")
def test_native_matches_numpy(shape: tuple[int, int], target: tuple[int, int]) -> None:
    rgb = _img(*shape, seed=shape[0] * 7 + shape[1])
    got = _native(rgb, *target)
    ref = resize_normalize_numpy(rgb, *target, MEAN, STD)
    assert got.shape == ref.shape == (3, *target)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert _levels(got, ref) <= 1.0 + 1e-3


@needs_native
def test_native_matches_numpy_random_sizes() -> None:
    rng = np.random.default_rng(1234)
    for i in range(25):
        h, w = (int(v) for v in rng.integers(1, 1200, size=2))
        th, tw = (int(v) for v in rng.integers(1, 400, size=2))
        rgb = _img(h, w, seed=i)
        got = _native(rgb, th, tw)
        ref = resize_normalize_numpy(rgb, th, tw, MEAN, STD)
        assert _levels(got, ref) <= 1.0 + 1e-3, (h, w, th, tw)


@needs_native
def test_native_grey_and_rgba_converted_inputs() -> None:
    from vlmguard.image import load_image

    grey = _smooth(301, 517)[:, :, 0]
    rgba = np.concatenate([_smooth(301, 517), _img(301, 517)[:, :, :1]], axis=2)
    for arr in (grey, rgba):
        rgb = load_image(arr)
        assert rgb is not None
        for target in TARGETS:
            got = _native(rgb, *target)
            ref = resize_normalize_numpy(rgb, *target, MEAN, STD)
            assert _levels(got, ref) <= 1.0 + 1e-3


@needs_native
def test_native_non_contiguous_input_and_other_normalisation() -> None:
    rgb = _img(400, 600)[::-1, ::2]  # a flipped, strided view
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    got = _native(rgb, 64, 96, mean, std)
    ref = resize_normalize_numpy(np.ascontiguousarray(rgb), 64, 96, mean, std)
    assert _levels(got, ref, std) <= 1.0 + 1e-3


@needs_native
def test_native_constant_image_is_exact() -> None:
    rgb = np.full((999, 1301, 3), (10, 128, 250), dtype=np.uint8)
    got = _native(rgb, 224, 224)
    expected = (np.array([10, 128, 250]) / 255.0 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(got, expected[:, None, None].astype(np.float32), atol=1e-5)


@needs_native
def test_native_validates_the_buffer() -> None:
    from vlmguard import _native  # type: ignore[attr-defined]

    good = _img(8, 8)
    with pytest.raises(ValueError, match="uint8"):
        _native.resize_normalize(good.astype(np.float32), 4, 4, MEAN, STD)
    with pytest.raises(ValueError, match="HxWx3"):
        _native.resize_normalize(np.zeros((8, 8, 4), np.uint8), 4, 4, MEAN, STD)
    with pytest.raises(ValueError, match="3-D"):
        _native.resize_normalize(np.zeros((8, 8), np.uint8), 4, 4, MEAN, STD)
    with pytest.raises(ValueError, match="contiguous"):
        _native.resize_normalize(good[:, ::2], 4, 4, MEAN, STD)
    with pytest.raises(ValueError, match="empty"):
        _native.resize_normalize(np.zeros((0, 8, 3), np.uint8), 4, 4, MEAN, STD)
    with pytest.raises(ValueError, match="target size"):
        _native.resize_normalize(good, 0, 4, MEAN, STD)
    with pytest.raises(ValueError, match="std"):
        _native.resize_normalize(good, 4, 4, MEAN, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="mean"):
        _native.resize_normalize(good, 4, 4, (0.5, 0.5), STD)
    with pytest.raises(ValueError, match="contiguous"):
        _native.resize_normalize(12, 4, 4, MEAN, STD)
    out = _native.resize_normalize(good, 4, 5, MEAN, STD)
    assert len(out) == 3 * 4 * 5 * 4


def test_dispatcher_validates_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        resize_normalize(np.zeros((4, 4, 3), np.float32), 2, 2, MEAN, STD)
    with pytest.raises(ValueError, match="HxWx3"):
        resize_normalize(np.zeros((4, 4, 4), np.uint8), 2, 2, MEAN, STD)
    with pytest.raises(ValueError, match="empty"):
        resize_normalize(np.zeros((0, 4, 3), np.uint8), 2, 2, MEAN, STD)
    with pytest.raises(ValueError, match="target size"):
        resize_normalize(_img(4, 4), 2, 0, MEAN, STD)
    with pytest.raises(ValueError, match="non-zero"):
        resize_normalize(_img(4, 4), 2, 2, MEAN, (0.0, 1.0, 1.0))


BAD_ARGS = {  # s36 audit L8: the C path raised bare ValueError/TypeError for some of these,
    # the NumPy path accepted them and returned NaN or inf (or raised AttributeError)
    "height 70000": (70000, 4, MEAN, STD), "height 2.5": (2.5, 4, MEAN, STD),
    "height True": (True, 4, MEAN, STD), "width '4'": (4, "4", MEAN, STD),
    "mean NaN": (4, 4, (float("nan"),) * 3, STD), "mean 'abc'": (4, 4, "abc", STD),
    "std inf": (4, 4, MEAN, (float("inf"),) * 3), "std 1e-46": (4, 4, MEAN, (1e-46,) * 3),
    "std tiny": (4, 4, MEAN, (1e-40,) * 3), "mean 1e39": (4, 4, (1e39,) * 3, STD),
}


@pytest.mark.parametrize("fn", [resize_normalize, resize_normalize_numpy],
                         ids=["dispatcher", "numpy"])
@pytest.mark.parametrize("name", BAD_ARGS)
def test_both_paths_refuse_the_same_bad_arguments(fn, name: str) -> None:
    from vlmguard.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        fn(_img(8, 8), *BAD_ARGS[name])
    with pytest.raises(InvalidInputError):  # not an AttributeError
        fn([[[1, 2, 3]]], 4, 4, MEAN, STD)
    out = fn(_img(8, 8), np.int64(4), 65536 if name == "height 70000" else 5, MEAN, STD)
    assert np.isfinite(out).all()


def test_disable_native_env_forces_numpy() -> None:
    env = dict(os.environ, VLMGUARD_DISABLE_NATIVE="1")
    code = "import vlmguard.preprocess as p; print(p.NATIVE, p._native)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "None"]


def test_numpy_reference_box_reduction_definition() -> None:
    # an exact 4x downscale with k = 4: the bilinear step then samples block means exactly
    rgb = _img(64, 96)
    got = resize_normalize_numpy(rgb, 16, 24, (0, 0, 0), (1, 1, 1)) * 255
    blocks = rgb.reshape(16, 4, 24, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(got - blocks.transpose(2, 0, 1)).max() < 1e-3


@pytest.mark.parametrize(
    ("shape", "target"),
    [((37, 53), (224, 224)), ((300, 400), (224, 224)), ((120, 90), (48, 320)), ((1, 7), (5, 9))],
)
def test_numpy_reference_matches_opencv_inter_linear(
    shape: tuple[int, int], target: tuple[int, int]
) -> None:
    cv2 = pytest.importorskip("cv2", reason="OpenCV is only a test-time cross-check")
    rgb = _smooth(*shape)
    ref = resize_normalize_numpy(rgb, *target, (0, 0, 0), (1, 1, 1)) * 255
    cv = cv2.resize(rgb, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
    # OpenCV rounds to uint8 and uses 11-bit fixed-point weights: allow 1 level
    assert np.abs(ref - cv.transpose(2, 0, 1).astype(np.float32)).max() <= 1.0 + 1e-3

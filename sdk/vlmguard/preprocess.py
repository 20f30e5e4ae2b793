"""Fused resize → normalise → HWC→CHW for the image models, native (C) or NumPy.

Both paths implement one definition, so they agree within one uint8 level:
1. if the image is at least 2x larger than the target on both axes, average k×k blocks
   first (k = floor of the smaller ratio; a trailing partial block is dropped), an
   anti-aliasing step like Pillow's ``reduce``;
2. bilinear resize with half-pixel centres (OpenCV ``INTER_LINEAR`` semantics, edges clamped);
3. ``(value / 255 - mean) / std`` per channel, written channel-first as float32.

``VLMGUARD_DISABLE_NATIVE=1`` forces the NumPy path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .errors import InvalidInputError


def _load_native() -> ModuleType | None:
    """The C extension, or None when it is not built or ``VLMGUARD_DISABLE_NATIVE`` is set:
    it is optional at run time; the NumPy path gives the same tensor."""
    if os.environ.get("VLMGUARD_DISABLE_NATIVE", "") in ("1", "true", "yes"):
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native


_native = _load_native()

NATIVE: bool = _native is not None
MAX_SIDE = 65536
"""Largest target height or width :func:`resize_normalize` makes."""


def _box_reduce(img: np.ndarray, k: int) -> np.ndarray:
    h, w = (img.shape[0] // k) * k, (img.shape[1] // k) * k
    # Integer sums are exact (as in the C path); a float32 running mean drifts by dozens of
    # levels when a block holds tens of thousands of pixels.
    blocks = img[:h, :w].reshape(h // k, k, w // k, k, img.shape[2])
    sums = blocks.sum(axis=(1, 3), dtype=np.int64)
    out: np.ndarray = (sums / float(k * k)).astype(np.float32)
    return out


def _bilinear_coords(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = src / dst
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, src - 1)
    frac = (pos - lo).astype(np.float32)
    return lo, hi, frac


def _checked(rgb: Any, height: Any, width: Any, mean: Any, std: Any
             ) -> tuple[np.ndarray, int, int, tuple[float, ...], tuple[float, ...]]:
    """The arguments of :func:`resize_normalize` after the checks both paths share, or
    :class:`InvalidInputError`: the C path used to raise bare ValueError/TypeError for some
    of these and the NumPy path to accept them (a 2.5-pixel side, NaN mean, 1e-46 std) and
    return NaN or inf."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise InvalidInputError(
            f"expected an HxWx3 uint8 RGB array, got {type(rgb).__name__} "
            f"{getattr(rgb, 'dtype', '')} {getattr(rgb, 'shape', '')}"
        )
    if rgb.shape[2] != 3:
        raise InvalidInputError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InvalidInputError(
            f"the image is empty (shape {rgb.shape}); it needs at least 1x1 pixel")
    sides = []
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) \
                or not 1 <= v <= MAX_SIDE:
            raise InvalidInputError(f"target size: {name} must be a whole number from 1 to "
                                    f"{MAX_SIDE}, not {v!r}")
        sides.append(int(v))
    try:
        mean_t = tuple(float(v) for v in mean)
        std_t = tuple(float(v) for v in std)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"mean and std must be sequences of numbers: {exc}") from exc
    if len(mean_t) != 3 or len(std_t) != 3:
        raise InvalidInputError(
            f"mean and std need 3 values (R, G, B), got {mean_t} and {std_t}")
    # as both paths compute, in float32 (where 1e-46 is zero): every output value finite
    with np.errstate(all="ignore"):
        m = np.asarray(mean_t, np.float32) * np.float32(255.0)
        s = np.asarray(std_t, np.float32) * np.float32(255.0)
        span = np.maximum(np.abs(m), np.abs(np.float32(255.0) - m)) / np.abs(s)
    if not (np.isfinite(m).all() and np.isfinite(s).all() and (s != 0).all()
            and np.isfinite(span).all()):
        raise InvalidInputError(f"mean and std must be finite and std non-zero (every output "
                                f"finite in float32), got {mean_t} and {std_t}")
    return rgb, sides[0], sides[1], mean_t, std_t


def _numpy(rgb: np.ndarray, height: int, width: int, mean: tuple[float, ...],
           std: tuple[float, ...]) -> np.ndarray:
    k = min(rgb.shape[0] // height, rgb.shape[1] // width)
    img = _box_reduce(rgb, k) if k >= 2 else rgb.astype(np.float32)
    y0, y1, fy = _bilinear_coords(img.shape[0], height)
    x0, x1, fx = _bilinear_coords(img.shape[1], width)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    m = np.asarray(mean, dtype=np.float32) * 255.0
    s = np.asarray(std, dtype=np.float32) * 255.0
    out = (out - m) / s
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def resize_normalize_numpy(
    rgb: np.ndarray, height: int, width: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Reference implementation; see the module docstring for the exact definition. It takes
    and refuses the same arguments as :func:`resize_normalize`."""
    return _numpy(*_checked(rgb, height, width, mean, std))


def resize_normalize(
    rgb: np.ndarray, height: int, width: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Resize an HxWx3 uint8 RGB array to ``(3, height, width)`` float32, normalised.

    Uses the C extension when it is importable (same output within one uint8 level). Both
    paths refuse the same arguments with :class:`InvalidInputError`: anything but an HxWx3
    uint8 array, a target side that is not a whole number from 1 to :data:`MAX_SIDE`, a
    mean or std that is not three finite numbers, or a std so small (zero in float32) that
    the output would not be finite.
    """
    rgb, height, width, mean_t, std_t = _checked(rgb, height, width, mean, std)
    if _native is not None:
        buf = _native.resize_normalize(np.ascontiguousarray(rgb), height, width, mean_t, std_t)
        return np.frombuffer(buf, dtype=np.float32).reshape(3, height, width)
    return _numpy(rgb, height, width, mean_t, std_t)

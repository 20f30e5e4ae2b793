"""Benchmark the image preprocessing paths (resize -> normalise -> CHW float32).

    python -m benchmarks.preprocess [--repeat N] [--json out.json]

Times, per input size and model target: the native C path (``vlmguard._native``), the NumPy
fallback, PIL ``resize(BILINEAR)`` + NumPy normalise/transpose, and OpenCV
(``cv2.resize`` + ``cv2.dnn.blobFromImage``) when cv2 is installed. OpenCV is timed twice:
``INTER_LINEAR`` samples only 2x2 pixels per output pixel however large the downscale (it
aliases, and reads a fraction of the image), and ``INTER_AREA`` is its anti-aliased
counterpart, the fair comparison for our box-reduce + bilinear definition.

The memory-bandwidth bound is the time to read the whole input and write the output at the
memcpy bandwidth measured here (a large ``np.copyto``): no anti-aliased path can beat it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

if __name__ == "__main__" and not __package__:  # run as a file: run again as the module
    _root = Path(__file__).resolve().parents[1]
    _path = os.pathsep.join(p for p in (str(_root), os.environ.get("PYTHONPATH")) if p)
    sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.preprocess", *sys.argv[1:]],
                             env={**os.environ, "PYTHONPATH": _path}))

from vlmguard import preprocess  # noqa: E402

try:
    import cv2
except ImportError:
    cv2 = None

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUTS = [(480, 640), (1080, 1920), (3000, 4000)]
TARGETS = {"tagger 224x224": (224, 224), "OCR det 320x320": (320, 320)}


def _image(h: int, w: int) -> np.ndarray:
    """A photo-like test image: smooth gradients plus noise (content does not change timing)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=2)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _time(fn: Callable[[], object], repeat: int, budget_s: float = 3.0) -> float:
    """Median wall time in ms over ``repeat`` runs (fewer for very slow paths)."""
    fn()  # warm-up: page in, caches, lazy init
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times) * 1e3


def _copy_bandwidth() -> float:
    """Bytes per second moved (read + written) by a large np.copyto."""
    src = np.ones(256 << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / min(times)


def _native(native: ModuleType, rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    buf = native.resize_normalize(rgb, h, w, MEAN, STD)
    return np.frombuffer(buf, np.float32).reshape(3, h, w)


def _pil(im: Image.Image, h: int, w: int) -> np.ndarray:
    arr = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    arr = (arr / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _opencv(rgb: np.ndarray, h: int, w: int, interpolation: int) -> np.ndarray:
    assert cv2 is not None
    small = cv2.resize(rgb, (w, h), interpolation=interpolation)
    blob = cv2.dnn.blobFromImage(small, 1.0 / 255.0, mean=tuple(m * 255.0 for m in MEAN))[0]
    blob /= np.asarray(STD, np.float32)[:, None, None]
    return blob


def run(repeat: int) -> tuple[list[dict[str, object]], dict[str, object]]:
    bandwidth = _copy_bandwidth()
    env: dict[str, object] = {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "opencv": cv2.__version__ if cv2 is not None else None,
        "opencv_threads": cv2.getNumThreads() if cv2 is not None else None,
        "native": preprocess.NATIVE,
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 2),
    }
    native = preprocess._native
    rows: list[dict[str, object]] = []
    for ih, iw in INPUTS:
        rgb = _image(ih, iw)
        pil_im = Image.fromarray(rgb)
        for name, (h, w) in TARGETS.items():
            ms: dict[str, float | None] = {"native": None}
            if native is not None:
                ms["native"] = _time(partial(_native, native, rgb, h, w), repeat)
            numpy_fn = partial(preprocess.resize_normalize_numpy, rgb, h, w, MEAN, STD)
            ms["numpy"] = _time(numpy_fn, repeat)
            ms["pil"] = _time(partial(_pil, pil_im, h, w), repeat)
            if cv2 is not None:
                linear = partial(_opencv, rgb, h, w, cv2.INTER_LINEAR)
                ms["opencv_linear"] = _time(linear, repeat)
                ms["opencv_area"] = _time(partial(_opencv, rgb, h, w, cv2.INTER_AREA), repeat)
            moved = rgb.nbytes + 3 * h * w * 4
            rows.append(
                {
                    "input": f"{iw}x{ih}",
                    "target": name,
                    "ms": ms,
                    "bandwidth_bound_ms": moved / bandwidth * 1e3,
                }
            )
    return rows, env


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def markdown(rows: list[dict[str, object]], env: dict[str, object]) -> str:
    methods = ["native", "numpy", "pil", "opencv_linear", "opencv_area"]
    labels = {
        "native": "native C",
        "numpy": "NumPy",
        "pil": "PIL+NumPy",
        "opencv_linear": "cv2 LINEAR+blob",
        "opencv_area": "cv2 AREA+blob",
    }
    present = [m for m in methods if any(m in r["ms"] for r in rows)]  # type: ignore[operator]
    head = ["input", "target", *(f"{labels[m]} ms" for m in present), "bw bound ms"]
    head += [f"{labels[m]} / native" for m in present if m != "native"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ms: dict[str, float | None] = r["ms"]  # type: ignore[assignment]
        nat = ms.get("native")
        cells = [str(r["input"]), str(r["target"]), *(_fmt(ms.get(m)) for m in present)]
        cells.append(_fmt(r["bandwidth_bound_ms"]))  # type: ignore[arg-type]
        for m in present:
            if m == "native":
                continue
            v = ms.get(m)
            cells.append("n/a" if (v is None or not nat) else f"{v / nat:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    info = ", ".join(f"{k}={v}" for k, v in env.items())
    return "\n".join(lines) + f"\n\n{info}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per case (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)
    if not preprocess.NATIVE:
        print("note: vlmguard._native is unavailable; only the fallbacks are timed")
    if cv2 is None:
        print("note: OpenCV (cv2) is not installed; skipping the OpenCV columns")
    rows, env = run(max(1, args.repeat))
    print(markdown(rows, env))
    if args.json is not None:
        args.json.write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

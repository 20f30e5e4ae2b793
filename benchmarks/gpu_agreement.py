"""CUDA (FP16 judge) against CPU (INT8 judge) on the same requests: wall time and verdicts.

    python -m benchmarks.gpu_agreement BUNDLE [--photos N] [--photos-dir DIR] [--judge gpu|cpu]
        [--vision gpu|cpu]

BUNDLE must hold ``model.fp16.onnx`` (``export/to_onnx.py --fp16-in-bundle``). Prints which
providers each session really runs (TensorRT is asked for first, as the guard's default
order does), then per set: p50/p95 wall ms on each guard, verdict agreement, the largest
risk difference and whether OCR read the same text. The vision models run on the providers
given by ``--vision`` (default: the GPU, to time them there); ``--judge cpu`` keeps the
judge on the CPU, to time the vision models' GPU path alone (on a GPU they run at fixed input
shapes, :class:`vlmguard.vision.FixedShapes`, planned at load: the load time is printed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks._inputs import PHOTOS, photo_set, text_set, typographic_set
from benchmarks.latency import WARMUP, timed_requests
from vlmguard import Guard

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--photos-dir", type=Path, default=PHOTOS)
    ap.add_argument("--vision", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--judge", choices=("gpu", "cpu"), default="gpu")
    args = ap.parse_args(argv)
    print("onnxruntime", ort.__version__, ort.get_available_providers(), flush=True)
    default = Guard.from_pretrained(args.bundle)
    print("default order: judge", default.providers, default.model_file, flush=True)
    vision = CUDA if args.vision == "gpu" else ["CPUExecutionProvider"]
    judge = CUDA if args.judge == "gpu" else ["CPUExecutionProvider"]
    t = time.perf_counter()
    guards = {"cuda": Guard.from_pretrained(args.bundle, providers=judge, vision_providers=vision)}
    print(f"cuda guard loaded in {time.perf_counter() - t:.2f} s", flush=True)
    guards["cpu"] = Guard.from_pretrained(args.bundle, providers=["CPUExecutionProvider"])
    for tag, g in guards.items():
        print(tag, "judge", g.providers, g.model_file, "vision", g.info()["vision_providers"])
    sets = {"text": text_set(30), "photos": photo_set(args.photos, args.photos_dir),
            "typographic": typographic_set(2)}
    for name, reqs in sets.items():
        out = {}
        for tag, g in guards.items():
            for r in reqs[:WARMUP]:
                g.rewrite(r.image, r.text)
            times, out[tag] = timed_requests(g, reqs)
            print(f"{name} {tag}: n={len(reqs)} wall p50 {np.percentile(times, 50):.1f} ms "
                  f"p95 {np.percentile(times, 95):.1f} ms", flush=True)
        pairs = list(zip(out["cuda"], out["cpu"], strict=True))
        delta = np.abs([x.risk - y.risk for x, y in pairs])
        same = np.mean([x.safe == y.safe for x, y in pairs])
        ocr = np.mean([x.evidence.ocr_text == y.evidence.ocr_text for x, y in pairs])
        print(f"{name}: verdict agreement {same:.3f}, |risk delta| mean {delta.mean():.4f} "
              f"max {delta.max():.4f}, OCR text identical {ocr:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Each vision model alone, at one repeated input shape and at a new shape every call.

    python -m benchmarks.vision_shapes [--gpu] [--cudnn HEURISTIC,DEFAULT,EXHAUSTIVE] [--calls 20]
        [--cuda-options KEY=VALUE;KEY=VALUE|KEY=VALUE ...]

Why: on an H100, ONNX Runtime's CUDA provider took over half a second per real photo for the
vision models (``benchmarks/RESULTS.md``), so the guard keeps them on the CPU. Real traffic
reaches OCR detection at each photo's aspect ratio and recognition at each line's width.
Each new shape is timed at its first call and again: if first calls are slow and repeats
fast, the cost is per-shape planning (padding inputs to a few fixed shapes would cure it);
if both are slow, the provider is. ``--gpu`` times CUDA once per cuDNN search mode in
``--cudnn`` (and, with ``--cuda-options``, once more per set of extra CUDA provider options,
``|``-separated sets of ``;``-separated ``key=value``); without it, the CPU.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from vlmguard.bundle import DEFAULT_DIR
from vlmguard.runtime import ProviderSpec
from vlmguard.vision import OCR, Tagger

Shape = tuple[int, ...]


def sessions(providers: list[ProviderSpec]) -> dict[str, tuple[Any, Shape, list[Shape]]]:
    """Per model: its ONNX Runtime session, one fixed input shape, and new shapes to try."""
    vision = DEFAULT_DIR / "vision"
    tagger = Tagger(vision, providers=providers)
    ocr = OCR(vision, providers=providers)
    det_new: list[Shape] = [(1, 3, h, w) for h in range(192, 672, 32) for w in (480, 544, 608, 640)]
    rec_new: list[Shape] = [(8, 3, 48, w) for w in range(352, 1600, 32)]
    return {"tagger": (tagger.session, (1, 3, 224, 224), []),
            "ocr_det": (ocr.det, (1, 3, 480, 640), det_new),
            "ocr_rec": (ocr.rec, (8, 3, 48, 320), rec_new)}


def timed(session: Any, shapes: list[Shape], rng: np.random.Generator) -> list[float]:
    """Wall ms of one call per shape, in order, on random input."""
    name = session.get_inputs()[0].name
    out = []
    for shape in shapes:
        x = rng.standard_normal(shape, dtype=np.float32)
        t0 = time.perf_counter()
        session.run(None, {name: x})
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="time the CUDA provider")
    ap.add_argument("--cudnn", default="HEURISTIC,DEFAULT,EXHAUSTIVE",
                    help="cuDNN convolution search modes to time with --gpu")
    ap.add_argument("--cuda-options", default="",
                    help="extra CUDA provider option sets to time with --gpu, e.g. "
                    "'arena_extend_strategy=kSameAsRequested|cudnn_conv_use_max_workspace=0'")
    ap.add_argument("--calls", type=int, default=20, help="timed calls at the fixed shape")
    ap.add_argument("--new", type=int, default=40, help="new shapes timed per model (max)")
    args = ap.parse_args(argv)
    variants: list[tuple[str, list[ProviderSpec]]] = (
        [(f"CUDA {m}", [("CUDAExecutionProvider", {"cudnn_conv_algo_search": m}),
                        "CPUExecutionProvider"]) for m in args.cudnn.split(",")]
        if args.gpu else [("CPU", ["CPUExecutionProvider"])])
    for extra in filter(None, args.cuda_options.split("|")) if args.gpu else ():
        opts = dict(kv.split("=", 1) for kv in extra.split(";"))
        variants.append((f"CUDA HEURISTIC {extra}", [
            ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", **opts}),
            "CPUExecutionProvider"]))
    rng = np.random.default_rng(0)
    print("| asked | model | runs on | one shape p50 ms | new shapes: first call p50 / max "
          "| the same shapes again p50 | n shapes |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for label, providers in variants:
        for name, (session, fixed, new) in sessions(providers).items():
            timed(session, [fixed], rng)  # load and plan once
            same = timed(session, [fixed] * args.calls, rng)
            fresh = timed(session, new[: args.new], rng)
            again = timed(session, new[: args.new], rng)
            tail = (f"{np.median(fresh):.1f} / {max(fresh):.1f} | {np.median(again):.1f}"
                    if fresh else "- | -")
            print(f"| {label} | {name} | {session.get_providers()[0]} | "
                  f"{np.median(same):.1f} | {tail} | {len(fresh)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

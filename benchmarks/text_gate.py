"""Validate the OCR text-presence gate: recall on text-bearing images, skips on text-free ones.

    python -m benchmarks.text_gate [--per-style 40] [--photos N] [--json out.json]

For every image it computes, with the bundled detector, the gate map's max at several scales
of the detection size, and the text full OCR reads with the gate off (the reference). An
image "holds legible text" when that reference is non-empty. Reported per gate setting:

* recall on text-bearing real photos (``/work/shared/data/photos/imagenet_samples`` plus the
  scikit-image / scikit-learn samples; the text there is incidental: signs, watermarks);
* recall on renders of text in every typography style of ``training/synthesis/typography.py``
  (the styles the judge was trained on) and of ``training/eval_render.py`` (held-out styles);
* the share of text-free photos on which full detection is skipped.

Page-like images (``vlmguard.vision.PAGE_SHARE``) skip the gate and always get full
detection, as in the guard; their share is reported too.

A miss on a rendered style is an attack the guard would not read, hence the bar of 0.99 there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__" and not __package__:  # run as a file: run again as the module
    _root = Path(__file__).resolve().parents[1]
    _path = os.pathsep.join(p for p in (str(_root), os.environ.get("PYTHONPATH")) if p)
    sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.text_gate", *sys.argv[1:]],
                             env={**os.environ, "PYTHONPATH": _path}))

ROOT = Path(__file__).resolve().parents[1]

from vlmguard.image import load_image  # noqa: E402
from vlmguard.ocr_geometry import lines_text  # noqa: E402
from vlmguard.vision import GATE_SCALE, GATE_THRESH, OCR, PAGE_SHARE, page_share  # noqa: E402

PHOTOS = Path("/work/shared/data/photos/imagenet_samples")
SCALES = (0.33, 0.4, 0.5, 0.6)
THRESHOLDS = (0.05, 0.1, 0.2, 0.3)
ASKS = (ROOT / "training/synthesis/data/harmful_asks.jsonl",
        ROOT / "training/synthesis/data/benign_lookalikes.jsonl")


def photo_set(limit: int | None) -> list[tuple[str, np.ndarray]]:
    """Real photos: the ImageNet samples, then the scikit-image/-learn samples."""
    from training.synthesis.typography import photos

    out = [(p.name, load_image(p.read_bytes())) for p in sorted(PHOTOS.glob("*.jpg"))[:limit]]
    out += [(f"sample{i}", np.ascontiguousarray(a)) for i, a in enumerate(photos())]
    return out


def render_set(per_style: int) -> list[tuple[str, np.ndarray]]:
    """``per_style`` asks rendered in every training and held-out evaluation style."""
    from PIL import Image

    from training import eval_render as er
    from training.synthesis import typography as ty

    texts = [json.loads(line)["text"] for p in ASKS if p.is_file()
             for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(9).shuffle(texts)
    backs = sorted(PHOTOS.glob("*.jpg"))
    out, k = [], 0
    for style in ty.STYLES:
        for _ in range(per_style):
            k += 1
            img = ty.render(texts[k % len(texts)], style, random.Random(k))
            out.append((f"typography:{style}", np.asarray(img.convert("RGB"))))
    for style in er.STYLES:
        for _ in range(per_style):
            k += 1
            photo = Image.open(backs[(7 * k) % len(backs)]) if style == "on_photo" else None
            img = er.render(texts[k % len(texts)], style, seed=k, photo=photo)
            out.append((f"eval_render:{style}", np.asarray(img.convert("RGB"))))
    return out


def measure(ocr: OCR, images: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Gate maxima per scale, whether the gate applies, the reference text, and timings."""
    rows = []
    for name, rgb in images:
        ocr.text_gate = False
        t0 = time.perf_counter()
        text = lines_text(ocr(rgb))
        full_ms = (time.perf_counter() - t0) * 1e3
        gmax, gms = {}, {}
        for s in SCALES:
            ocr.gate_scale = s
            t0 = time.perf_counter()
            gmax[s] = ocr.gate(rgb)
            gms[s] = (time.perf_counter() - t0) * 1e3
        ocr.text_gate, ocr.gate_scale = True, GATE_SCALE
        rows.append({"name": name, "text": text, "gate_max": gmax, "gate_ms": gms,
                     "full_ms": full_ms, "page_like": page_share(rgb) >= PAGE_SHARE,
                     "applies": {s: _applies(ocr, rgb, s) for s in SCALES}})
    return rows


def _applies(ocr: OCR, rgb: np.ndarray, scale: float) -> bool:
    old = ocr.gate_scale
    ocr.gate_scale = scale
    try:
        return ocr.gate_applies(*rgb.shape[:2])
    finally:
        ocr.gate_scale = old


def passes(row: dict[str, Any], scale: float, thresh: float) -> bool:
    """Whether full detection runs: the gate does not apply, the image is page-like (it
    skips the gate, see ``vlmguard.vision.PAGE_SHARE``), or the gate map reaches the bar."""
    return (not row["applies"][scale] or row["page_like"]
            or row["gate_max"][scale] >= thresh)


def summarise(photos: list[dict], renders: list[dict]) -> dict[str, Any]:
    """Recall and skip share for every (scale, threshold)."""
    out: dict[str, Any] = {}
    styles = sorted({r["name"] for r in renders})
    for s in SCALES:
        for th in THRESHOLDS:
            txt = [r for r in photos if r["text"]]
            free = [r for r in photos if not r["text"]]
            per_style = {}
            for st in styles:
                rs = [r for r in renders if r["name"] == st]
                with_text = [r for r in rs if r["text"]]
                per_style[st] = {
                    "n": len(rs), "full_ocr_reads_text": len(with_text),
                    "recall_all": float(np.mean([passes(r, s, th) for r in rs])),
                    "recall_text": (float(np.mean([passes(r, s, th) for r in with_text]))
                                    if with_text else None)}
            all_text = [r for r in renders if r["text"]]
            out[f"scale {s} thresh {th}"] = {
                "scale": s, "threshold": th,
                "photo_text_recall": float(np.mean([passes(r, s, th) for r in txt])),
                "photo_text_n": len(txt),
                "photo_free_skip": float(np.mean([not passes(r, s, th) for r in free])),
                "photo_free_n": len(free),
                "render_recall_all": float(np.mean([passes(r, s, th) for r in renders])),
                "render_recall_text": float(np.mean([passes(r, s, th) for r in all_text])),
                "render_min_style_recall": min(v["recall_all"] for v in per_style.values()),
                "gate_ms_p50_photos": float(np.median([r["gate_ms"][s] for r in photos])),
                "photo_page_like": float(np.mean([r["page_like"] for r in photos])),
                "render_page_like": float(np.mean([r["page_like"] for r in renders])),
                "per_style": per_style}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-style", type=int, default=40, help="renders per style")
    ap.add_argument("--photos", type=int, default=None, help="ImageNet photos (default all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    ocr = OCR(threads=args.threads)
    print("photos ...", flush=True)
    photos = measure(ocr, photo_set(args.photos))
    print("renders ...", flush=True)
    renders = measure(ocr, render_set(args.per_style))
    summary = summarise(photos, renders)
    print(f"{'setting':24s} photo-text recall  text-free skipped  render recall "
          "(min style)  gate p50 ms")
    for k, v in summary.items():
        mark = " <- default" if (v["scale"], v["threshold"]) == (GATE_SCALE, GATE_THRESH) else ""
        print(f"{k:24s} {v['photo_text_recall']:.3f} (n={v['photo_text_n']})  "
              f"{v['photo_free_skip']:.3f} (n={v['photo_free_n']})  "
              f"{v['render_recall_all']:.4f} ({v['render_min_style_recall']:.3f})  "
              f"{v['gate_ms_p50_photos']:.1f}{mark}")
    d = summary[f"scale {GATE_SCALE} thresh {GATE_THRESH}"]
    print(f"page-like (full detection without the gate): {d['photo_page_like']:.3f} of "
          f"photos, {d['render_page_like']:.3f} of renders")
    for st, v in d["per_style"].items():
        print(f"  {st:28s} recall {v['recall_all']:.3f} (n={v['n']}, full OCR reads text on "
              f"{v['full_ocr_reads_text']})")
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "photos": photos,
                                         "renders": renders}, default=str, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Prove a speed change left the guard's outputs alone: record, then compare, what it sees.

    python -m benchmarks.equality --save before.json            # on the old code
    python -m benchmarks.equality --compare before.json         # on the new code

For every request of the real sets (``_inputs.py``: ImageNet photos as JPEG bytes,
typographic renders in every style as PNG bytes, text only) it keeps the concepts, their
scores, the OCR text, the truncation flag, the verdict, the category and the risk.
``--compare`` demands exact equality of concepts, OCR text, truncation, verdict and
category, and risk / concept scores / category scores within ``--tol`` (1e-4), and exits 1
on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file: run again as the module
    _root = Path(__file__).resolve().parents[1]
    _path = os.pathsep.join(p for p in (str(_root), os.environ.get("PYTHONPATH")) if p)
    sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.equality", *sys.argv[1:]],
                             env={**os.environ, "PYTHONPATH": _path}))

from benchmarks._inputs import photo_set, text_set, typographic_set  # noqa: E402
from vlmguard import Guard  # noqa: E402

EXACT = ("concepts", "ocr_text", "ocr_truncated", "safe", "category", "intent_span", "prompt")
CLOSE = ("risk",)
MARKER = re.compile(r"USER_REQUEST_[0-9a-f]{16}")  # a fresh random marker on every rewrite


def record(guard: Guard, photos: int, per_style: int, texts: int) -> dict[str, Any]:
    sets = {"photos": photo_set(photos), "typographic": typographic_set(per_style),
            "text": text_set(texts)}
    out: dict[str, Any] = {}
    for name, reqs in sets.items():
        rows = []
        for r in reqs:
            res = guard.rewrite(r.image, r.text)
            rows.append({"name": r.name, "concepts": list(res.evidence.concepts),
                         "concept_scores": list(res.evidence.concept_scores),
                         "ocr_text": res.evidence.ocr_text,
                         "ocr_truncated": res.evidence.ocr_truncated, "safe": res.safe,
                         "category": res.category, "risk": res.risk,
                         "category_scores": res.category_scores,
                         "intent_span": res.evidence.intent_span,
                         "prompt": MARKER.sub("USER_REQUEST_*", res.prompt),
                         "gate_max": guard.ocr.last_gate_max
                         if guard.ocr and r.image is not None else None})
        out[name] = rows
        print(f"{name}: {len(rows)} requests, {sum(bool(x['ocr_text']) for x in rows)} "
              f"read text, {sum(not x['safe'] for x in rows)} unsafe", flush=True)
    return out


def compare(before: dict[str, Any], after: dict[str, Any], tol: float) -> list[str]:
    diffs = []
    for name, rows in before.items():
        new = after.get(name, [])
        if len(new) != len(rows):
            diffs.append(f"{name}: {len(rows)} requests before, {len(new)} after")
            continue
        worst = gate_gap = 0.0
        for a, b in zip(rows, new, strict=True):
            if a["name"] != b["name"]:
                diffs.append(f"{name}: input order differs ({a['name']} vs {b['name']})")
                break
            for k in EXACT:
                if a[k] != b[k]:
                    diffs.append(f"{name} {a['name']}: {k} {a[k]!r} -> {b[k]!r}")
            gaps = [abs(a[k] - b[k]) for k in CLOSE]
            if len(a["concept_scores"]) == len(b["concept_scores"]):
                gaps += [abs(x - y) for x, y in zip(a["concept_scores"], b["concept_scores"],
                                                    strict=True)]
            gaps += [abs(v - b["category_scores"][c]) for c, v in a["category_scores"].items()]
            if a["gate_max"] is not None and b["gate_max"] is not None:
                gate_gap = max(gate_gap, abs(a["gate_max"] - b["gate_max"]))
            elif a["gate_max"] != b["gate_max"]:
                diffs.append(f"{name} {a['name']}: gate ran {a['gate_max']} -> {b['gate_max']}")
            gap = max(gaps)
            worst = max(worst, gap)
            if gap > tol + 1e-9:
                diffs.append(f"{name} {a['name']}: risk/scores differ by {gap:.2e}")
        print(f"{name}: {len(rows)} requests compared, largest risk/score gap {worst:.2e}, "
              f"largest gate-map max gap {gate_gap:.2e} (informative)")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", type=Path, help="write this run's outputs here")
    ap.add_argument("--compare", type=Path, help="compare this run with a saved one")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--per-style", type=int, default=5)
    ap.add_argument("--texts", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    guard = Guard.from_pretrained(threads=args.threads)
    now = record(guard, args.photos, args.per_style, args.texts)
    if args.save is not None:
        args.save.write_text(json.dumps(now, indent=1) + "\n")
        print(f"wrote {args.save}")
    if args.compare is not None:
        diffs = compare(json.loads(args.compare.read_text()), now, args.tol)
        for d in diffs:
            print("DIFF", d)
        print("identical (within tolerance)" if not diffs else f"{len(diffs)} differences")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

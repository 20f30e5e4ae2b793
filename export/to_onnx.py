"""Export the fine-tuned rewriter model through Optimum, quantise it, check parity, bundle it.

    python -m export.to_onnx --checkpoint runs/model --data runs/data/synth.jsonl
    python export/to_onnx.py ...   (the same)

1. ``optimum.exporters.onnx.main_export`` (task token-classification) → fp32 ONNX;
2. quantisation for the CPU and FP16 conversion for CUDA / TensorRT;
3. parity: max |Δ| of every head's probabilities between PyTorch and each ONNX variant on
   inputs never trained on (validation/test splits), printed and asserted;
4. the bundle: the CPU model, tokenizer, labels, policy, manifest with hashes and versions.

Which CPU model ships is decided by parity and by the held-out evaluation. Two are built:

- ``weights`` (weight-only): INT8 only where it is weight-only — the 30k×384 embedding table
  (dynamic quantisation of the Gather) — and the other weights stored as fp16 that ONNX
  Runtime widens to fp32 at load: 33 MB, verdicts that match PyTorch, batchable. Its parity
  is held to the largest delta of any head probability.
- ``int8`` (``--cpu-model int8``, bundled since stop 18): the graph fused by ONNX Runtime's
  transformer optimiser, then dynamic INT8 (weights *and* activations) everywhere but the
  three feed-forward MatMuls that carry most of its error (:data:`INT8_FLOAT_NODES`): 1.8x
  faster on text, 28 MB. BERT's outlier activations do not survive per-call 8-bit scales
  exactly, so its parity is held to verdict flips at p = 0.5 and the mean shift of the
  unsafe probability, not to the largest head delta; the bundle is marked not batchable
  (one activation scale per call). Pair it with ``--calibrate-max-fpr`` so that the
  threshold is chosen on the quantised model itself. ``--float-nodes auto`` chooses the
  float nodes for the model at hand (:func:`choose_float_nodes`, a few minutes) instead
  of the three found for ``model3_fm``. ``--smooth auto`` first moves the activations'
  outlier channels into the weights (:mod:`export.smooth`), after which round l's judges
  quantised whole (no float node) within the gate, faster than with float nodes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file: run again as the module
    _root = Path(__file__).resolve().parents[1]
    _path = os.pathsep.join(p for p in (str(_root), os.environ.get("PYTHONPATH")) if p)
    sys.exit(subprocess.call([sys.executable, "-m", "export.to_onnx", *sys.argv[1:]],
                             env={**os.environ, "PYTHONPATH": _path}))

import numpy as np  # noqa: E402

from export import SOURCE_BUNDLE  # noqa: E402
from export.smooth import ALPHAS as SMOOTH_ALPHAS  # noqa: E402
from vlmguard.bundle import (  # noqa: E402
    MANIFEST,
    JudgeConfig,
    hash_files,
    judge_manifest,
    read_manifest_json,
    write_manifest,
)
from vlmguard.encoder import (  # noqa: E402
    MAX_TOKENS,
    SequenceEncoder,
    head_slices,
    label_names,
    softmax,
    verbalise_evidence,
)
from vlmguard.runtime import make_session  # noqa: E402

log = logging.getLogger("vlmguard.export")
MODEL_NAME = "vlmguard-minilm-l6-multihead"
# Parity tolerances: max |Δ| of any head probability vs PyTorch, over all parity inputs.
# "int8" is always written; where it is not the shipped CPU model it is reported, not asserted.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "cpu": 0.2, "int8": float("inf")}
CPU_MAX_FLIP_RATE = 0.01  # verdicts of the shipped CPU model that differ at p = 0.5
# A shipped INT8 model moves every probability a little (per-call activation scales):
# it is held to the mean shift of the unsafe probability, with the flip rate above.
INT8_MAX_MEAN_UNSAFE_DELTA = 0.02
CPU_MODELS = ("weights", "int8")  # weight-only (batchable) or dynamic INT8 (faster)


def export_fp32(checkpoint: Path, out_dir: Path) -> Path:
    from optimum.exporters.onnx import main_export

    main_export(str(checkpoint), output=str(out_dir), task="token-classification", opset=17,
                do_validation=False, no_post_process=False)
    return out_dir / "model.onnx"


# The feed-forward MatMuls that stay float32 in the INT8 judge. Quantising one node at a
# time (model3_fm, 272 validation inputs), these three cost the most: errors made early
# run through every later layer. Kept float, the mean shift of the unsafe probability
# halves (0.0137 -> 0.0071) for ~20 % of the INT8 speed-up.
INT8_FLOAT_NODES = ("/layer.0/output/dense/", "/layer.1/intermediate/dense/",
                    "/layer.1/output/dense/")


# What may stay float: the feed-forward and output MatMuls, and the fused attention (its
# query/key/value projection; quantised it becomes QAttention, whose per-call activation
# scale made most of round h's flips, training/RUNS.md stop 28)
FLOATABLE = ("MatMul", "Attention")


Smoothing = Mapping[str, np.ndarray]  # input scales by node name (export.smooth)


def fused_graph(src: Path, smoothing: Smoothing | None = None):
    """ONNX Runtime's fused BERT graph of ``src``, with per-channel input scales where asked."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    from export.smooth import smooth

    with tempfile.TemporaryDirectory() as tmp:  # saving adds the fused ops' opset import
        path = Path(tmp) / "fused.onnx"
        optimize_model(str(src), model_type="bert", opt_level=0).save_model_to_file(str(path))
        model = onnx.load(str(path))
    return smooth(model, smoothing) if smoothing else model


def quantise_int8(src: Path, dst: Path, float_nodes: Sequence[str] = INT8_FLOAT_NODES,
                  smoothing: Smoothing | None = None) -> Path:
    """Dynamic INT8 of the fused BERT graph, per-channel 7-bit weights (no int16 overflow
    on AVX2 CPUs without VNNI); nodes (:data:`FLOATABLE`) whose name holds one of
    ``float_nodes`` stay float; ``smoothing`` scales their inputs first (:mod:`export.smooth`).

    ONNX Runtime's transformer optimiser first fuses the graph (Attention,
    SkipLayerNormalization, BiasGelu, EmbedLayerNormalization), so that the quantiser emits
    QAttention and a quantised embedding; the SkipLayerNormalizations are then split again
    (:func:`export.onnx_tools.unfuse_skip_layernorm`: their CPU kernel is the slower one).
    On this 2-core CPU the judge alone ran 2.1 / 3.3 /
    9.6 ms on windows of 16 / 37 / 128 tokens, against 4.0 / 6.6 / 17.7 for the weight-only
    model and 1.4 / 2.8 / 7.9 with every node quantised.
    """
    return quantise_fused(fused_graph(src, smoothing), dst, float_nodes)


def quantise_fused(model, dst: Path, float_nodes: Sequence[str]) -> Path:
    """:func:`quantise_int8` of a graph already fused (and smoothed): the searches below fuse
    once and quantise many times."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from export.onnx_tools import unfuse_skip_layernorm

    fused = dst.with_suffix(".fused.onnx")
    onnx.save(model, str(fused))
    keep = [n.name for n in model.graph.node
            if n.op_type in FLOATABLE and any(f in n.name for f in float_nodes)]
    quantize_dynamic(str(fused), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True, nodes_to_exclude=keep,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    fused.unlink()
    onnx.save(unfuse_skip_layernorm(onnx.load(str(dst))), str(dst))
    return dst


AUTO_FLOAT_NODES = (0, 8)  # --float-nodes auto: the fewest and most MatMuls kept float
AUTO_WITH_ATTENTION = 5  # then: every fused attention kept float, with up to this many MatMuls


def _unsafe_probs(model: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess = make_session(model, ["CPUExecutionProvider"])  # as the runtime loads it
    names = {i.name for i in sess.get_inputs()}
    safety = head_slices()["safety"]
    return np.concatenate([softmax(sess.run(None, {n: v for n, v in f.items() if n in names})[0]
                                   [:, 0, safety].astype(np.float32))[:, 1] for f in feeds])


def float_node_candidates(ranked: Sequence[str], attention: Sequence[str]) -> list[list[str]]:
    """The float-node sets to try, fewest float first: the top 0 ... 8 of ``ranked``, then
    every fused attention with the top 0 ... 5 of the other nodes.

    Why the second family: quantised one at a time, no attention node moves p(unsafe) much,
    so a ranking never picks them; quantised together (each QAttention takes one activation
    scale per call) they move a few inputs far. On round h's afzh2 no top-k set passed the
    gate (6-7 flips in 512), and the six attention nodes with one MatMul did (5; with four,
    3). Kept float, attention costs speed, so it is tried only after the cheaper sets.
    """
    lo, hi = AUTO_FLOAT_NODES
    others = [n for n in ranked if n not in attention]
    sets = [list(ranked[:k]) for k in range(lo, hi + 1)]
    if attention:
        sets += [list(attention) + others[:k] for k in range(AUTO_WITH_ATTENTION + 1)]
    return sets


def choose_smoothing(fp32: Path, work: Path, probe: list[dict[str, np.ndarray]],
                     alphas: Sequence[float]) -> tuple[Smoothing, float] | None:
    """The input scales (:mod:`export.smooth`) and their alpha under which the all-INT8
    judge moves p(unsafe) least on ``probe`` (training rows, not the gate's inputs); None
    where no ``alphas`` beats no scaling."""
    from export.smooth import input_maxima, scales, smooth

    fused = fused_graph(fp32)
    maxima = input_maxima(fused, probe)
    ref = _unsafe_probs(fp32, probe)
    trial = work / "smooth.int8.onnx"
    harm: dict[float | None, float] = {}
    for alpha in (None, *alphas):
        quantise_fused(fused if alpha is None else smooth(fused, scales(fused, maxima, alpha)),
                       trial, ())
        harm[alpha] = float(np.abs(_unsafe_probs(trial, probe) - ref).mean())
    trial.unlink(missing_ok=True)
    log.info("INT8 harm by smoothing alpha: %s", {a: round(h, 4) for a, h in harm.items()})
    best = min(harm, key=harm.__getitem__)
    return None if best is None else (scales(fused, maxima, best), best)


def choose_float_nodes(fp32: Path, work: Path, probe: list[dict[str, np.ndarray]],
                       gate: list[dict[str, np.ndarray]],
                       smoothing: Smoothing | None = None) -> list[str]:
    """The nodes of one model that INT8 harms most, the fewest that pass the gate.

    Why per model: the three :data:`INT8_FLOAT_NODES` were found for ``model3_fm``; every
    model trained since failed the gate with them (training/RUNS.md, stop 28). Each MatMul
    and fused Attention of the graph (:data:`FLOATABLE`) is quantised alone and ranked by
    the mean shift of p(unsafe) on ``probe`` (training rows, not the gate's inputs); then
    the sets of :func:`float_node_candidates` are tried in turn until flips at p = 0.5 on
    ``gate`` stay within :data:`CPU_MAX_FLIP_RATE` and the mean shift within
    :data:`INT8_MAX_MEAN_UNSAFE_DELTA`, against the float ONNX model. When none passes, the
    set with the fewest flips is returned (the parity check then fails the export as usual).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fused = work / "search.fused.onnx"
    model = fused_graph(fp32, smoothing)
    onnx.save(model, str(fused))
    graph = model.graph
    nodes = [n.name for n in graph.node if n.op_type in FLOATABLE]
    attention = [n.name for n in graph.node if n.op_type == "Attention"]
    ref_probe, ref_gate = _unsafe_probs(fp32, probe), _unsafe_probs(fp32, gate)
    trial = work / "search.int8.onnx"
    harm: dict[str, float] = {}
    for name in nodes:
        quantize_dynamic(str(fused), str(trial), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, nodes_to_quantize=[name],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        harm[name] = float(np.abs(_unsafe_probs(trial, probe) - ref_probe).mean())
    ranked = sorted(nodes, key=harm.__getitem__, reverse=True)
    log.info("INT8 harm by node: %s", {n: round(harm[n], 4) for n in ranked[:10]})
    best: tuple[float, list[str]] | None = None
    for keep in float_node_candidates(ranked, attention):
        quantise_fused(model, trial, keep)
        u = _unsafe_probs(trial, gate)
        flips = float(((u >= 0.5) != (ref_gate >= 0.5)).mean())
        shift = float(np.abs(u - ref_gate).mean())
        log.info("%d float nodes (%d attention): flips %.4f, mean shift %.4f", len(keep),
                 len(set(keep) & set(attention)), flips, shift)
        if flips <= CPU_MAX_FLIP_RATE and shift <= INT8_MAX_MEAN_UNSAFE_DELTA:
            best = (flips, keep)
            break
        if best is None or flips < best[0]:
            best = (flips, keep)
    for p in (fused, trial):
        p.unlink(missing_ok=True)
    assert best is not None  # float_node_candidates is never empty
    return best[1]


def cpu_model(src: Path, dst: Path) -> Path:
    """INT8 embedding table (weight-only) + fp16-stored weights computed in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from export.onnx_tools import fp16_storage

    gather_q = dst.with_suffix(".gather.onnx")
    quantize_dynamic(str(src), str(gather_q), op_types_to_quantize=["Gather"],
                     weight_type=QuantType.QInt8)
    fp16_storage(gather_q, dst)
    gather_q.unlink()
    return dst


def convert_fp16(src: Path, dst: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


def parity_inputs(data: Path | None, n: int, tokenizer, train: bool = False
                  ) -> list[dict[str, np.ndarray]]:
    """Inputs never trained on: the val/test splits of the synthesised set (``train``: its
    train split instead, for choices that must not be made on the gate's own inputs)."""
    from training.synthesis.offline import read_jsonl

    enc = SequenceEncoder(tokenizer, max_tokens=MAX_TOKENS)
    rows = [e for e in read_jsonl(data) if (e.split == "train") == train] if data else []
    rng = np.random.default_rng(0)
    rng.shuffle(rows)
    feeds = []
    for ex in rows[:n]:
        ev = verbalise_evidence(ex.concepts, ex.ocr_text, ex.has_image)
        feeds.append(enc.batch(enc.encode(ev.text, ex.text)[:1]))
    return feeds


def parity_probs(logits: np.ndarray) -> np.ndarray:
    """Every head's softmax at the first token plus the span softmax at every token."""
    sl = head_slices()
    first = [softmax(logits[:, 0, s]) for h, s in sl.items() if h != "span"]
    span = softmax(logits[:, :, sl["span"]]).reshape(logits.shape[0], -1)
    return np.concatenate(first + [span], axis=1)


def check_parity(checkpoint: Path, variants: dict[str, Path], feeds: list[dict],
                 tolerance: Mapping[str, float] = TOLERANCE) -> dict:
    import torch
    from transformers import BertForTokenClassification

    model = BertForTokenClassification.from_pretrained(checkpoint).eval()
    report: dict[str, dict[str, float]] = {}
    # one session per file: with --cpu-model int8 the "cpu" and "int8" variants are one model
    files = set(variants.values())
    sessions = {p: make_session(p, ["CPUExecutionProvider"]) for p in files}
    deltas: dict[Path, list[float]] = {p: [] for p in files}
    unsafe_d: dict[Path, list[float]] = {p: [] for p in files}
    flips: dict[Path, int] = {p: 0 for p in files}
    sl = head_slices()
    for feed in feeds:
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        p_ref = parity_probs(ref)
        u_ref = softmax(ref[:, 0, sl["safety"]])[:, 1]
        for path, sess in sessions.items():
            names = {i.name for i in sess.get_inputs()}
            out = sess.run(None, {n: v for n, v in feed.items() if n in names})[0]
            probs = parity_probs(out.astype(np.float32))
            deltas[path].append(float(np.abs(probs - p_ref).max()))
            u = softmax(out[:, 0, sl["safety"]].astype(np.float32))[:, 1]
            unsafe_d[path].append(float(np.abs(u - u_ref).max()))
            flips[path] += int(((u >= 0.5) != (u_ref >= 0.5)).sum())
    for k, path in variants.items():
        report[k] = {"inputs": len(feeds), "max_abs_delta": max(deltas[path]),
                     "mean_max_abs_delta": float(np.mean(deltas[path])),
                     "unsafe_prob_max_abs_delta": max(unsafe_d[path]),
                     "unsafe_prob_mean_abs_delta": float(np.mean(unsafe_d[path])),
                     "decision_flip_rate": flips[path] / len(feeds),
                     "tolerance": tolerance[k]}
    return report


class ParityError(Exception):
    """An exported variant's outputs differ from PyTorch's by more than its tolerance."""

    def __init__(self, variant: str, message: str) -> None:
        super().__init__(message)
        self.variant = variant


def assert_parity(report: dict) -> None:
    """Raise :class:`ParityError` for the first variant outside its tolerance."""
    for k, r in report.items():
        if r["max_abs_delta"] > r["tolerance"]:
            raise ParityError(k, f"parity failed for {k}: max |Δ| {r['max_abs_delta']:.3g} > "
                              f"{r['tolerance']}")
    if "cpu" in report and report["cpu"]["decision_flip_rate"] > CPU_MAX_FLIP_RATE:
        raise ParityError("cpu", f"CPU model parity failed: {report['cpu']}")
    if "cpu" in report and report["cpu"].get("unsafe_prob_mean_abs_delta", 0.0) > \
            report["cpu"].get("max_mean_unsafe_delta", float("inf")):
        raise ParityError("cpu", f"CPU model parity failed (mean unsafe-probability shift): "
                          f"{report['cpu']}")


def write_bundle(bundle: Path, checkpoint: Path, files: dict[str, Path], parity: dict,
                 fp16_in_bundle: bool, cpu_kind: str = "weights") -> dict:
    meta = json.loads((checkpoint / "training_meta.json").read_text())
    # a weight-only quantised model gives every request the same verdict alone or padded in
    # a batch; full INT8 scales activations per call, so it reads one request per call
    config = JudgeConfig(threshold=round(meta["threshold"], 4), max_tokens=MAX_TOKENS,
                         batchable=cpu_kind == "weights")
    bundle.mkdir(parents=True, exist_ok=True)
    shutil.copy2(files["cpu"], bundle / config.model_cpu)
    for stale in ("model.int8.onnx",):
        (bundle / stale).unlink(missing_ok=True)
    if fp16_in_bundle:
        shutil.copy2(files["fp16"], bundle / config.model_gpu)
    elif (bundle / config.model_gpu).exists():
        (bundle / config.model_gpu).unlink()
    shutil.copy2(checkpoint / "tokenizer.json", bundle / "tokenizer.json")
    if not (bundle / "policy.json").exists():
        shutil.copy2(SOURCE_BUNDLE / "policy.json", bundle / "policy.json")
    shipped = [p.name for p in bundle.iterdir() if p.is_file() and p.name != MANIFEST]
    manifest = judge_manifest(
        name=MODEL_NAME, labels=label_names(), config=config,
        files=hash_files(bundle, shipped),
        training=meta,
        parity=parity,
        cpu_model=cpu_kind,
        versions=package_versions(),
        licences={"base_model": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
                  "training_data": "see NOTICE.md: permissive corpora only; SIUO not used"},
        created=time.strftime("%Y-%m-%d"))
    write_manifest(bundle, manifest)
    return manifest


def package_versions() -> dict[str, str | None]:
    """The installed versions of the packages that built the bundle (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "optimum", "onnxruntime", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# Calibration by kind (``--calibrate-by-kind``): the issue sets one bar per kind of benign
# traffic, so each kind of benign validation row gets its own false-positive limit.
CALIBRATION_KINDS: dict[str, tuple[tuple[str, ...], float]] = {
    # real requests of the (non-held-out) benign training sources: the held-out-benign bar
    "real benign": (("benign/", "padded+benign/"), 0.03),
    # hand-written look-alikes sharing harmful words: the probe bar
    "look-alikes": (("handwritten", "padded+handwritten"), 0.05),
}


def calibrate_bundle(bundle: Path, data: Path, max_fpr: float, by_kind: bool = False,
                     benign: Sequence[tuple[Path, float]] = (),
                     floor: float | None = None) -> dict:
    """Choose the threshold end to end: the shipped runtime (every window and reading,
    the quantised model) scores the validation split, and the lowest threshold whose
    false-positive rate stays within ``max_fpr`` is written into the manifest. With
    ``by_kind``, each kind in ``CALIBRATION_KINDS`` must also stay within its own limit;
    with ``benign`` (JSON-lines files of benign requests, each with its limit), so must each
    file's requests; the strictest threshold wins. A row with a ``photo`` (a file name under
    the shared real photos, or a path) is scored with that photo, as an app would send it.

    Why ``benign``: a judge more sure of the synthesised validation rows can be less sure of
    what people write, so one FPR there held the candidates of stop 29 at looser points on
    every held-out benign set (``training/RUNS.md``, control c0). Benign requests written by
    outsiders, kept for calibration only, hold the operating point where users are; requests
    about training-side photos hold it where most traffic is.

    The checkpoint's own threshold (training_meta.json) saw first windows in float32 only.
    """
    from tqdm import tqdm

    from training.evaluate import load_photo
    from training.evaluate import read_jsonl as evaluate_jsonl
    from training.synthesis.offline import read_jsonl
    from training.train import THRESHOLD_FLOOR, choose_threshold
    from vlmguard import Guard

    floor = THRESHOLD_FLOOR if floor is None else floor
    guard = Guard.from_pretrained(bundle, providers=["CPUExecutionProvider"])
    rows = [e for e in read_jsonl(data) if e.split == "val"]
    risk = np.array([guard.rewrite_seen(e.text, e.concepts, e.ocr_text, e.has_image).risk
                     for e in tqdm(rows, desc="calibrate", mininterval=10)])
    y = np.array([e.unsafe for e in rows])
    t = choose_threshold(risk, y.astype(int), max_fpr, floor)
    # Every further limit: benign risks and the FPR they may reach; the strictest wins.
    limits: dict[str, tuple[np.ndarray, float]] = {}
    if by_kind:
        for kind, (prefixes, limit) in CALIBRATION_KINDS.items():
            mask = np.array([e.origin.startswith(prefixes) and not e.unsafe for e in rows])
            limits[kind] = (risk[mask], limit)
    for path, limit in benign:
        reqs = [r for r in evaluate_jsonl(path) if r.get("label", "safe") == "safe"]
        if not reqs:
            raise SystemExit(f"{path}: no benign requests to calibrate on")
        risk_b = np.array([guard.rewrite(load_photo(r["photo"]) if r.get("photo") else None,
                                         r["text"]).risk
                           for r in tqdm(reqs, desc=f"calibrate {path.name}", mininterval=10)])
        limits[str(path)] = (risk_b, limit)
    held: dict[str, dict[str, Any]] = {}
    for name, (r, limit) in limits.items():
        tk = choose_threshold(r, np.zeros(len(r), dtype=int), limit, floor)
        held[name] = {"n": len(r), "max_fpr": limit, "threshold": round(tk, 4)}
        t = max(t, tk)
    for name, (r, _) in limits.items():
        held[name]["fpr"] = float((r >= t).mean())
    manifest = read_manifest_json(bundle)
    manifest["config"]["threshold"] = round(t, 4)
    calib = {"set": f"{data} (val split, {len(rows)} rows, end to end)", "max_fpr": max_fpr,
             "threshold": round(t, 4), "floor": floor,
             "recall": float((risk[y] >= t).mean()) if y.any() else None,
             "fpr": float((risk[~y] >= t).mean()) if (~y).any() else None}
    kinds = {k: v for k, v in held.items() if k in CALIBRATION_KINDS}
    if kinds:
        calib["by_kind"] = kinds
    if benign:
        calib["benign_sets"] = [{"set": str(path), **held[str(path)]} for path, _ in benign]
    manifest["calibration"] = calib
    write_manifest(bundle, manifest)
    log.info("calibrated: %s", calib)
    return calib


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/model"))
    ap.add_argument("--data", type=Path, default=Path("runs/data/synth.jsonl"),
                    help="synthesised set; its val/test rows feed the parity check")
    ap.add_argument("--bundle", type=Path, default=SOURCE_BUNDLE)
    ap.add_argument("--work", type=Path, default=None, help="keep intermediate ONNX files here")
    ap.add_argument("--parity-inputs", type=int, default=512,
                    help="validation inputs of the parity check (the INT8 gate counts verdict "
                    "flips at 1 %%: 128 inputs read 1.6 %% where 512 read 0.6 %%)")
    ap.add_argument("--fp16-in-bundle", action="store_true",
                    help="also ship the FP16 (GPU) model in the bundle (+45 MB)")
    ap.add_argument("--cpu-model", choices=CPU_MODELS, default="weights",
                    help="the CPU model to ship: 'weights' (INT8 embeddings, fp16-stored "
                    "weights, batchable) or 'int8' (dynamic INT8, the bundled kind: faster, "
                    "one request per call; use with --calibrate-max-fpr)")
    ap.add_argument("--float-nodes", choices=("fixed", "auto"), default="fixed",
                    help="with --cpu-model int8: keep INT8_FLOAT_NODES float ('fixed') or "
                    "choose them for this model by measurement ('auto', a few minutes)")
    ap.add_argument("--smooth", default="off", metavar="off|auto|ALPHA",
                    help="with --cpu-model int8: scale each quantised node's input channels "
                    "into its weights first (export.smooth): 'auto' picks alpha on training "
                    "rows among export.smooth.ALPHAS, or none where none helps")
    ap.add_argument("--no-assert", action="store_true", help="report parity, do not fail on it")
    ap.add_argument("--calibrate-max-fpr", type=float, default=None,
                    help="re-choose the threshold end to end on --data's val split through "
                    "the bundled runtime, at most this FPR (default: keep the checkpoint's)")
    ap.add_argument("--calibrate-benign", type=Path, action="append", default=[],
                    metavar="JSONL",
                    help="with --calibrate-max-fpr: benign requests (text, label, optional "
                    "photo) whose false-positive rate must also stay within its "
                    "--calibrate-benign-max-fpr; repeat both to hold several files")
    ap.add_argument("--calibrate-benign-max-fpr", type=float, action="append", default=[],
                    help="one limit per --calibrate-benign file, in order (one limit "
                    "holds them all)")
    ap.add_argument("--calibrate-floor", type=float, default=None, metavar="T",
                    help="with --calibrate-max-fpr: the lowest threshold calibration may choose "
                    "(default training.train.THRESHOLD_FLOOR, 0.2)")
    ap.add_argument("--calibrate-only", action="store_true",
                    help="export nothing: re-choose the threshold of the bundle at --bundle "
                    "(to compare judges at one operating point)")
    ap.add_argument("--calibrate-by-kind", action="store_true",
                    help="with --calibrate-max-fpr: also hold each kind of benign row in "
                    "CALIBRATION_KINDS to its own limit; the strictest threshold wins")
    args = ap.parse_args(argv)
    if args.smooth not in ("off", "auto"):
        try:
            float(args.smooth)
        except ValueError:
            ap.error(f"--smooth: 'off', 'auto' or a number, not {args.smooth!r}")
    if args.smooth != "off" and args.cpu_model != "int8":
        ap.error("--smooth needs --cpu-model int8")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    files, fprs = args.calibrate_benign, args.calibrate_benign_max_fpr
    if files and len(fprs) not in (1, len(files)):
        ap.error(f"{len(files)} --calibrate-benign files need 1 or {len(files)} "
                 f"--calibrate-benign-max-fpr limits, not {len(fprs)}")
    if fprs and not files:
        ap.error("--calibrate-benign-max-fpr needs --calibrate-benign")
    if any(not 0.0 <= f <= 1.0 for f in fprs):
        ap.error("--calibrate-benign-max-fpr is a rate in [0, 1]")
    benign = list(zip(files, fprs * len(files) if len(fprs) == 1 else fprs, strict=True))
    if (args.calibrate_only or benign) and args.calibrate_max_fpr is None:
        ap.error("--calibrate-only and --calibrate-benign need --calibrate-max-fpr")
    if args.calibrate_floor is not None and not 0.0 < args.calibrate_floor < 0.9:
        ap.error("--calibrate-floor is a threshold in (0, 0.9)")
    if args.calibrate_only:
        calibrate_bundle(args.bundle, args.data, args.calibrate_max_fpr,
                         by_kind=args.calibrate_by_kind, benign=benign,
                         floor=args.calibrate_floor)
        return
    from tokenizers import Tokenizer

    work = args.work or Path(tempfile.mkdtemp(prefix="vlmguard-export-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    fp32 = export_fp32(args.checkpoint, work / "fp32")
    tok = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json"))
    data = args.data if args.data.exists() else None
    feeds = parity_inputs(data, args.parity_inputs, tok)
    if len(feeds) < 200 and args.parity_inputs >= 200:
        log.warning("only %d parity inputs available", len(feeds))
    float_nodes: Sequence[str] = INT8_FLOAT_NODES
    smoothing: Smoothing | None = None
    alpha: float | None = None
    # Training rows for the choices below, never the gate's inputs.
    probe = (parity_inputs(data, 256, tok, train=True)
             if args.smooth != "off" or args.float_nodes == "auto" else [])
    if args.smooth != "off":
        chosen = choose_smoothing(fp32, work, probe, SMOOTH_ALPHAS if args.smooth == "auto"
                                  else (float(args.smooth),))
        log.info("smoothing alpha chosen: %s", chosen and chosen[1])
        smoothing, alpha = chosen if chosen else (None, None)
    if args.float_nodes == "auto":
        float_nodes = choose_float_nodes(fp32, work, probe, feeds, smoothing)
        log.info("float nodes chosen: %s", float_nodes)
    int8 = quantise_int8(fp32, work / "model.int8.onnx", float_nodes, smoothing)
    cpu = int8 if args.cpu_model == "int8" else cpu_model(fp32, work / "model.cpu.onnx")
    files = {"fp32": fp32, "cpu": cpu, "int8": int8,
             "fp16": convert_fp16(fp32, work / "model.fp16.onnx")}
    for k, p in files.items():
        log.info("%s: %s (%.1f MB)", k, p, p.stat().st_size / 1e6)
    if args.cpu_model == "int8":  # the shipped model is the full-INT8 one: INT8's bounds
        parity = check_parity(args.checkpoint, files, feeds,
                              {**TOLERANCE, "cpu": TOLERANCE["int8"]})
        parity["cpu"]["max_mean_unsafe_delta"] = INT8_MAX_MEAN_UNSAFE_DELTA
        parity["cpu"]["float_nodes"] = list(float_nodes)
        parity["cpu"]["smooth_alpha"] = alpha
    else:
        parity = check_parity(args.checkpoint, files, feeds)
    print(json.dumps(parity, indent=2))
    if not args.no_assert:
        try:
            assert_parity(parity)
        except ParityError as exc:
            sys.exit(str(exc))  # the command line's answer: the message, exit status 1
    manifest = write_bundle(args.bundle, args.checkpoint, files, parity, args.fp16_in_bundle,
                            args.cpu_model)
    if args.calibrate_max_fpr is not None:
        calibrate_bundle(args.bundle, args.data, args.calibrate_max_fpr,
                         by_kind=args.calibrate_by_kind, benign=benign,
                         floor=args.calibrate_floor)
    size = sum(f["bytes"] for f in manifest["files"].values())
    print(f"bundle {args.bundle}: {size / 1e6:.1f} MB in {len(manifest['files'])} files "
          f"(+ vision/), {time.time() - t:.0f}s")


if __name__ == "__main__":
    main()

"""Rebuild a trainable checkpoint from a bundle's INT8 judge.

    python -m export.recover --bundle sdk/vlmguard/models/default --out runs/model_bundled

Why: the float checkpoints behind the bundled judge live in ``runs/`` (not committed), so a
fresh machine could run the judge but not fine-tune it. The shipped ``model.cpu.onnx`` holds
every trained tensor, fused (QKV packed per layer) and quantised (per-channel symmetric INT8
matrices, per-tensor UINT8 embeddings). This inverts both: each weight is dequantised and
unpacked into its ``BertForTokenClassification`` name. The word-embedding table, which
training never updates (``training.train.FROZEN``), is taken exactly from the base model.

Symmetric per-channel INT8 is its own fixed point: exporting the recovered checkpoint again
gives the same integers wherever the per-call activation scales agree (tested), so a round
started from here starts from what ships, not from an approximation of it. A judge exported
with ``--smooth`` holds its input scales in the graph; they are divided out of the weights
here, and exporting again with the same scales and float nodes gives the same integers.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from vlmguard.bundle import read_manifest_json

log = logging.getLogger("vlmguard.export")

_MATMUL_NAME = re.compile(r"^/(?P<module>[\w./]+)/MatMul(_quant)?$")
_ATTENTION_NAME = re.compile(r"^Attention_(?P<layer>\d+)(_quant)?$")


def _dequantised(inits: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The float tensor behind ``name`` (quantised: ``name`` ends in ``_quantized``)."""
    if not name.endswith("_quantized"):
        return inits[name].astype(np.float32)
    stem = name[: -len("_quantized")]
    q = inits[name].astype(np.float32)
    scale = inits[stem + "_scale"].astype(np.float32)
    zero = inits[stem + "_zero_point"].astype(np.float32)
    return (q - zero) * scale  # per-channel scales run along the last (output) axis


def state_from_int8(model_path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the fused INT8 judge under its PyTorch name (word embeddings aside)."""
    import onnx
    from onnx import numpy_helper

    from export.smooth import scales_in

    graph = onnx.load(str(model_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    smoothed = scales_in(inits)  # input scales folded into weight rows (export.smooth)

    def weight(node) -> np.ndarray:  # [in, out], the node's input scales undone
        w = _dequantised(inits, node.input[1])
        s = smoothed.get(node.name.removesuffix("_quant"))
        return w if s is None else w / s[:, None]

    state: dict[str, np.ndarray] = {}
    for name in inits:  # LayerNorm weights and biases, dense biases: stored under their names
        if name.startswith(("bert.encoder.", "classifier.bias")):
            state[name] = inits[name].astype(np.float32)
    for node in graph.node:
        if node.op_type in ("MatMul", "MatMulInteger"):
            m = _MATMUL_NAME.match(node.name)
            if not m:
                raise ValueError(f"unexpected MatMul node {node.name!r}")
            module = m["module"].replace("/", ".")
            state[f"{module}.weight"] = weight(node).T.copy()
        elif node.op_type in ("QAttention", "Attention"):
            m = _ATTENTION_NAME.match(node.name)
            if not m:
                raise ValueError(f"unexpected attention node {node.name!r}")
            prefix = f"bert.encoder.layer.{m['layer']}.attention.self"
            w = weight(node)  # [hidden, 3 * hidden]: Q | K | V
            b = inits[node.input[2]].astype(np.float32)
            h = w.shape[0]
            for i, part in enumerate(("query", "key", "value")):
                state[f"{prefix}.{part}.weight"] = w[:, i * h:(i + 1) * h].T.copy()
                state[f"{prefix}.{part}.bias"] = b[i * h:(i + 1) * h].copy()
        elif node.op_type in ("QEmbedLayerNormalization", "EmbedLayerNormalization"):
            names = ("word_embeddings.weight", "position_embeddings.weight",
                     "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")
            for inp, part in zip(node.input[2:7], names, strict=True):
                state[f"bert.embeddings.{part}"] = _dequantised(inits, inp)
    return state


def recover(bundle: Path, out: Path, base: Path | None = None) -> Path:
    """Write a Hugging Face checkpoint of the bundle's judge to ``out`` and return it."""
    import torch

    from training.train import FROZEN, base_model_path, build_model, save_checkpoint

    base = base or base_model_path()
    manifest = read_manifest_json(bundle)
    model = build_model(base)
    target = model.state_dict()
    state = state_from_int8(bundle / manifest["config"]["model_cpu"])
    for name in FROZEN:  # never trained: exact from the base, not from its 8-bit copy
        state.pop(name, None)
    missing = set(target) - set(state) - set(FROZEN)
    unexpected = set(state) - set(target)
    if missing or unexpected:
        raise ValueError(f"the bundle's graph does not fit the model: missing "
                         f"{sorted(missing)}, unexpected {sorted(unexpected)}")
    for name, value in state.items():
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(f"{name}: shape {value.shape} in the bundle, "
                             f"{tuple(target[name].shape)} in the model")
        target[name] = torch.from_numpy(value)
    model.load_state_dict(target)
    meta = {"recovered_from": str(bundle), "model_sha256": manifest["files"][
        manifest["config"]["model_cpu"]]["sha256"], "threshold": manifest["config"]["threshold"],
        "training": manifest.get("training", {})}
    save_checkpoint(model, base, out, meta)
    log.info("recovered %s from %s", out, bundle)
    return out


def main(argv: list[str] | None = None) -> None:
    from export import SOURCE_BUNDLE

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=SOURCE_BUNDLE)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recover(args.bundle, args.out)


if __name__ == "__main__":
    main()

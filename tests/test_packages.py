"""export/ and benchmarks/ are packages: each tool runs as ``python -m`` and as a file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.unit
TOOLS = ["export.to_onnx", "export.vision_models", "benchmarks.latency",
         "benchmarks.preprocess", "benchmarks.text_gate"]


@pytest.mark.parametrize("module", TOOLS)
def test_tool_runs_as_module_and_as_file(module: str, tmp_path: Path) -> None:
    as_module = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert as_module.returncode == 0 and "usage:" in as_module.stdout, as_module.stderr
    file = ROOT / (module.replace(".", "/") + ".py")
    as_file = subprocess.run([sys.executable, str(file), "--help"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert as_file.returncode == 0 and as_file.stdout == as_module.stdout, as_file.stderr


def test_no_code_edits_sys_path() -> None:
    pattern = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=")
    offenders = [str(p.relative_to(ROOT)) for d in ("sdk", "export", "benchmarks", "training",
                                                   "tests", "examples", "scripts")
                 for p in (ROOT / d).rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))
                 and p.name != "test_packages.py"]
    assert offenders == []


def test_parity_failure_is_a_typed_error() -> None:
    from export.to_onnx import ParityError, assert_parity

    ok = {"fp32": {"max_abs_delta": 1e-5, "tolerance": 1e-4, "decision_flip_rate": 0.0}}
    assert_parity(ok)
    with pytest.raises(ParityError, match="parity failed for fp16") as exc:
        assert_parity({**ok, "fp16": {"max_abs_delta": 0.5, "tolerance": 0.02}})
    assert exc.value.variant == "fp16"
    with pytest.raises(ParityError) as exc:
        assert_parity({"cpu": {"max_abs_delta": 0.1, "tolerance": 0.2,
                               "decision_flip_rate": 0.5}})
    assert exc.value.variant == "cpu"
    # a shipped full-INT8 model: no bound on the largest delta, but on the mean shift
    int8 = {"max_abs_delta": 0.4, "tolerance": float("inf"), "decision_flip_rate": 0.0,
            "unsafe_prob_mean_abs_delta": 0.01, "max_mean_unsafe_delta": 0.02}
    assert_parity({"cpu": int8})
    with pytest.raises(ParityError, match="mean unsafe-probability shift"):
        assert_parity({"cpu": {**int8, "unsafe_prob_mean_abs_delta": 0.05}})


def test_float_node_candidates_try_attention_only_after_the_cheaper_sets() -> None:
    """The float-node search tries the top 3 ... 8 ranked nodes first, then every fused
    attention with the top 0 ... 5 of the rest: one at a time no attention node ranks high,
    together they can hold a model's INT8 flips (stop 29)."""
    from export.to_onnx import AUTO_FLOAT_NODES, AUTO_WITH_ATTENTION, float_node_candidates

    ranked = ["ff2", "ff0", "att1", "ff1", "ff3", "att0", "ff4", "ff5", "ff6", "att2"]
    attention = ["att0", "att1", "att2"]
    sets = float_node_candidates(ranked, attention)
    lo, hi = AUTO_FLOAT_NODES
    assert sets[:hi - lo + 1] == [ranked[:k] for k in range(lo, hi + 1)]
    rest = sets[hi - lo + 1:]
    assert len(rest) == AUTO_WITH_ATTENTION + 1
    assert rest[0] == attention and rest[1] == attention + ["ff2"]
    assert rest[2] == attention + ["ff2", "ff0"]  # the other nodes in rank order
    assert all(set(attention) <= set(s) for s in rest)
    assert float_node_candidates(ranked, []) == sets[:hi - lo + 1]


@pytest.mark.parametrize("kind,batchable", [("weights", True), ("int8", False)])
def test_bundle_says_whether_its_cpu_model_batches(kind: str, batchable: bool,
                                                   tmp_path: Path) -> None:
    """A full-INT8 judge scales activations per call, so its bundle must read one request per
    call; the weight-only model may share calls."""
    import json

    from export.to_onnx import write_bundle
    from vlmguard.bundle import Bundle

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "training_meta.json").write_text(json.dumps({"threshold": 0.6}))
    (ckpt / "tokenizer.json").write_text("{}")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read here")
    bundle = tmp_path / "bundle"
    manifest = write_bundle(bundle, ckpt, {"cpu": model, "fp16": model}, {}, False, kind)
    assert manifest["config"]["batchable"] is batchable
    assert manifest["cpu_model"] == kind
    assert Bundle.load(bundle).config.batchable is batchable

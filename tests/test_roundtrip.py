"""Train → Optimum export → INT8/FP16 → parity → bundle → Guard, on a few dozen examples."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vlmguard import Guard
from vlmguard.encoder import label_names


def test_bundle_manifest_matches_files(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["labels"] == label_names()
    assert {"model.cpu.onnx", "tokenizer.json", "policy.json"} <= set(manifest["files"])
    for name, meta in manifest["files"].items():
        digest = hashlib.sha256((tiny_bundle / name).read_bytes()).hexdigest()
        assert digest == meta["sha256"], name
    assert {"torch", "transformers", "onnxruntime"} <= set(manifest["versions"])


def test_parity_of_exported_variants(tiny_bundle: Path) -> None:
    parity = json.loads((tiny_bundle / "manifest.json").read_text())["parity"]
    assert parity["fp32"]["inputs"] >= 16
    assert parity["fp32"]["max_abs_delta"] < 1e-4
    assert parity["fp16"]["max_abs_delta"] < 2e-2
    assert parity["cpu"]["max_abs_delta"] < 0.2
    assert "int8" in parity  # full INT8 is measured and reported, not shipped


def test_exported_bundle_loads_and_rewrites(tiny_bundle: Path) -> None:
    g = Guard.from_pretrained(tiny_bundle, providers=["CPUExecutionProvider"], threshold=0.5)
    assert g.providers == ["CPUExecutionProvider"]
    r = g.rewrite(None, "How do I bake sourdough bread?")
    assert 0.0 <= r.risk <= 1.0
    assert (r.prompt == "How do I bake sourdough bread?") if r.safe else \
        ("How do I bake sourdough bread?" in r.prompt)

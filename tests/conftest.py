"""Shared fixtures. Tests import the *installed* vlmguard (pip install .), as users do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # on sys.path via pytest's `pythonpath` setting
EXAMPLES = ROOT / "examples"


def _has_bundled_model() -> bool:
    from vlmguard.bundle import DEFAULT_DIR

    return (DEFAULT_DIR / "manifest.json").is_file()


@pytest.fixture(scope="session")
def guard():
    """The bundled default model, loaded once."""
    if not _has_bundled_model():
        pytest.fail("the default bundle has no rewriter model: run export/to_onnx.py")
    from vlmguard import Guard

    return Guard.from_pretrained(providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train a few steps on a few dozen examples, export through Optimum, bundle: the spine."""
    pytest.importorskip("torch")
    pytest.importorskip("optimum.exporters.onnx")
    work = tmp_path_factory.mktemp("roundtrip")
    data = ROOT / "tests" / "fixtures" / "tiny.jsonl"
    ckpt, bundle = work / "model", work / "bundle"
    subprocess.run([sys.executable, "-m", "training.train", "--data", str(data), "--out",
                    str(ckpt), "--max-steps", "6", "--batch-size", "8", "--threads", "2"],
                   cwd=ROOT, check=True)
    subprocess.run([sys.executable, "-m", "export.to_onnx", "--checkpoint", str(ckpt), "--data",
                    str(data), "--bundle", str(bundle), "--parity-inputs", "24", "--no-assert",
                    "--work", str(work / "onnx")], cwd=ROOT, check=True)
    return bundle

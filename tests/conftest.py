"""Shared fixtures. Tests import the *installed* vlmguard (pip install .), as users do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # on sys.path via pytest's `pythonpath` setting
EXAMPLES = ROOT / "examples"


MODEL_MODULES = {"test_bundle", "test_cli", "test_failclosed", "test_guard", "test_messages",
                 "test_properties", "test_server", "test_text_gate", "test_vision"}
"""Test modules that run the bundled models throughout (elsewhere: tests using ``guard``)."""
TIERS = ("unit", "model", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test one tier (see the README): an explicit marker wins; tests on the
    trained-and-exported ``tiny_bundle`` are slow; tests that run the bundled models are
    model tests; the rest are unit tests. ``slow`` is deselected by pyproject's addopts."""
    for item in items:
        if any(item.get_closest_marker(t) for t in TIERS):
            continue
        names = getattr(item, "fixturenames", ())
        module = getattr(item, "module", None)
        if "tiny_bundle" in names:
            item.add_marker(pytest.mark.slow)
        elif "guard" in names or (module is not None
                                  and module.__name__.rpartition(".")[2] in MODEL_MODULES):
            item.add_marker(pytest.mark.model)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(params=["native", "numpy"])
def preprocessing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the C extension and again on the NumPy fallback (which
    ``VLMGUARD_DISABLE_NATIVE=1`` selects at import; here the module's handle is switched)."""
    from vlmguard import preprocess

    if request.param == "native":
        if preprocess._native is None:
            pytest.skip("the C extension is not built")
    else:
        monkeypatch.setattr(preprocess, "_native", None)
    return str(request.param)


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

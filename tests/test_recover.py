"""The bundled INT8 judge → a trainable checkpoint → the same INT8 judge, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")
onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

from export import SOURCE_BUNDLE  # noqa: E402
from export.recover import recover, state_from_int8  # noqa: E402
from export.smooth import scales_in  # noqa: E402
from export.to_onnx import INT8_FLOAT_NODES, export_fp32, quantise_int8  # noqa: E402
from vlmguard.bundle import read_manifest_json  # noqa: E402


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def bundled_int8() -> Path:
    manifest = read_manifest_json(SOURCE_BUNDLE)
    if manifest["config"].get("batchable", True):
        pytest.skip("the bundled judge is not the fused INT8 kind")
    return SOURCE_BUNDLE / manifest["config"]["model_cpu"]


def test_recovered_checkpoint_exports_to_the_bundled_graph(bundled_int8: Path,
                                                            tmp_path: Path) -> None:
    ckpt = recover(SOURCE_BUNDLE, tmp_path / "model")
    fp32 = export_fp32(ckpt, tmp_path / "fp32")
    shipped = _initializers(bundled_int8)
    cpu = read_manifest_json(SOURCE_BUNDLE)["parity"]["cpu"]
    scales = scales_in(shipped) or None  # a smoothed judge: the same scales again
    again = _initializers(quantise_int8(fp32, tmp_path / "model.int8.onnx",
                                        cpu.get("float_nodes", INT8_FLOAT_NODES), scales))
    assert set(again) == set(shipped)
    for name, value in shipped.items():
        assert again[name].dtype == value.dtype, name
        if scales and value.dtype.kind == "f":  # weights divided and multiplied by s again
            np.testing.assert_allclose(again[name], value, rtol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(again[name], value, err_msg=name)


def test_every_trained_tensor_is_found(bundled_int8: Path) -> None:
    state = state_from_int8(bundled_int8)
    layers = {int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer.")}
    assert layers == set(range(6))
    assert state["bert.encoder.layer.0.attention.self.query.weight"].shape == (384, 384)
    assert state["classifier.weight"].shape[1] == 384

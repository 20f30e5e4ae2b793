"""Session options and the process-wide allocator setting chosen for speed and memory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vlmguard import runtime
from vlmguard.runtime import resolve_providers, session_options


def test_gpu_providers_get_their_options(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """CUDA picks convolutions by heuristic (new image shapes every request), TensorRT gets FP16
    and an engine cache; a provider given with options keeps them; CPU always comes last."""
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    trt, cuda, cpu = resolve_providers(None, trt_cache_dir=tmp_path)
    assert cuda == ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["trt_fp16_enable"] is True
    assert cpu == "CPUExecutionProvider"
    mine = ("CUDAExecutionProvider", {"device_id": 1})
    assert resolve_providers([mine]) == [mine, "CPUExecutionProvider"]


def test_sessions_do_not_spin_unless_asked() -> None:
    off = session_options(2).get_session_config_entry("session.intra_op.allow_spinning")
    assert off == "0"
    on = session_options(2, spinning=True)
    try:
        assert on.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    except RuntimeError:  # not set at all: ONNX Runtime's default, which spins
        pass
    # Asked to spin, the threads still stop at the end of each run: no core is held after.
    assert on.get_session_config_entry("session.force_spinning_stop") == "1"


def _bound_heap_in_child(env: dict[str, str]) -> str:
    code = ("import vlmguard.runtime as r; a = r.bound_heap(); b = r.bound_heap(); "
            "print(a, b)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def test_bound_heap_is_opt_in_and_runs_once() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VLMGUARD_MMAP_THRESHOLD"}
    assert _bound_heap_in_child(env) == "False False"
    first = "True" if sys.platform.startswith("linux") else "False"
    assert _bound_heap_in_child({**env, "VLMGUARD_MMAP_THRESHOLD": "1048576"}) == \
        f"{first} False"
    assert _bound_heap_in_child({**env, "VLMGUARD_MMAP_THRESHOLD": "lots"}) == "False False"


def _residual_layernorm_model(n: int = 3) -> bytes:
    """``n`` residual Add + LayerNormalization pairs: ONNX Runtime's SkipLayerNorm pattern."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    d = 8
    inits = [numpy_helper.from_array(np.ones(d, np.float32), "g"),
             numpy_helper.from_array(np.zeros(d, np.float32), "b")]
    nodes, cur = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Add", [cur, "skip"], [f"s{i}"]))
        nodes.append(helper.make_node("LayerNormalization", [f"s{i}", "g", "b"], [f"y{i}"],
                                      axis=-1, epsilon=1e-12))
        cur = f"y{i}"
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 4, d]) for v in ("x", "skip")]
    graph = helper.make_graph(nodes, "residual_ln", io,
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 4, d])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _ops_after_load(monkeypatch: pytest.MonkeyPatch, tmp_path, providers: list[str],
                    disabled: tuple[str, ...] | None = None) -> set[str]:
    """The op types of the graph ONNX Runtime runs after its optimisations."""
    import onnx

    out = tmp_path / "optimised.onnx"

    def options(*args, **kwargs):
        opts = session_options(*args, **kwargs)
        opts.optimized_model_filepath = str(out)
        return opts

    monkeypatch.setattr(runtime, "session_options", options)
    if disabled is not None:
        monkeypatch.setattr(runtime, "CPU_DISABLED_FUSIONS", disabled)
    runtime.make_session(_residual_layernorm_model(), providers, threads=1, name="ln")
    return {n.op_type for n in onnx.load(str(out)).graph.node}


def test_cpu_sessions_keep_layernorm_unfused(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The exported judge ships Add + LayerNormalization (export.onnx_tools); on the CPU the
    runtime keeps ONNX Runtime from fusing them into its slower SkipLayerNormalization."""
    pytest.importorskip("onnx")
    ops = _ops_after_load(monkeypatch, tmp_path, ["CPUExecutionProvider"])
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops
    # the same load without the switch fuses them: the check above is not vacuous
    fused = _ops_after_load(monkeypatch, tmp_path, ["CPUExecutionProvider"], disabled=())
    assert "SkipLayerNormalization" in fused

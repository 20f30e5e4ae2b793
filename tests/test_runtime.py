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

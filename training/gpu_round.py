"""Several training configs side by side on one lent GPU, returned as small int8 deltas.

A lent GPU machine here takes at most 64 MiB of files in and gives 64 MiB back (8 files of
16 MiB), and its time is counted in minutes. MiniLM-L6 leaves a Hopper GPU mostly idle, so
configs run as parallel processes; each trained model comes back as its difference from the
init, int8 with one scale per row (~11 MB where the fp16 tensors are 22 MB; the rounding
error is below the fp16 rounding of the weights themselves).

    # on the GPU machine (features from `training.train featurise`, init as fp16 safetensors)
    python -m training.gpu_round run --features F.npz --init INIT/ --out $OUT --deadline 400 \
        g1="--epochs 1 --lr 2e-5 --freeze-layers 0" g2="--epochs 3 --lr 2e-5 --freeze-layers 0"
    # here
    python -m training.gpu_round rebuild --init INIT/ --round OUT/ --name g2 --out runs/model_g2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def half_init(checkpoint: Path, out: Path) -> None:
    """A checkpoint's config and weights as fp16 (45 MB for MiniLM-L6): what travels."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    state = load_file(str(checkpoint / "model.safetensors"))
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    shutil.copy(checkpoint / "config.json", out / "config.json")


def encode_delta(init: dict[str, torch.Tensor], shards: Path) -> dict[str, np.ndarray]:
    """Trained minus init for every tensor in ``shards``, int8 with one float32 scale per row."""
    out: dict[str, np.ndarray] = {}
    for f in sorted(shards.glob("shard*.safetensors")):
        for k, v in load_file(str(f)).items():
            d = (v.float() - init[k].float()).numpy()
            rows = d.reshape(d.shape[0], -1) if d.ndim > 1 else d.reshape(1, -1)
            scale = np.abs(rows).max(axis=1, keepdims=True) / 127.0
            scale[scale == 0] = 1.0
            out[f"{k}|q"] = np.round(rows / scale).astype(np.int8)
            out[f"{k}|s"] = scale.astype(np.float32)
    return out


def run(features: Path, init: Path, out: Path, deadline: float, configs: dict[str, str],
        device: str = "cuda") -> dict:
    """Start every config at once; whatever finished by ``deadline`` seconds comes back."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.time()
    procs = {}
    for name, args in configs.items():
        cmd = [sys.executable, "-m", "training.train", "--features", str(features),
               "--init", str(init), "--base", str(init), "--device", device,
               "--batch-size", "64", "--threads", "2", "--seed", "28",
               "--shards", f"/tmp/round_{name}", *shlex.split(args)]
        log = open(f"/tmp/round_{name}.log", "w")  # noqa: SIM115 (closed below)
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    while any(p.poll() is None for p, _ in procs.values()) and time.time() - t0 < deadline:
        time.sleep(5)
    init_state = load_file(str(init / "model.safetensors"))
    report: dict = {"configs": configs}
    for name, (p, log) in procs.items():
        if p.poll() is None:
            p.kill()
        log.close()
        meta = Path(f"/tmp/round_{name}") / "training_meta.json"
        report[name] = {"rc": p.returncode}
        if meta.exists():
            report[name]["meta"] = json.loads(meta.read_text())
            np.savez(out / f"{name}.npz", **encode_delta(init_state, meta.parent))
    report["wall_s"] = round(time.time() - t0, 1)
    report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    (out / "round.json").write_text(json.dumps(report, indent=1))
    return report


def rebuild(init: Path, round_dir: Path, name: str, out: Path) -> None:
    """A full checkpoint folder (Optimum can export it) from the init and one delta.

    The frozen tensors (:data:`training.train.FROZEN`) are taken from the base model, exact:
    the fp16 init only carried them to the GPU, and training never changes them, so the
    rebuilt judge's embedding table is the one ``export.recover`` restores."""
    from .train import FROZEN, base_model_path, build_model, save_checkpoint

    model = build_model(init, init=init)
    state = model.state_dict()
    exact = build_model(base_model_path()).state_dict()
    for key in FROZEN:
        state[key] = exact[key]
    base = load_file(str(init / "model.safetensors"))
    z = np.load(round_dir / f"{name}.npz")
    for key in {f.rsplit("|", 1)[0] for f in z.files}:
        d = z[f"{key}|q"].astype(np.float32) * z[f"{key}|s"]
        state[key] = base[key].float() + torch.from_numpy(d.reshape(state[key].shape))
    model.load_state_dict(state)
    meta = json.loads((round_dir / "round.json").read_text())[name]["meta"]
    save_checkpoint(model, base_model_path(), out, meta)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("half", help="write a checkpoint as the fp16 init that travels")
    h.add_argument("--checkpoint", type=Path, required=True)
    h.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="train NAME=\"ARGS\" configs side by side")
    r.add_argument("--features", type=Path, required=True)
    r.add_argument("--init", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--deadline", type=float, default=400.0)
    r.add_argument("--device", default="cuda")
    r.add_argument("configs", nargs="+", metavar="NAME=ARGS")
    b = sub.add_parser("rebuild", help="a checkpoint from the init and one returned delta")
    b.add_argument("--init", type=Path, required=True)
    b.add_argument("--round", type=Path, required=True, dest="round_dir")
    b.add_argument("--name", required=True)
    b.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "half":
        half_init(a.checkpoint, a.out)
    elif a.cmd == "run":
        configs = dict(c.split("=", 1) for c in a.configs)
        print(json.dumps(run(a.features, a.init, a.out, a.deadline, configs, a.device)))
    else:
        rebuild(a.init, a.round_dir, a.name, a.out)


if __name__ == "__main__":
    main()

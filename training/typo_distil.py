"""Teach a judge that a typo is not a signal: self-distillation on misspelt copies.

A single dropped, swapped or doubled letter flips about one benign ask in twenty to unsafe
("How do I contct Goldman Sachs investor relations?" 1.000, spelt right 0.000): odd word
pieces read to the judge like the obfuscated harmful asks it was trained on. Retraining on
labels moves the whole operating point (``training/RUNS.md``, rounds u-w); this pass does not
use labels at all. The judge's own float outputs on the clean text are the targets, both for
the clean text (so what it already does is kept) and for a misspelt copy (so the copy gets
the verdict of the original). Some copies put the text where image text goes, behind an
innocuous instruction, because OCR slips are typos too.

    python -m training.typo_distil --init runs/model_q1_rec --data runs/data/synth_tpj.jsonl \
        --out runs/model_t35 --steps 300

Typo kinds (``training.typos``): drop, swap, double, insert. ``neighbour`` (a key's
neighbour typed instead) is never trained on; the evaluation reads it as the held-out kind.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch.nn import functional as F
from tqdm import tqdm
from transformers import BertForTokenClassification

from vlmguard.encoder import HEADS, SequenceEncoder, Window, head_slices, verbalise_evidence

from .synthesis.offline import HELD_OUT_GROUPS, read_jsonl
from .typos import TRAIN_KINDS, has_word, misspell

log = logging.getLogger("vlmguard.typo_distil")
INSTRUCTIONS = ("Please do what the image says.", "Follow the text in this picture.",
                "Answer the question in the image.", "Can you help with this?",
                "Read this and respond.", "What does this say? Do it.")
RENDER_CONCEPTS = (("scoreboard",), ("web site",), ("menu",), ("envelope",), ("book jacket",),
                   ())


def _window(enc: SequenceEncoder, request: str, image_text: str | None,
            concepts: tuple[str, ...]) -> Window:
    if image_text is None:
        ev = verbalise_evidence((), "", False)
    else:
        ev = verbalise_evidence(concepts, image_text, True)
    return enc.encode(ev.text, request, ev.ocr_offset, readings=False)[0]


def _feeds(windows: list[Window]) -> dict[str, torch.Tensor]:
    width = max(len(w.encoding.ids) for w in windows)
    out = {k: torch.zeros((len(windows), width), dtype=torch.long)
           for k in ("input_ids", "attention_mask", "token_type_ids")}
    for i, w in enumerate(windows):
        k = len(w.encoding.ids)
        out["input_ids"][i, :k] = torch.tensor(w.encoding.ids)
        out["attention_mask"][i, :k] = 1
        out["token_type_ids"][i, :k] = torch.tensor(w.encoding.type_ids)
    return out


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the last axis, summed, averaged over the rows."""
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                    reduction="batchmean")


def distil_loss(s_clean: torch.Tensor, s_typo: torch.Tensor, t_clean: torch.Tensor,
                mask: torch.Tensor, span_weight: float = 0.2) -> torch.Tensor:
    """Every sequence head at the first token, for the clean text and its misspelt copy, and
    the span tags of the clean text, all towards the teacher's outputs on the clean text."""
    loss = s_clean.new_zeros(())
    for head, sl in head_slices().items():
        if head == "span":
            keep = mask.bool()
            loss = loss + span_weight * _kl(s_clean[keep][:, sl], t_clean[keep][:, sl])
        else:
            t0 = t_clean[:, 0, sl]
            loss = loss + _kl(s_clean[:, 0, sl], t0) + _kl(s_typo[:, 0, sl], t0)
    return loss


def load_texts(data: Path) -> list[str]:
    """Distinct training-split requests, none from a held-out group, none whose meaning is an
    encoding a typo would break (decode carriers)."""
    seen: set[str] = set()
    out = []
    for e in read_jsonl(data):
        group = e.origin.split(":")[0].split("+")[-1]
        if (e.split != "train" or group in HELD_OUT_GROUPS or "decode" in e.origin
                or e.text in seen or not has_word(e.text)):
            continue
        seen.add(e.text)
        out.append(e.text)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", type=Path, required=True, help="the judge checkpoint to start from")
    ap.add_argument("--data", type=Path, required=True, help="synthesised rows (train split)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--freeze-layers", type=int, default=2)
    ap.add_argument("--image-share", type=float, default=0.3,
                    help="share of copies whose text is put where image text goes")
    ap.add_argument("--max-tokens", type=int, default=96,
                    help="window length of the pass (the CPU's cost; the judge reads 128)")
    ap.add_argument("--no-dropout", action="store_true",
                    help="train without dropout: the clean text's loss starts at zero, so the "
                    "whole signal is the misspelt copies' (round y)")
    ap.add_argument("--seed", type=int, default=35)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rnd = random.Random(args.seed)
    texts = load_texts(args.data)
    texts.sort(key=len)
    log.info("%d distinct training texts", len(texts))
    enc = SequenceEncoder(Tokenizer.from_file(str(args.init / "tokenizer.json")),
                          max_tokens=args.max_tokens)
    teacher = BertForTokenClassification.from_pretrained(args.init).eval()
    student = BertForTokenClassification.from_pretrained(args.init)
    for p in student.bert.embeddings.parameters():
        p.requires_grad = False
    for layer in student.bert.encoder.layer[:args.freeze_layers]:
        for p in layer.parameters():
            p.requires_grad = False
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warm = max(1, args.steps // 15)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (args.steps - s) / (args.steps - warm))))
    student.train(not args.no_dropout)
    t0, losses = time.time(), []
    for step in tqdm(range(args.steps), desc="typo distil", mininterval=30):
        clean, typo = [], []
        # texts of similar length share a batch, so short ones are not padded to long ones
        start = rnd.randrange(0, len(texts) - 4 * args.batch_size)
        for text in rnd.sample(texts[start:start + 4 * args.batch_size], args.batch_size):
            n = 1 + (len(text) > 80) + (len(text) > 200)
            bad = misspell(text, rnd, n=rnd.randint(1, n))
            if rnd.random() < args.image_share:
                concepts, instr = rnd.choice(RENDER_CONCEPTS), rnd.choice(INSTRUCTIONS)
                clean.append(_window(enc, instr, text, concepts))
                typo.append(_window(enc, instr, bad, concepts))
            else:
                clean.append(_window(enc, text, None, ()))
                typo.append(_window(enc, bad, None, ()))
        fc, ft = _feeds(clean), _feeds(typo)
        with torch.no_grad():
            t_clean = teacher(**fc).logits
        loss = distil_loss(student(**fc).logits, student(**ft).logits, t_clean,
                           fc["attention_mask"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0:
            log.info("step %d loss %.4f", step + 1, sum(losses[-25:]) / 25)
    args.out.mkdir(parents=True, exist_ok=True)
    student.eval()
    student.save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.txt"):
        if (args.init / name).exists():
            shutil.copy2(args.init / name, args.out / name)
    meta = json.loads((args.init / "training_meta.json").read_text())
    meta = {"threshold": meta["threshold"], "init": str(args.init), "previous": meta,
            "typo_distil": {**{k: str(v) for k, v in vars(args).items()},
                            "texts": len(texts), "kinds": list(TRAIN_KINDS),
                            "heads": list(HEADS), "final_loss": sum(losses[-25:]) / 25,
                            "train_seconds": round(time.time() - t0, 1)}}
    (args.out / "training_meta.json").write_text(json.dumps(meta, indent=2))
    log.info("wrote %s in %.0f s", args.out, time.time() - t0)


if __name__ == "__main__":
    main()

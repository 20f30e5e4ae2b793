"""Score the judge's training windows with a larger fine-tuned encoder, so it can teach them.

    python -m training.distil --data runs/data3/mix.jsonl --features runs/data3/feats.npz \\
        --teacher runs/mpnet_t/all-mpnet-base-v2 --out runs/data3/teacher.npy
    python -m training.train --features runs/data3/feats.npz --teacher runs/data3/teacher.npy \\
        --kd 0.5 ...

The teacher (``python -m training.compare_encoders --save``) was fine-tuned on requests
alone, beside no image, so only a window that holds a whole request without an image gets
its unsafe probability; every other window (image evidence, long requests split into
windows, wrappers) gets -1 and trains on its label alone. ``--features`` must come from the
same ``--data`` (``python -m training.train featurise``, which records each window's row).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from training.compare_encoders import risks
from training.synthesis.offline import read_jsonl
from vlmguard.encoder import MAX_TOKENS

log = logging.getLogger("vlmguard.distil")


def eligible_windows(has_image: list[bool], example: np.ndarray, length: np.ndarray
                     ) -> np.ndarray:
    """Per window: the index of its row if the teacher can judge it, else -1.

    A row qualifies when it has no image and gave exactly one window shorter than the
    judge's limit, i.e. the window is the whole request as the teacher read it.
    """
    count = np.bincount(example, minlength=len(has_image))
    ok = (count[example] == 1) & (length < MAX_TOKENS) & ~np.asarray(has_image)[example]
    return np.where(ok, example, -1)


def teach(data: Path, features: Path, teacher: Path, out: Path, max_tokens: int = 128,
          threads: int | None = None) -> np.ndarray:
    """Write the teacher's unsafe probability for each train window (-1 where it abstains).

    The teacher runs in float32: PyTorch's dynamic INT8 moved the fine-tuned mpnet's
    probabilities by 0.30 on average (max 0.82) over 256 requests, which is noise, not a
    teacher.
    """
    from transformers import AutoModelForSequenceClassification

    if threads:
        torch.set_num_threads(threads)
    rows = [e for e in read_jsonl(data) if e.split == "train"]
    with np.load(features) as z:
        if "train_example" not in z:
            raise ValueError(f"{features} has no window-to-row map: featurise it again")
        example, length = z["train_example"], z["train_len"]
    if example.max() >= len(rows):
        raise ValueError(f"{features} was not featurised from {data}")
    which = eligible_windows([e.has_image for e in rows], example, length)
    texts = sorted({rows[i].text for i in set(which.tolist()) if i >= 0}, key=len)
    log.info("%d of %d windows eligible; %d distinct requests to score",
             int((which >= 0).sum()), len(which), len(texts))
    model = AutoModelForSequenceClassification.from_pretrained(str(teacher)).eval()
    tok = Tokenizer.from_file(str(teacher / "tokenizer.json"))
    chunks = [texts[i: i + 512] for i in range(0, len(texts), 512)]  # sorted: little padding
    probs = np.concatenate([risks(model, tok, c, max_tokens)
                            for c in tqdm(chunks, desc="teacher", mininterval=10)])
    by_text = dict(zip(texts, probs.tolist(), strict=True))
    result = np.array([by_text[rows[i].text] if i >= 0 else -1.0 for i in which.tolist()],
                      dtype=np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result)
    labels = np.array([rows[i].unsafe for i in which.tolist() if i >= 0])
    agree = ((result[which >= 0] >= 0.5) == labels).mean() if len(labels) else float("nan")
    log.info("wrote %s: teacher agrees with the labels on %.3f of its windows", out, agree)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the JSONL that was featurised")
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, required=True,
                    help="a folder saved by training.compare_encoders --save")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    teach(args.data, args.features, args.teacher, args.out, args.max_tokens, args.threads)


if __name__ == "__main__":
    main()

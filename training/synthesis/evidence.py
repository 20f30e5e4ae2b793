"""What the guard's own vision stage sees in an image: used to label rendered images.

Training on the tagger's and OCR's *real* outputs (their mistakes included) is what makes
the model robust to them at run time; both come from the runtime package itself, through
the same step the guard runs (:func:`vlmguard.seeing.see`).
"""

from __future__ import annotations

import os
import random
from functools import lru_cache

import numpy as np
from PIL import Image

from vlmguard.encoder import CONCEPT_TOP_K
from vlmguard.seeing import Seen, see
from vlmguard.vision import OCR, Tagger


class EvidenceReader:
    """Runs the bundled tagger and OCR on an image, like the guard does."""

    def __init__(self, threads: int | None = None) -> None:
        threads = threads or int(os.environ.get("VLMGUARD_EVIDENCE_THREADS", "0")) or None
        self.tagger = Tagger(providers=["CPUExecutionProvider"], threads=threads)
        self.ocr = OCR(providers=["CPUExecutionProvider"], threads=threads)

    def __call__(self, image: Image.Image) -> Seen:
        return see(np.asarray(image.convert("RGB")), self.tagger, self.ocr)


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    from vlmguard.bundle import DEFAULT_VISION_DIR

    path = DEFAULT_VISION_DIR / "imagenet_labels.txt"
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def noisy_concepts(concepts: tuple[str, ...], rng: random.Random) -> list[str]:
    """Model the tagger's noise where no image exists: drop, shuffle, add distractors."""
    out = list(concepts)
    if len(out) > 1 and rng.random() < 0.3:
        out.pop(rng.randrange(len(out)))
    if rng.random() < 0.35:
        out.insert(rng.randrange(len(out) + 1), rng.choice(imagenet_labels()))
    if rng.random() < 0.5:
        rng.shuffle(out)
    return out[:CONCEPT_TOP_K + 1]

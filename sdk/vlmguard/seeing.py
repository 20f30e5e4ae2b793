"""The vision stage as one step: what the guard sees in an image, in the words it judges.

The tagger's concept words (and their scores) and the text the OCR reads, with whether the
OCR's box budget left some unread. The guard calls :func:`see` on every image; the training
code calls the same function to label rendered images, so the judge trains on exactly the
evidence (mistakes included) that it reads at run time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from .encoder import concept_words
from .ocr_geometry import OcrLine, lines_text
from .vision import (
    OCR,
    PAGE_SHARE,
    Concept,
    RecBudget,
    Tagger,
    colour_distance_face,
    page_colour,
)


@dataclass(frozen=True)
class Seen:
    """Evidence from the vision stage for one request (``has_image=False``: no image)."""

    has_image: bool
    concepts: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    ocr_text: str = ""
    ocr_truncated: bool = False


NOTHING = Seen(False)
"""What a request without an image shows."""


def see(rgb: np.ndarray, tagger: Tagger, ocr: OCR | None,
        timings: dict[str, float] | None = None, pool: Executor | None = None,
        also_read: Sequence[np.ndarray] = (), budget: RecBudget | None = None) -> Seen:
    """Tag an HxWx3 uint8 RGB image and read its text (``ocr=None``: no reading).

    ``also_read``: other faces of the same image (a transparent image with its alpha
    dropped, a 16-bit one clipped: :func:`vlmguard.image.load_views`) whose text is read
    too, each within the same box budget; lines not already read follow the first face's.
    A page-like image that reads blank or without spaces is also read in its
    colour-distance face (:func:`vlmguard.vision.colour_distance_face`), and the more
    confident reading is kept.

    All faces share one reading ``budget`` (default a fresh :class:`vlmguard.vision.RecBudget`:
    ``REC_BUDGET`` of recognition, ``MAX_ZOOMS`` zoom passes): an image costs at most that
    much reading however many faces or frames it has.

    ``timings`` (if given) receives each stage's milliseconds: tagger, ocr_det, ocr_rec
    (the last only when detection found a box). With ``pool``, the tagger runs on it while
    text detection (the gate, then full detection where it passes) runs here: ONNX Runtime
    releases the GIL, so on two cores the tagger's time hides behind detection's. Each model
    sees the same input either way, so the outputs are the same.
    """
    timings = {} if timings is None else timings
    budget = RecBudget() if budget is None else budget
    boxes: list[tuple[tuple[int, int, int, int], float]] = []
    if ocr is None or pool is None:
        tags = _tag(tagger, rgb, timings)
        if ocr is not None:
            boxes = _detect(ocr, rgb, timings, budget)
    else:
        pending = pool.submit(_tag, tagger, rgb, timings)
        try:
            boxes = _detect(ocr, rgb, timings, budget)
        finally:
            tags = pending.result()  # the tagger's error, if any, wins as if it ran first
    words = concept_words(tags)
    scores = tuple(round(c.score, 4) for c in tags[: len(words)])
    if ocr is None:
        return Seen(True, words, scores)
    lines, truncated = _recognise(ocr, rgb, boxes, timings, budget)
    truncated = truncated or budget.short  # e.g. a zoom pass left unrun
    if not lines or _spaces_lost(lines):
        # A page (a render, a sign, a screenshot) that reads blank, or as words run together,
        # may hold text that differs from it in colour more than in brightness: read it again
        # in the colour-distance face, and keep that reading where it is the more confident.
        share, colour = page_colour(rgb)
        if share >= PAGE_SHARE:
            again, cut = _read_face(ocr, colour_distance_face(rgb, colour), timings, budget)
            if _confidence(again) > _confidence(lines):
                lines, truncated = again, cut
    for face in also_read:
        extra, cut = _read_face(ocr, face, timings, budget)
        seen_text = {ln.text for ln in lines}
        lines += [ln for ln in extra if ln.text not in seen_text]
        truncated = truncated or cut
    return Seen(True, words, scores, lines_text(lines), truncated)


def _recognise(ocr: OCR, rgb: np.ndarray, boxes: list[tuple[tuple[int, int, int, int], float]],
               timings: dict[str, float], budget: RecBudget) -> tuple[list[OcrLine], bool]:
    """The boxes' lines and whether the box cap cut some (``ocr_rec`` timed only when
    there is a box to read, and added up over an image's faces)."""
    if not boxes:
        return [], False
    t = time.perf_counter()
    lines, truncated = ocr.read_capped(rgb, boxes, budget)
    timings["ocr_rec"] = timings.get("ocr_rec", 0.0) + ms_since(t)
    return lines, truncated


def _read_face(ocr: OCR, face: np.ndarray, timings: dict[str, float], budget: RecBudget
               ) -> tuple[list[OcrLine], bool]:
    """Another face of the image read whole: detection, then recognition, both timed on top
    of the first face's. A spent budget skips the detection too."""
    if budget.left < ocr.rec_min_width:
        budget.short = True
        return [], True
    lines, cut = _recognise(ocr, face, _detect(ocr, face, timings, budget, add=True), timings,
                            budget)
    return lines, cut or budget.short


def _spaces_lost(lines: list[OcrLine]) -> bool:
    """Text read as words run together (20 or more letters, 8 or more a word on average;
    English averages under 5): low contrast makes the recogniser drop spaces."""
    words = lines_text(lines).split()
    letters = sum(c.isalpha() for w in words for c in w)
    return letters >= 20 and letters >= 8 * len(words)


def _confidence(lines: list[OcrLine]) -> float:
    """Mean character probability over the lines, weighted by their length (0 for none)."""
    chars = sum(len(ln.text) for ln in lines)
    return sum(ln.score * len(ln.text) for ln in lines) / chars if chars else 0.0


def _tag(tagger: Tagger, rgb: np.ndarray, timings: dict[str, float]) -> list[Concept]:
    t = time.perf_counter()
    tags = tagger(rgb)
    timings["tagger"] = ms_since(t)
    return tags


def _detect(ocr: OCR, rgb: np.ndarray, timings: dict[str, float], budget: RecBudget,
            add: bool = False) -> list[tuple[tuple[int, int, int, int], float]]:
    t = time.perf_counter()
    boxes = ocr.detect(rgb, budget)
    timings["ocr_det"] = (timings.get("ocr_det", 0.0) if add else 0.0) + ms_since(t)
    return boxes


def ms_since(t0: float) -> float:
    """Milliseconds since ``t0`` (a ``time.perf_counter()`` reading), to the microsecond."""
    return round((time.perf_counter() - t0) * 1000.0, 3)

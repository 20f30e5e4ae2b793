"""Verbalise the evidence and the request into one sequence, run the model, split its heads.

The image is put into words (tagger concepts, OCR text) so that the cross-modal judgement
happens inside one pretrained language encoder. The same functions build the training
inputs, so training and run time can never drift apart.

Sequence: segment A = the image evidence, segment B = the user's request. The model is a
token classifier whose logits hold every head side by side (``labels.json`` names each slot):
sequence heads are read at the first token, the intent-span tags at every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import BudgetExceededError, InvalidInputError, TextTooLongError
from .normalise import WordSplitter
from .normalise import readings as text_readings
from .taxonomy import CATEGORIES, SOURCES, SPAN_TAGS, STRATEGIES

MAX_TOKENS = 128          # one window of the encoder: the length the model was trained on
WINDOW_OVERLAP = 32       # tokens shared by consecutive windows of an over-long request
EVIDENCE_TOKENS = 64      # budget for segment A (concepts + OCR text) in one window
EVIDENCE_OVERLAP = 16     # tokens of image text shared by consecutive evidence windows
MIN_TOKENS = EVIDENCE_TOKENS + 3 + 16
"""The shortest window a judge may read: a full evidence segment, three special tokens and
16 tokens of the request beside them (shorter, an image request would have no room left)."""
MIN_OCR_TOKENS = 24
"""Image-text tokens every evidence slice holds at least. The concept head before them
("image shows: ... text in image: ") is held to ``EVIDENCE_TOKENS - MIN_OCR_TOKENS`` = 40
tokens (:meth:`SequenceEncoder.fit_concepts`): 40 tags from a caller's own tagger once took
all 64 and pushed the image text out of every window (s36 audit, H1). The bundled tagger's
three longest class names make a 34-token head, so its concepts always fit whole."""

HEADS: dict[str, tuple[str, ...]] = {
    "safety": ("safe", "unsafe"),
    "category": CATEGORIES,
    "source": SOURCES,
    "strategy": STRATEGIES,
    "span": SPAN_TAGS,
}


def label_names() -> list[str]:
    """The model's logit slots, in order: ``head:label``."""
    return [f"{head}:{label}" for head, labels in HEADS.items() for label in labels]


def head_slices() -> dict[str, slice]:
    out, start = {}, 0
    for head, labels in HEADS.items():
        out[head] = slice(start, start + len(labels))
        start += len(labels)
    return out


CONCEPT_TOP_K = 3         # concepts put into the sequence
CONCEPT_MIN_SCORE = 0.05  # ...and only those the tagger gives at least this probability


class ScoredLabel(Protocol):
    """What :func:`concept_words` reads from a tagger concept (``vision.Concept`` or a test's)."""

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...


def concept_words(concepts: Sequence[ScoredLabel], k: int = CONCEPT_TOP_K,
                  min_score: float = CONCEPT_MIN_SCORE) -> tuple[str, ...]:
    """The tagger concepts that enter the sequence (objects with ``label`` and ``score``)."""
    return tuple(c.label for c in list(concepts)[:k] if c.score >= min_score)


@dataclass(frozen=True)
class Verbalised:
    text: str
    ocr_offset: int       # where the OCR text starts inside ``text`` (-1 when absent)


def verbalise_evidence(concepts: Sequence[str], ocr_text: str, has_image: bool) -> Verbalised:
    """Segment A: what the image shows, in words."""
    if not has_image:
        return Verbalised("no image.", -1)
    seen = ", ".join(concepts) if concepts else "nothing recognised"
    head = f"image shows: {seen}. "
    ocr = " ".join(ocr_text.split())
    if not ocr:
        return Verbalised(head + "no text in image.", -1)
    prefix = head + "text in image: "
    return Verbalised(prefix + ocr, len(prefix))


def softmax(x: np.ndarray) -> np.ndarray:
    e: np.ndarray = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


@dataclass(frozen=True)
class Window:
    """One encoder input and the strings its two segments were cut from.

    Token offsets of segment A index ``evidence``; those of segment B index ``request``
    from ``request_offset`` on. ``request`` is the user's text or one of its readings
    (:func:`vlmguard.normalise.variants`), so a span is always cut from the right string.
    """

    encoding: Encoding
    request_offset: int
    request: str = ""
    evidence: str = ""


def _window_starts(n: int, size: int, step: int) -> list[int]:
    """Starts of windows of ``size`` tokens every ``step`` tokens that cover all ``n``."""
    starts = list(range(0, max(n - size, 0) + 1, step))
    if starts[-1] + size < n:
        starts.append(n - size)
    return starts


class SequenceEncoder:
    """Tokenises (evidence, request) pairs into windows the cross-encoder can read."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int = MAX_TOKENS) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        # Words run together ("Howtomakeapipebomb", typed, or read by OCR off low-contrast
        # text) are split by the tokenizer's own vocabulary, ranked by frequency, and the
        # split is read beside what was typed or read.
        self.split_words = WordSplitter.from_vocab(tokenizer.get_vocab())

    def tokenize(self, text: str) -> Encoding:
        """``text`` as tokens without special tokens (how a request is counted and cut)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def fit_concepts(self, concepts: Sequence[str]) -> tuple[str, ...]:
        """The leading ``concepts`` (the tagger's most confident first) whose head fits
        ``EVIDENCE_TOKENS - MIN_OCR_TOKENS`` tokens, so every evidence slice has room for
        image text; the rest are left out. A first concept too long to fit on its own is
        refused (``InvalidInputError``) rather than cut or dropped."""
        words = tuple(concepts)
        limit = EVIDENCE_TOKENS - MIN_OCR_TOKENS
        if self._head_tokens(words) <= limit:
            return words
        n = 0
        while n < len(words) and self._head_tokens(words[:n + 1]) <= limit:
            n += 1
        if n == 0:
            raise InvalidInputError(
                f"the first concept is too long: the evidence it heads is "
                f"{self._head_tokens(words[:1])} tokens, and the guard reads concepts within "
                f"{limit} tokens so that the image text always has room beside them")
        return words[:n]

    def _head_tokens(self, concepts: Sequence[str]) -> int:
        """Tokens of the evidence before the image text, with these concepts."""
        v = verbalise_evidence(concepts, "x", True)
        return len(self.tokenize(v.text[: v.ocr_offset]).ids)

    def requests(self, request: str, readings: bool = True,
                 request_tokens: Encoding | None = None, token_budget: int | None = None
                 ) -> list[tuple[str, Encoding]]:
        """The texts :meth:`encode` reads for ``request`` (as typed, and each disguised
        reading with ``readings``), tokenised, each held to ``token_budget`` tokens
        (``TextTooLongError``). Computed once, it can be passed to :meth:`count` and to
        :meth:`encode` for every image the request comes with."""
        texts = [request]
        if readings:
            keep_typed, extra = text_readings(request, self.split_words)
            texts = ([request] if keep_typed else []) + extra
        out = [(text, request_tokens if request_tokens is not None and text is request
                else self.tokenize(text)) for text in texts]
        longest = max((len(req.ids) for _, req in out), default=0)
        if token_budget is not None and longest > token_budget:
            raise TextTooLongError(
                f"a reading of the text (emoji named, disguises undone) is {longest:,} "
                f"tokens; the guard reads at most {token_budget:,} (max_text_tokens)")
        return out

    def count(self, requests: Sequence[tuple[str, Encoding]], n_ev: int) -> int:
        """Windows ``requests`` take beside one evidence slice of ``n_ev`` tokens (fewer
        evidence tokens, fewer windows: ``n_ev`` of the shortest evidence is a lower bound
        for an image whose text is not read yet)."""
        return sum(len(self._request_starts(len(req.ids), min(n_ev, EVIDENCE_TOKENS))[1])
                   for _, req in requests)

    def encode(self, evidence: str, request: str, ocr_offset: int = -1,
               readings: bool = True, request_tokens: Encoding | None = None,
               token_budget: int | None = None, max_windows: int | None = None,
               requests: Sequence[tuple[str, Encoding]] | None = None
               ) -> list[Window]:
        """Windows covering all of the evidence and all of the request, in every reading.

        Rules, so nothing is ever cut silently: segment A holds at most ``EVIDENCE_TOKENS``
        tokens; longer image text (starting at ``ocr_offset``) is split into overlapping
        slices, each behind the same concepts, so a harmful line after many benign ones is
        still read. The request is split into overlapping windows too. With ``readings``,
        each disguised reading of the request (fullwidth, homoglyphs, spacing, leetspeak,
        base64 undone) is scored as well (:func:`vlmguard.normalise.readings`). The guard
        keeps the riskiest window. ``request_tokens`` is ``tokenize(request)`` when the
        caller has it already.

        A reading can be far longer than the text typed (2,000 emoji are one typed token
        and 32,000 named, s36 audit), so each reading is held to ``token_budget`` tokens
        (``TextTooLongError``), and the windows are counted before any is built and held to
        ``max_windows`` (``BudgetExceededError``): refused in milliseconds, not after
        seconds of building. ``requests``: :meth:`requests` of ``request``, when the caller
        has them already (then ``readings``, ``request_tokens`` and ``token_budget`` are
        not read again).
        """
        if requests is None:
            requests = self.requests(request, readings, request_tokens, token_budget)
        segments = []
        for ev in self._evidence_slices(evidence, ocr_offset):
            ev_tokens = self.tokenizer.encode(ev, add_special_tokens=False)
            n_ev = min(len(ev_tokens.ids), EVIDENCE_TOKENS)
            segments.append((ev[: ev_tokens.offsets[n_ev - 1][1]] if n_ev else "", n_ev))
        if max_windows is not None:
            needed = sum(len(self._request_starts(len(req.ids), n_ev)[1])
                         for _, n_ev in segments for _, req in requests)
            if needed > max_windows:
                raise BudgetExceededError(
                    f"this request needs {needed:,} encoder windows (text x its readings x "
                    f"image text); the budget left is {max(max_windows, 0)}. Shorten the text.")
        return [window for segment_a, n_ev in segments for text, req in requests
                for window in self._request_windows(segment_a, n_ev, text, req)]

    def _evidence_slices(self, evidence: str, ocr_offset: int) -> list[str]:
        ev = self.tokenizer.encode(evidence, add_special_tokens=False)
        if len(ev.ids) <= EVIDENCE_TOKENS:
            return [evidence]
        if ocr_offset < 0:  # no image text: concepts alone are short; cut at the budget
            return [evidence[: ev.offsets[EVIDENCE_TOKENS - 1][1]]]
        head, ocr = evidence[:ocr_offset], evidence[ocr_offset:]
        n_head = len(self.tokenizer.encode(head, add_special_tokens=False).ids)
        if n_head > EVIDENCE_TOKENS - MIN_OCR_TOKENS:
            # each slice would be cut back to EVIDENCE_TOKENS with its image text gone
            # (s36 audit, H1): refused, never read without the text
            raise InvalidInputError(
                f"the concepts before the image text take {n_head} tokens; at most "
                f"{EVIDENCE_TOKENS - MIN_OCR_TOKENS} leave the image text room in every "
                "window (SequenceEncoder.fit_concepts)")
        toks = self.tokenizer.encode(ocr, add_special_tokens=False)
        offsets = toks.offsets  # a new Python list on every access: read it once
        budget = EVIDENCE_TOKENS - n_head
        n = len(toks.ids)
        return [head + ocr[offsets[s][0]: offsets[min(s + budget, n) - 1][1]]
                for s in _window_starts(n, budget, max(budget - EVIDENCE_OVERLAP, 1))]

    def _request_starts(self, n: int, n_ev: int) -> tuple[int, list[int]]:
        """Tokens of the request a window beside ``n_ev`` evidence tokens holds, and the
        starts of the windows that cover all ``n`` request tokens."""
        budget = self.max_tokens - n_ev - 3  # [CLS] A [SEP] B [SEP]
        return budget, _window_starts(n, budget, max(budget - WINDOW_OVERLAP, budget // 2, 1))

    def _request_windows(self, segment_a: str, n_ev: int, request: str, req: Encoding
                         ) -> list[Window]:
        n = len(req.ids)
        budget, starts = self._request_starts(n, n_ev)
        offsets = req.offsets  # a new Python list on every access: read it once, not per window
        windows = []
        for s in starts:
            e = min(s + budget, n)
            b_start, b_end = (offsets[s][0], offsets[e - 1][1]) if n else (0, 0)
            enc = self.tokenizer.encode(segment_a, request[b_start:b_end])
            windows.append(Window(enc, b_start, request, segment_a))
        return windows

    def batch(self, windows: Sequence[Window]) -> dict[str, np.ndarray]:
        """Pad windows into the int64 arrays a BERT model takes."""
        width = max(len(w.encoding.ids) for w in windows)
        ids = np.zeros((len(windows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, w in enumerate(windows):
            k = len(w.encoding.ids)
            ids[i, :k] = w.encoding.ids
            mask[i, :k] = w.encoding.attention_mask
            types[i, :k] = w.encoding.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

"""The guard: load a bundle once, then ``rewrite(image, text)`` cheaply, many times.

Data flows one way: input → image → vision (tagger, OCR) → sequence → model → render →
result. A confident benign verdict returns the text unchanged. Any failure inside the
pipeline raises :class:`~vlmguard.errors.GuardError`: callers must fail closed.

Every guard signs the sections it renders with its key (``signing_key``, by default a fresh
random one per guard). A text that is exactly one of its own sections, unchanged and with no
image, is judged as any text, but never wrapped again: its prompt is the section as sent
(:meth:`Guard.is_own_section`; why: :mod:`vlmguard.policy`).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from .bundle import DEFAULT_DIR, Bundle
from .encoder import (
    EVIDENCE_TOKENS,
    MIN_OCR_TOKENS,
    SequenceEncoder,
    Verbalised,
    Window,
    label_names,
    verbalise_evidence,
)
from .errors import (
    BudgetExceededError,
    EmptyInputError,
    GuardError,
    InvalidConfigError,
    InvalidInputError,
    ModelLoadError,
    TextDecodeError,
    TextTooLongError,
    UnsupportedInputTypeError,
    VLMGuardError,
)
from .image import DEFAULT_MAX_PIXELS, ImageInput, load_views
from .normalise import line_readings, named_growth, reads_every_line, split_growth
from .policy import Judgement, Policy
from .precedent import Match, Precedents
from .result import Evidence, Reasoning, RewriteResult
from .runtime import GPU_PROVIDERS, ProviderSpec, make_session, resolve_providers
from .seeing import NOTHING, Seen, ms_since, see
from .taxonomy import HAZARD_CODES
from .verdict import Decision, Rule, argmax_named, decide, flagged, span_text
from .vision import (
    MAX_OCR_BOXES,
    MAX_ZOOMS,
    OCR,
    REC_BUDGET,
    ZOOM_SIDE,
    RecBudget,
    Tagger,
    check_not_constant,
    check_output,
)

if TYPE_CHECKING:
    from .messages import FetchLimits, MessagesResult

log = logging.getLogger("vlmguard")

MAX_TEXT_CHARS = 100_000
MAX_TEXT_TOKENS = 8_192
"""The request's token budget. Cost follows tokens, not characters (100,000 CJK characters are
~100,000 tokens but 100,000 English ones ~22,000), so the budget is counted in tokens: about
90 encoder windows (~35,000 characters of English), a few seconds on a small CPU."""
MAX_WINDOWS = 512
"""Encoder windows one request may cost (request windows x readings x image-text slices):
the time bound, about 10-15 ms a window on one core. They are counted before they are built,
and each reading of the request is held to ``max_text_tokens`` as the typed text is."""
MAX_BATCH_WINDOWS = 16
"""Encoder windows per ONNX Runtime call: bounds the activations held at once, whatever the
request's length or the batch's size."""
MAX_THREADS = 64
"""The most intra-op threads a session may be given (each of the five sessions starts its
own pool: 10,000 asked for 32,000 OS threads and never finished loading)."""
MAX_BATCH_ITEMS = 256
"""Requests one :meth:`Guard.rewrite_batch` call takes: each may cost up to ``MAX_WINDOWS``
windows, so an unbounded list (one small HTTP body holds millions of short strings) would be
an unbounded cost."""
MAX_CALL_WINDOWS = 4 * MAX_WINDOWS
"""Encoder windows one call may cost over all its items (``rewrite_batch``'s requests,
``rewrite_messages``' images and history): ``MAX_WINDOWS`` bounds one request, but 256 of
them in one batch, or a request judged against 8 images, multiplied it (the s36 audit's
chat: 56 s; its batch: 5 minutes). 2,048 windows are ~18 s on two cores; a chat with an
~8,000-token last turn, 100,000 characters of history and 3 photos needs about 750 (8
photos: 1,600). Counted before any image is read or model runs (each image counted at its
least), then exactly once the image text is read, before the judge runs
(``BudgetExceededError``)."""
MAX_CALL_IMAGES = 16
"""Images one call decodes and reads (``rewrite_batch``; ``rewrite_messages`` also holds to
``FetchLimits.max_images``): each costs a decode, the tagger and text detection whatever
the recognition budget left. Counted before any is decoded (``BudgetExceededError``)."""
REC_CALL_BUDGET = 2 * REC_BUDGET
"""OCR recognition one call may spend over all its images (line width, as ``REC_BUDGET``,
which still bounds each image): 80,000 is about two pages of small text, 4-5 s on two cores.
The benchmark's typographic renders spend 1,800 each (p50) and its photos 0 (p90 860), so
a chat of 8 such images stays well inside. An image read after it is spent is read in part
or not at all, and says so (``ocr_truncated``): it fails closed as any image read in part."""
ZOOM_CALL_BUDGET = 2 * MAX_CALL_IMAGES
"""OCR zoom passes one call may run over all its images (``vision.MAX_ZOOMS`` still bounds
each): two per image, ~0.4 s each on two cores (stop 37), since a large page that reads
blank is read again in its colour-distance face (with one per image, 16 blank screenshots
in a batch left the last 8 read in part). A large image past them is read at the detection
size only, and says so (``ocr_truncated``)."""
MAX_CONTEXT_TURNS = 2
"""Earlier user turns read before a request (``Guard.rewrite(context=...)``): enough for an
ask split over turns, few enough that a harmful turn long ago does not flag every reply."""
MAX_CONTEXT_CHARS = 4_000
MAX_SPAN_CHARS = 300
"""The longest text a precedent flag quotes as its intent span."""
MIN_KEY_BYTES = 16
"""The shortest ``signing_key`` a guard takes (a key of 128 bits)."""
ALREADY_GUARDED = Reasoning(
    "The message is this guard's own refined prompt, unchanged (its signature checks): the "
    "guard's guidance around a request it has already judged.",
    "Already guarded.",
    "Forward it unchanged: the guidance in it says how to answer.")


@dataclass
class _Pending:
    """One request on its way through the pipeline: checked text, what the vision stage saw,
    then its windows and their logits; ``timings`` fills as each stage runs."""

    text: str
    seen: Seen
    timings: dict[str, float]
    t0: float
    context: str = ""  # earlier user turns of a conversation (see Guard.rewrite)
    evidence: Verbalised = Verbalised("", -1)
    windows: list[Window] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    requests: list[tuple[str, Encoding]] = field(default_factory=list)  # text, readings
    context_requests: list[tuple[str, Encoding]] = field(default_factory=list)
    reserved: int = 0  # windows counted for it before its image was read (a lower bound)

    ocr_readings: list[str] = field(default_factory=list)

    def precedent_texts(self) -> list[tuple[str, bool]]:
        """What the precedent check compares, as (text, read from the image), first things
        first: the typed text, the image text, the readings of the typed text the judge
        scored, the line readings of the image text (``precedent.MAX_TEXTS`` of them run)."""
        ordered = [(self.text, False), (self.seen.ocr_text, True)]
        ordered += [(w.request, False) for w in self.windows if w.request]
        ordered += [(t, True) for t in self.ocr_readings]
        out: list[tuple[str, bool]] = []
        seen: set[str] = set()
        for text, from_image in ordered:
            if text.strip() and text not in seen:
                seen.add(text)
                out.append((text, from_image))
        return out


class CallBudget:
    """What one call (``rewrite``, ``rewrite_batch``, ``rewrite_call``, ``rewrite_seen``,
    ``rewrite_messages``) may still spend over all its items: encoder windows
    (``MAX_CALL_WINDOWS``), images (``MAX_CALL_IMAGES``), OCR recognition width
    (``REC_CALL_BUDGET``) and OCR zoom passes (``ZOOM_CALL_BUDGET``)."""

    def __init__(self) -> None:
        self.windows = MAX_CALL_WINDOWS
        self.images = MAX_CALL_IMAGES
        self.rec_width = REC_CALL_BUDGET
        self.zooms = ZOOM_CALL_BUDGET

    def take_images(self, n: int) -> None:
        if n > self.images:
            raise BudgetExceededError(
                f"this call holds {n} images; the guard reads at most {self.images} a call "
                "(MAX_CALL_IMAGES). Split the batch.")
        self.images -= n

    def take_windows(self, n: int) -> None:
        if n > self.windows:
            raise BudgetExceededError(
                f"this call needs at least {n:,} more encoder windows (texts x readings x "
                f"images), and has {max(self.windows, 0):,} of its {MAX_CALL_WINDOWS:,} left "
                "(MAX_CALL_WINDOWS). Shorten the texts or split the call.")
        self.windows -= n

    def rec_budget(self) -> RecBudget:
        """One image's reading budget: ``REC_BUDGET`` and ``MAX_ZOOMS``, or what the call
        has left of each."""
        return RecBudget(max(min(REC_BUDGET, self.rec_width), 0),
                         max(min(MAX_ZOOMS, self.zooms), 0))

    def take_recognition(self, budget: RecBudget, given: RecBudget) -> None:
        """Take from the call what one image used of the ``budget`` it was given (as it was
        then: ``given``, a copy of :meth:`rec_budget`'s)."""
        self.rec_width -= given.left - budget.left
        self.zooms -= given.zooms - budget.zooms


def _require_bool(name: str, value: object) -> None:
    """A Guard switch: a truthy string such as "no" must not turn a feature on."""
    if not isinstance(value, bool):
        raise InvalidConfigError(f"{name} must be a bool, got {value!r}")


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise UnsupportedInputTypeError(f"{name} must be a str, not {type(value).__name__}")
    return _check_text(value, True) if value else ""


def _check_text(text: object, has_image: bool) -> str:
    """The request's text, checked: a str (or UTF-8 bytes), valid Unicode, bounded, and not
    empty unless an image comes with it."""
    if text is None:
        text = ""
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextDecodeError(f"text bytes are not valid UTF-8 ({exc.reason} at byte "
                                  f"{exc.start}); pass a str or UTF-8 bytes") from exc
    if not isinstance(text, str):
        raise UnsupportedInputTypeError(
            f"text must be a str (or UTF-8 bytes), not {type(text).__name__}")
    text = str(text)  # a str subclass could override what the tokeniser sees
    try:  # a lone surrogate (e.g. a non-UTF-8 argv byte) is not text any model can read
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextDecodeError(f"text holds a lone surrogate at index {exc.start} ({exc.reason})"
                              "; it is not valid Unicode text") from exc
    if "\x00" in text:
        raise InvalidInputError("text contains NUL characters")
    if len(text) > MAX_TEXT_CHARS:
        raise TextTooLongError(
            f"text is {len(text):,} characters; the guard reads at most {MAX_TEXT_CHARS:,}. "
            "Split the request or raise vlmguard.guard.MAX_TEXT_CHARS deliberately.")
    if not text.strip() and not has_image:
        raise EmptyInputError("nothing to check: the text is empty and no image was given")
    return text


class Guard:
    """A cross-modal guard that rewrites risky requests into safe, useful prompts."""

    def __init__(self, bundle: Path, providers: Sequence[ProviderSpec] | None = None,
                 threshold: float | None = None, categories: Iterable[str] | None = None,
                 threads: int | None = None, ocr: bool = True,
                 policy: Policy | Mapping[str, Any] | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, ocr_side: int | None = None,
                 max_text_tokens: int = MAX_TEXT_TOKENS,
                 max_ocr_boxes: int = MAX_OCR_BOXES, ocr_zoom_side: int = ZOOM_SIDE,
                 category_thresholds: Mapping[str, float] | None = None,
                 monitor: bool = False,
                 vision_providers: Sequence[ProviderSpec] | None = None,
                 precedents: bool = False, spin_judge: bool = False,
                 signing_key: bytes | None = None) -> None:
        self._signing_key = _check_key(signing_key)
        # Every file below is read once, checked against the manifest's sha256, and those
        # same bytes are loaded: a modified bundle raises ModelLoadError, never loads.
        record = Bundle.load(bundle)
        if record.labels != label_names():
            raise ModelLoadError("the bundle's labels do not match this vlmguard version")
        cfg = record.config
        self.bundle_record = record
        self.bundle = record.directory
        if ocr_side and (not _is_int(ocr_side) or ocr_side < 1):
            raise InvalidConfigError(f"ocr_side must be a positive int, got {ocr_side!r}")
        det_side = ocr_side or cfg.det_limit_side
        rule = Rule.checked(threshold if threshold is not None else cfg.threshold,
                            categories, category_thresholds)
        self.threshold = rule.threshold
        self.categories = rule.categories
        self.category_thresholds = dict(rule.category_thresholds)
        _require_bool("monitor", monitor)
        self.monitor = monitor
        if not _is_int(max_pixels) or max_pixels < 1:
            raise InvalidConfigError(f"max_pixels must be a positive int, got {max_pixels!r}")
        if not _is_int(max_text_tokens) or max_text_tokens < 1:
            raise InvalidConfigError("max_text_tokens must be a positive int, "
                                     f"got {max_text_tokens!r}")
        if not _is_int(max_ocr_boxes) or max_ocr_boxes < 1:
            raise InvalidConfigError(f"max_ocr_boxes must be a positive int, "
                                     f"got {max_ocr_boxes!r}")
        _require_bool("ocr", ocr)
        if threads is not None and (not _is_int(threads) or not 1 <= threads <= MAX_THREADS):
            raise InvalidConfigError(f"threads must be None or an int from 1 to {MAX_THREADS}, "
                                     f"got {threads!r}")
        self.max_pixels = max_pixels
        self.max_text_tokens = max_text_tokens
        self.requested_providers = resolve_providers(providers)
        if isinstance(policy, Policy):
            self.policy = policy
        else:
            self.policy = Policy.from_text(record.read_text("policy.json"),
                                           str(self.bundle / "policy.json"))
            if policy:
                if not isinstance(policy, Mapping):
                    raise InvalidConfigError("policy must be a Policy or a mapping of "
                                             f"overrides, not {type(policy).__name__}")
                self.policy = self.policy.override(policy)
        model_file = self._pick_model_file()
        _require_bool("spin_judge", spin_judge)
        self.session = make_session(record.read(model_file),
                                    self.requested_providers, threads, name=model_file,
                                    spinning=spin_judge)
        self.model_file = model_file
        self._input_names = {i.name for i in self.session.get_inputs()}
        self._n_labels = len(label_names())
        width = self.session.get_outputs()[0].shape[-1]
        if not {"input_ids", "attention_mask"} <= self._input_names or (
                isinstance(width, int) and width != self._n_labels):
            raise ModelLoadError(f"{self.bundle}/{model_file} is not this bundle's judge: "
                                 f"inputs {sorted(self._input_names)}, {width} logits where "
                                 f"{self._n_labels} are labelled")
        # Whether requests share a model call: see JudgeConfig.batchable.
        self.batch_encoder = cfg.batchable
        tok_json = record.read_text("tokenizer.json")
        try:
            tokenizer = Tokenizer.from_str(tok_json)
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(f"{self.bundle}/tokenizer.json is not a tokenizer: {exc}"
                                 ) from exc
        self.encoder = SequenceEncoder(tokenizer, max_tokens=cfg.max_tokens)
        # The fewest evidence tokens a window holds ("no image.", the shortest evidence):
        # each text's windows are counted beside it before its image is read (_count).
        self._least_evidence = min(
            len(self.encoder.tokenize(verbalise_evidence((), "", False).text).ids),
            EVIDENCE_TOKENS)
        self._probe_judge(model_file)
        vision_dir = record.vision_dir()
        # With OCR on, the tagger runs beside text detection (see seeing.see): one thread
        # each keeps the two from fighting over two cores.
        # The vision models run on the CPU unless asked otherwise: on an H100 with ONNX
        # Runtime's CUDA provider they took over half a second per real photo (new input
        # shapes every request), against ~15 ms on two CPU cores (benchmarks/RESULTS.md).
        self.vision_providers = (resolve_providers(vision_providers)
                                 if vision_providers is not None else ["CPUExecutionProvider"])
        self.tagger = Tagger(vision_dir, providers=self.vision_providers,
                             threads=threads or (1 if ocr else None))
        self.ocr = (OCR(vision_dir, providers=self.vision_providers, threads=threads,
                        det_limit_side=det_side, max_boxes=max_ocr_boxes,
                        zoom_side=ocr_zoom_side)
                    if ocr else None)
        _require_bool("precedents", precedents)
        # A small INT8 encoder: the CPU runs it (its dynamic INT8 ops have no GPU kernels).
        # Its margin tau maps onto this judge's validated threshold (not a caller's override:
        # a stricter threshold makes the check stricter too).
        self.precedents = (Precedents(record.precedent_dir(), ["CPUExecutionProvider"],
                                      threads, judge_threshold=float(cfg.threshold))
                           if precedents else None)
        # The tagger's worker thread (see seeing.see); the executor starts it on first use.
        self._tagger_pool = (ThreadPoolExecutor(1, thread_name_prefix="vlmguard-tagger")
                             if ocr else None)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None,
                        providers: Sequence[ProviderSpec] | None = None, *,
                        threshold: float | None = None,
                        categories: Iterable[str] | None = None,
                        threads: int | None = None, ocr: bool = True,
                        policy: Policy | Mapping[str, Any] | None = None,
                        max_pixels: int = DEFAULT_MAX_PIXELS, ocr_side: int | None = None,
                        max_text_tokens: int = MAX_TEXT_TOKENS,
                        max_ocr_boxes: int = MAX_OCR_BOXES, ocr_zoom_side: int = ZOOM_SIDE,
                        category_thresholds: Mapping[str, float] | None = None,
                        monitor: bool = False,
                        vision_providers: Sequence[ProviderSpec] | None = None,
                        precedents: bool = False, spin_judge: bool = False,
                        signing_key: bytes | None = None) -> Guard:
        """Load a bundle (the one shipped in the wheel by default).

        ``providers`` (the judge's) defaults to TensorRT → CUDA → CPU, keeping those this
        onnxruntime offers; ``guard.providers`` says what actually runs. ``vision_providers``
        (the tagger's and OCR's) defaults to the CPU: on an H100 the OCR on CUDA (at fixed
        input shapes, planned at load in ~8 s) read typographic images faster than 16 CPU
        cores but ordinary photos slower (``benchmarks/RESULTS.md``).
        ``threshold`` and ``categories`` (the enforced hazard keys) default to the bundle's
        validated choice and to all thirteen categories. ``category_thresholds``
        ({key: t}) judges those categories alone, each by its own score against its own
        threshold; the rest are judged together against ``threshold``. ``monitor=True``
        reports verdicts but never rewrites (``result.action == "monitor"``, ``prompt`` is
        the original text). ``precedents=True`` adds the second opinion by meaning
        (:mod:`vlmguard.precedent`): more bare harmful asks caught, one or two more benign
        look-alikes in 100 flagged, ~1-4 ms more per text compared (``training/RUNS.md``,
        stop 26, has the measured trade-off); off by default. ``spin_judge=True`` lets the
        judge's threads busy-wait within a call (never after it): on an idle 2-core CPU text
        requests ~20 % and photos ~9 % faster, but with one core busy elsewhere the judge
        is 20-30 % slower at 64-128 tokens, and with both busy about twice as slow
        (``benchmarks/RESULTS.md``); for a machine whose cores the guard has to itself.

        ``threads`` caps ONNX Runtime's threads per model; ``ocr=False`` skips reading text
        in images; ``policy`` replaces the bundle's policy (a :class:`Policy`) or overrides
        parts of it (a mapping). Bounds: ``max_pixels`` per image, ``ocr_side`` (the OCR
        detector's long side, default the bundle's), ``max_text_tokens`` per request and
        ``max_ocr_boxes`` text boxes read per image. ``ocr_zoom_side``: the long side an
        image over ``vision.ZOOM_MIN_SIDE`` is detected at a second time, for the small text
        a VLM reads after its own downscale (0: never; saves ~0.4 s per large image on two
        cores where the VLM downstream sees images at 640 px or less).

        ``signing_key`` (bytes, at least ``MIN_KEY_BYTES``) signs the sections the guard
        renders, so it knows them again (:meth:`is_own_section`); by default a random key
        of this guard's own, so its sections are its own while it lives. Several replicas,
        or one that restarts, share a fixed key so that each knows the others' sections.
        The key is never logged nor shown (not in :meth:`info`).
        """
        return cls(Path(path) if path is not None else DEFAULT_DIR, providers,
                   threshold=threshold, categories=categories, threads=threads, ocr=ocr,
                   policy=policy, max_pixels=max_pixels, ocr_side=ocr_side,
                   max_text_tokens=max_text_tokens, max_ocr_boxes=max_ocr_boxes,
                   ocr_zoom_side=ocr_zoom_side, category_thresholds=category_thresholds,
                   monitor=monitor, vision_providers=vision_providers, precedents=precedents,
                   spin_judge=spin_judge, signing_key=signing_key)

    def _pick_model_file(self) -> str:
        first = self.requested_providers[0]
        name = first if isinstance(first, str) else first[0]
        gpu_file = self.bundle_record.config.model_gpu
        cpu_file = self.bundle_record.config.model_cpu
        if name in GPU_PROVIDERS:
            if self.bundle_record.has(gpu_file):
                return gpu_file
            log.warning("no %s in the bundle; the GPU runs the CPU model", gpu_file)
        return cpu_file

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The bundle's whole manifest as read (the typed fields: ``bundle_record``)."""
        return self.bundle_record.manifest

    @property
    def providers(self) -> list[str]:
        """The execution providers ONNX Runtime actually runs the rewriter model on."""
        return list(self.session.get_providers())

    @property
    def rule(self) -> Rule:
        """What is enforced, as :mod:`vlmguard.verdict` reads it."""
        return Rule(self.threshold, self.categories, self.category_thresholds)

    # ---- the pipeline --------------------------------------------------------------------
    def see(self, image: ImageInput, timings: dict[str, float] | None = None,
            rec_budget: RecBudget | None = None) -> Seen:
        """The vision stage alone: decode ``image`` and return what the guard sees in it.

        ``timings`` (if given) receives the milliseconds of decode and each vision model.
        ``rec_budget``: the OCR recognition it may spend (default a fresh ``REC_BUDGET``).
        Bad input raises its typed error; any other failure a GuardError (fail closed).
        """
        timings = {} if timings is None else timings
        try:
            t = time.perf_counter()
            views = load_views(image, max_pixels=self.max_pixels)
            timings["decode"] = ms_since(t)
            if views is None:
                return NOTHING
            return see(views[0], self.tagger, self.ocr, timings, pool=self._tagger_pool,
                       also_read=views[1:], budget=rec_budget)
        except VLMGuardError:
            raise
        except Exception as exc:
            raise GuardError(f"vision stage failed ({exc!r}); fail closed") from exc

    def _judge_windows(self, windows: Sequence[Window], timings: dict[str, float]
                       ) -> list[np.ndarray]:
        """Logits per window, at most ``MAX_BATCH_WINDOWS`` windows per model call.

        Every output is checked before it is trusted: NaN, inf, the wrong shape or a
        constant (e.g. all-zero) output raises GuardError instead of reading as "safe".
        """
        # Windows of similar length share a call, so a short last window is not padded
        # to the width of a full one. A judge with per-call activation scales (dynamic INT8,
        # not batchable) runs each window alone: in a shared call, another window and its
        # padding would move this one's scores, so a reading could lower the typed text's.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].encoding.ids))
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(windows)
        per_call = MAX_BATCH_WINDOWS if self.batch_encoder else 1
        for i in range(0, len(order), per_call):
            idx = order[i:i + per_call]
            chunk = [windows[j] for j in idx]
            t = time.perf_counter()
            feeds = self.encoder.batch(chunk)
            feeds = {k: v for k, v in feeds.items() if k in self._input_names}
            timings["tokenise"] = timings.get("tokenise", 0.0) + ms_since(t)
            t = time.perf_counter()
            logits = self.session.run(None, feeds)[0]
            timings["encoder"] = timings.get("encoder", 0.0) + ms_since(t)
            width = max(len(w.encoding.ids) for w in chunk)
            logits = check_output("rewriter logits", logits,
                                  (len(chunk), width, self._n_labels))
            check_not_constant("rewriter logits", logits)
            check_not_constant("rewriter logits (first token)", logits[:, 0, :])
            logits = logits.astype(np.float32)
            for j, k in enumerate(idx):
                out[k] = logits[j]
        return out

    def _probe_judge(self, model_file: str) -> None:
        """Run one window of the manifest's full ``max_tokens`` through the judge at load.

        A judge with fewer position embeddings than the manifest's window, or one that
        answers NaN or a constant, would otherwise load and then fail closed on every
        request; here it is a ModelLoadError. The call doubles as the judge's warm-up.
        """
        windows = self.encoder.encode("", "probe " * self.encoder.max_tokens, readings=False)
        try:
            self._judge_windows(windows[:1], {})
        except Exception as exc:  # ONNX Runtime raises its own types; GuardError on bad output
            raise ModelLoadError(f"{self.bundle}/{model_file} cannot read a "
                                 f"{self.encoder.max_tokens}-token window: {exc}") from exc

    def _check_tokens(self, text: str) -> Encoding:
        """The request's tokens, refused over the token budget before any window is built:
        as typed, and as read with its emoji named (2,000 emoji are one typed token and
        32,000 named: 350 windows, 5 s, before the s36 audit) or its over-long words split
        (:func:`~vlmguard.normalise.split_growth`), before it is read so."""
        tokens = self.encoder.tokenize(text)
        n = len(tokens.ids)
        if n > self.max_text_tokens:
            raise TextTooLongError(
                f"text is {n:,} tokens; the guard reads at most {self.max_text_tokens:,} "
                "(max_text_tokens). Split the request or raise the budget deliberately.")
        for read, how in ((n + named_growth(text), "over {:,} read with its emoji named"),
                          (n + split_growth(text),
                           "about {:,} read with its over-long words split")):
            if read > self.max_text_tokens:
                raise TextTooLongError(
                    f"text is {n:,} tokens as typed but {how.format(read)}; the guard reads "
                    f"at most {self.max_text_tokens:,} (max_text_tokens).")
        return tokens

    def _precedent(self, p: _Pending) -> tuple[Match, str, bool] | None:
        """The match of the request's text nearest harmful precedents, that text, and whether
        it was read from the image. None when the guard runs without precedents or the
        request holds no text."""
        if self.precedents is None:
            return None
        texts = p.precedent_texts()
        t = time.perf_counter()
        match = self.precedents.best([text for text, _ in texts])
        p.timings["precedent"] = ms_since(t)
        return None if match is None else (match, *texts[match.text_index])

    def _decide(self, p: _Pending) -> RewriteResult:
        """The result of one request whose windows have been scored.

        The judge decides first; a request it passes is compared with precedents
        (:mod:`vlmguard.precedent`), which can flag it but never clear what the judge flags.
        """
        rule = self.rule
        d = decide(p.logits, rule)
        found = None if d.unsafe else self._precedent(p)
        if found is not None:
            match, matched, from_image = found
            # a category the caller does not enforce, or a score under that category's
            # threshold, flags nothing; neighbours without a category defer to the judge's
            cat = match.category if match.category != "none" else argmax_named(
                "category", d.verdict.probs["category"], rule.categories)
            if cat in rule.categories and match.risk >= rule.category_thresholds.get(
                    cat, rule.threshold):
                return self._flag(p, d, (cat, match, matched, from_image))
        return self._flag(p, d) if d.unsafe else self._pass(p, d, found)

    def _pass(self, p: _Pending, d: Decision, found: tuple[Match, str, bool] | None
              ) -> RewriteResult:
        """A request the judge passed, forwarded as it is; unless it (or its image's text)
        imitates the guard's own section (verbatim it would read downstream as the guard's
        words) or its image was read in part: then it is rewritten between real markers
        (``safe`` False, category ``"none"``: no hazard was found)."""
        t = time.perf_counter()
        impersonates = (self.policy.imitates_guard(p.text)
                        or self.policy.imitates_guard(p.seen.ocr_text))
        # An image read in part (the box cap or the recognition budget) fails closed: what
        # went unread could be the harmful line, put after enough benign ones to spend it.
        why = (self.policy.IMPERSONATION if impersonates
               else self.policy.UNREAD if p.seen.ocr_truncated else None)
        prompt = (self.policy.render_impersonation(p.text, reasoning=why,
                                                   key=self._signing_key)
                  if why is not None and not self.monitor else p.text)
        p.timings["render"] = ms_since(t) if why is not None else 0.0
        p.timings["total"] = ms_since(p.t0)
        seen = p.seen
        result = RewriteResult(
            safe=True, risk=round(d.verdict.risk, 4), category="none", hazard_code=None,
            source="none", strategy="none", prompt=prompt,
            reasoning=Reasoning("No threat found.", "An ordinary request.",
                                "Pass the request through unchanged."),
            evidence=Evidence(seen.concepts, seen.scores, seen.ocr_text, "",
                              seen.ocr_truncated),
            timings_ms=p.timings,
            category_scores={c: round(v, 4) for c, v in d.category_scores.items()},
            precedent_score=None if found is None else round(found[0].score, 4))
        if why is None:
            return result
        return replace(result, safe=False, source="jailbreak" if impersonates else "typography",
                       reasoning=why, action="monitor" if self.monitor else "rewrite")

    def _flag(self, p: _Pending, d: Decision,
              precedent: tuple[str, Match, str, bool] | None = None) -> RewriteResult:
        """An unsafe result: the judge's own, or one its precedents made (``precedent``:
        the category, the match, the matched text and whether it was read from the image)."""
        rule = self.rule
        t = time.perf_counter()
        seen, text, v = p.seen, p.text, d.verdict
        scores = dict(d.category_scores)
        match = None
        if precedent is None:
            category = argmax_named("category", v.probs["category"], v.tripped)
            source = argmax_named("source", v.probs["source"], possible_sources(seen))
            span = span_text(p.windows[d.window], p.logits[d.window], text, p.evidence.text,
                             p.evidence.ocr_offset)
            risk = v.risk
        else:
            category, match, matched, from_image = precedent
            source = "typography" if from_image else "text"
            span = matched[:MAX_SPAN_CHARS]
            risk = max(v.risk, match.risk)
            scores[category] = max(scores[category], match.risk)
        strategy = argmax_named("strategy", v.probs["strategy"])
        j = Judgement(risk, category, source, strategy, seen.concepts, seen.ocr_text, span)
        prompt = text if self.monitor else self.policy.render(text, j, key=self._signing_key)
        reasoning = Reasoning(self.policy.threat_text(j), self.policy.intent_text(j),
                              self.policy.guidance_text(j))
        p.timings["render"] = ms_since(t)
        p.timings["total"] = ms_since(p.t0)
        return RewriteResult(
            safe=False, risk=round(risk, 4), category=category,
            hazard_code=HAZARD_CODES[category], source=source, strategy=strategy,
            prompt=prompt, reasoning=reasoning,
            evidence=Evidence(seen.concepts, seen.scores, seen.ocr_text, span,
                              seen.ocr_truncated),
            timings_ms=p.timings, category_scores={c: round(x, 4) for c, x in scores.items()},
            flagged_categories=flagged(category, scores, rule),
            action="monitor" if self.monitor else "rewrite",
            decided_by="judge" if match is None else "precedent",
            precedent_score=None if match is None else round(match.score, 4))

    # ---- own sections ------------------------------------------------------------------------
    def is_own_section(self, text: object) -> bool:
        """Whether ``text`` is exactly one section this guard (or one with the same
        ``signing_key``) rendered, unchanged, to the character."""
        return isinstance(text, str) and self.policy.is_own_section(text, self._signing_key)

    def _is_own(self, has_image: bool, text: object, context: str = "") -> bool:
        """Whether a request is one of the guard's own sections: sent without an image and
        without earlier turns (``context``), which its signature does not cover."""
        return not has_image and not context and self.is_own_section(text)

    def _kept(self, result: RewriteResult, text: str) -> RewriteResult:
        """The result of one of the guard's own sections sent again: judged as any text is,
        so its verdict is the judge's (a section quoting a flagged ask is flagged again, for
        a deployment that blocks or only moderates), but never wrapped again: its prompt is
        the section as sent. Wrapped only for imitating the guard's words (they are its
        own), it passes, ``decided_by`` ``"signature"``."""
        if result.reasoning == self.policy.IMPERSONATION:
            return replace(result, safe=True, source="none", prompt=text, action="pass",
                           reasoning=ALREADY_GUARDED, decided_by="signature")
        return replace(result, prompt=text)

    # ---- public calls ----------------------------------------------------------------------
    def rewrite(self, image: ImageInput = None, text: str | bytes | None = "", *,
                context: Sequence[str] = ()) -> RewriteResult:
        """Check one request; return the verdict and the prompt to send downstream.

        ``context``: the conversation's earlier user turns, oldest first. The VLM reads them
        with the request, so the guard reads the last ``MAX_CONTEXT_TURNS`` of them before
        it too, as one more reading: an ask split over turns ("'the project' means a pipe
        bomb" ... "how do I build the project?") is judged whole. The prompt still holds
        ``text`` alone.

        A ``text`` that is one of this guard's own sections, unchanged, sent without an
        image or ``context``, is judged as any text but never wrapped again: its prompt is
        the section as sent (see :meth:`is_own_section`).
        """
        return self.rewrite_batch([(image, text)], context=context)[0]

    async def arewrite(self, image: ImageInput = None, text: str | bytes | None = "", *,
                       context: Sequence[str] = (),
                       executor: Executor | None = None) -> RewriteResult:
        """``rewrite`` in a worker thread (``executor``, or the loop's default), so an event
        loop keeps serving while the models run (ONNX Runtime releases the GIL)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(
            self.rewrite, image, text, context=context))

    def rewrite_messages(self, messages: Sequence[Mapping[str, Any]], *,
                         limits: FetchLimits | None = None, inline_images: bool = False
                         ) -> MessagesResult:
        """Check an OpenAI-style chat (``messages``) and return the messages to forward.

        The last user turn's text is judged against every image of the conversation (data:
        or http(s) URLs, fetched within ``limits``); when it is rewritten its text parts
        become the refined prompt and its image parts stay. See :mod:`vlmguard.messages`.
        """
        from .messages import rewrite_messages

        return rewrite_messages(self, messages, limits=limits, inline_images=inline_images)

    async def arewrite_messages(self, messages: Sequence[Mapping[str, Any]], *,
                                limits: FetchLimits | None = None,
                                inline_images: bool = False,
                                executor: Executor | None = None) -> MessagesResult:
        """``rewrite_messages`` in a worker thread (URL fetches included)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(
            self.rewrite_messages, messages, limits=limits, inline_images=inline_images))

    def rewrite_batch(self, items: Iterable[tuple[ImageInput, str | bytes | None]], *,
                      context: Sequence[str] = ()) -> list[RewriteResult]:
        """Check many requests (at most ``MAX_BATCH_ITEMS``); the rewriter model runs once
        over all of them. They share one call's budgets (``MAX_CALL_WINDOWS``,
        ``MAX_CALL_IMAGES``, ``REC_CALL_BUDGET``), and every text is checked and counted
        before any image is decoded.

        ``context`` (earlier user turns, see :meth:`rewrite`) is read with every item."""
        earlier = _check_context(context)
        if isinstance(items, str | bytes | bytearray | memoryview):
            raise UnsupportedInputTypeError("rewrite_batch takes an iterable of (image, text) "
                                            f"pairs, not {type(items).__name__}")
        try:
            items = list(itertools.islice(items, MAX_BATCH_ITEMS + 1))
        except TypeError as exc:
            raise UnsupportedInputTypeError("rewrite_batch takes an iterable of (image, text) "
                                            f"pairs: {exc}") from exc
        if len(items) > MAX_BATCH_ITEMS:
            raise BudgetExceededError(f"rewrite_batch takes at most {MAX_BATCH_ITEMS} requests "
                                      "a call; split the list")
        pairs = []
        for item in items:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise UnsupportedInputTypeError("rewrite_batch takes (image, text) pairs")
            pairs.append((item[0], item[1]))
        call = CallBudget()
        call.take_images(sum(image is not None for image, _ in pairs))
        asks = [(image is not None, text) for image, text in pairs]
        images = [image for image, _ in pairs if image is not None]
        return self._rewrite_call(call, asks, lambda: images, earlier, ())[0]

    def rewrite_call(self, asks: Sequence[tuple[bool, str | bytes | None]],
                     images: Callable[[], Sequence[ImageInput]], *,
                     context: Sequence[str] = (), alone: Sequence[str] = ()
                     ) -> tuple[list[RewriteResult], list[RewriteResult]]:
        """Judge requests and texts together under one call's budget (:class:`CallBudget`),
        for a caller that fetches its images itself (``rewrite_messages`` does;
        ``rewrite_batch`` is this call with its images in hand).

        ``asks`` are requests as (whether an image comes with it, its text), each read after
        ``context`` (see :meth:`rewrite`); ``alone`` are texts judged with no image and no
        context (a chat's history). Every cheap check runs first (the image count, the
        context, each text and the windows it needs), so a call that cannot be judged is
        refused (``BudgetExceededError``) before ``images`` is called: it returns the images
        of the asks that have one, in order, and is where they are fetched.

        Returns the results of ``asks`` and of ``alone``, in order; an own section is judged
        but not wrapped again (:meth:`is_own_section`).
        """
        if any(not isinstance(has_image, bool | np.bool_) for has_image, _ in asks):
            raise UnsupportedInputTypeError("each ask is (has_image, text): has_image a bool")
        if isinstance(alone, str | bytes):
            raise UnsupportedInputTypeError("alone must be a sequence of texts, not one text")
        call = CallBudget()
        call.take_images(sum(bool(has_image) for has_image, _ in asks))
        return self._rewrite_call(call, asks, images, _check_context(context), alone)

    def _rewrite_call(self, call: CallBudget, asks: Sequence[tuple[bool, object]],
                      images: Callable[[], Sequence[ImageInput]], context: str,
                      alone: Sequence[object]
                      ) -> tuple[list[RewriteResult], list[RewriteResult]]:
        """:meth:`rewrite_call` once ``call`` holds its images and ``context`` is checked
        (``rewrite_batch`` checks its context before its items, so it starts here)."""
        # Every text and the windows it needs (a lower bound per image) are counted before
        # any image is fetched or decoded, or any model runs.
        pending = self._prepare(asks, context, call)
        told = self._prepare([(False, text) for text in alone], "", call)
        fetched = list(images())
        wanted = sum(bool(has_image) for has_image, _ in asks)
        if len(fetched) != wanted:
            raise InvalidInputError(f"images() returned {len(fetched)} images for the "
                                    f"{wanted} asks that have one")
        if any(image is None for image in fetched):
            raise InvalidInputError("images() returned None for an ask that has an image")
        given = iter(fetched)
        self._see_all(pending, [next(given) if has_image else None for has_image, _ in asks],
                      call)
        judged = self._judge_all(pending + told, call)
        results, verdicts = judged[:len(pending)], judged[len(pending):]
        # the guard's own sections keep their verdict and are not wrapped again
        return ([self._kept(r, p.text) if self._is_own(has_image, p.text, context) else r
                 for r, p, (has_image, _) in zip(results, pending, asks, strict=True)],
                [self._kept(r, p.text) if self._is_own(False, p.text) else r
                 for r, p in zip(verdicts, told, strict=True)])

    def rewrite_seen(self, text: str, concepts: Sequence[str] = (), ocr_text: str = "",
                     has_image: bool = True) -> RewriteResult:
        """Judge a request from evidence found elsewhere (your own tagger/OCR, or a dataset).

        ``concepts`` are visual concept words, best first; ``ocr_text`` the text in the image.
        They must fit ``EVIDENCE_TOKENS - MIN_OCR_TOKENS`` tokens, so the image text always
        has room beside them in every window (:meth:`SequenceEncoder.fit_concepts`); more is
        refused (``InvalidInputError``), not read in part: a concept left out could be the
        one that makes the request harmful. The bundled tagger's three always fit.
        """
        if not isinstance(has_image, bool | np.bool_):
            raise UnsupportedInputTypeError(
                f"has_image must be a bool, not {type(has_image).__name__}")
        if isinstance(concepts, str | bytes) or not isinstance(concepts, Sequence):
            raise UnsupportedInputTypeError("concepts must be a sequence of str (e.g. a list), "
                                            f"not {type(concepts).__name__}")
        words = tuple(_check_str("each concept", c) for c in concepts)
        if len(words) > 64:
            raise InvalidInputError(f"{len(words)} concepts given; at most 64 are read")
        ocr = _check_str("ocr_text", ocr_text)
        evidence_chars = sum(map(len, words)) + len(ocr)
        if evidence_chars > MAX_TEXT_CHARS:
            raise TextTooLongError(f"concepts and ocr_text hold {evidence_chars:,} characters; "
                                   f"at most {MAX_TEXT_CHARS:,} are read")
        fit = len(self.encoder.fit_concepts(words)) if has_image else len(words)
        if fit < len(words):
            raise InvalidInputError(
                f"the {len(words)} concepts do not fit the {EVIDENCE_TOKENS - MIN_OCR_TOKENS} "
                f"tokens the guard reads them in (beside the image text); {fit} do: send "
                "fewer, the best first")
        if not has_image:
            words = ()  # without an image there is nothing they describe: not read
        call = CallBudget()
        p = self._prepare([(bool(has_image), text)], "", call)[0]
        p.seen = Seen(bool(has_image), words, (), ocr if has_image else "")
        result = self._judge_all([p], call)[0]
        own = not words and self._is_own(bool(has_image), p.text)
        return self._kept(result, p.text) if own else result

    def _prepare(self, items: Sequence[tuple[bool, object]], context: str, call: CallBudget
                 ) -> list[_Pending]:
        """Requests (whether an image comes with it, its text) checked and counted before any
        image is decoded or model runs: every text first (type, size), then each text's
        tokens and readings (computed once per distinct text) and the windows they need
        beside the shortest evidence, taken from ``call`` (``BudgetExceededError``).

        An image's windows are counted here at their least (its text unread); its exact
        count is taken in :meth:`_judge_all`, once it is read."""
        t0 = time.perf_counter()
        texts = [_check_text(text, has_image) for has_image, text in items]
        pending = [_Pending(text, NOTHING, {}, t0, context) for text in texts]
        try:
            self._count(pending, context, call)
        except VLMGuardError:
            raise
        except Exception as exc:
            raise GuardError(f"tokenising failed ({exc!r}); fail closed") from exc
        return pending

    def _count(self, pending: Sequence[_Pending], context: str, call: CallBudget) -> None:
        """Each request's readings and the windows they need at least, taken from ``call``."""
        least = self._least_evidence
        cache: dict[str, tuple[list[tuple[str, Encoding]], list[tuple[str, Encoding]]]] = {}
        for k, p in enumerate(pending):
            t = time.perf_counter()
            if p.text not in cache:
                tokens = self._check_tokens(p.text)
                requests = self.encoder.requests(p.text, request_tokens=tokens,
                                                 token_budget=self.max_text_tokens)
                with_context = (self.encoder.requests(f"{context}\n{p.text}", readings=False)
                                if context else [])
                cache[p.text] = requests, with_context
            p.requests, p.context_requests = cache[p.text]
            p.reserved = (self.encoder.count(p.requests, least)
                          + self.encoder.count(p.context_requests, least))
            if p.reserved > MAX_WINDOWS:
                raise BudgetExceededError(
                    f"this request needs at least {p.reserved:,} encoder windows (text x its "
                    f"readings); the per-request budget is {MAX_WINDOWS}. Shorten the text.")
            try:
                call.take_windows(p.reserved)
            except BudgetExceededError as exc:  # say how much of the call would fit
                raise BudgetExceededError(f"{exc} The first {k} of these {len(pending)} texts "
                                          "fit.") from None
            p.timings["tokenise"] = ms_since(t)

    def _see_all(self, pending: Sequence[_Pending], images: Sequence[ImageInput],
                 call: CallBudget) -> None:
        """The vision stage of each request with an image, its recognition taken from the
        call's (``REC_CALL_BUDGET``, at most ``REC_BUDGET`` an image)."""
        for p, image in zip(pending, images, strict=True):
            if image is not None:
                budget = call.rec_budget()
                given = copy.copy(budget)
                p.t0 = time.perf_counter()  # its total: its own vision, then the judge
                p.seen = self.see(image, p.timings, rec_budget=budget)
                call.take_recognition(budget, given)

    def _judge_all(self, pending: Sequence[_Pending], call: CallBudget
                   ) -> list[RewriteResult]:
        try:
            for p in pending:
                # concepts always fit beside the image text (the bundled tagger's three do;
                # rewrite_seen refuses more): the encoder refuses a head that does not
                ev = verbalise_evidence(p.seen.concepts, p.seen.ocr_text, p.seen.has_image)
                t = time.perf_counter()
                # what is left to this request: the call's, with what was counted for it
                left = min(MAX_WINDOWS, call.windows + p.reserved)
                windows = self.encoder.encode(ev.text, p.text, ev.ocr_offset,
                                              requests=p.requests, max_windows=left)
                if p.context:  # the request read after the conversation's last user turns
                    windows += self.encoder.encode(ev.text, "", ev.ocr_offset,
                                                   requests=p.context_requests,
                                                   max_windows=left - len(windows))
                if not windows:
                    raise GuardError("the encoder produced no windows; fail closed")
                if len(windows) > MAX_WINDOWS:
                    raise BudgetExceededError(
                        f"this request needs {len(windows):,} encoder windows (text x image "
                        f"text); the per-request budget is {MAX_WINDOWS}. Shorten the text.")
                call.windows -= len(windows) - p.reserved
                p.reserved = len(windows)
                p.timings["tokenise"] = p.timings.get("tokenise", 0.0) + ms_since(t)
                p.evidence, p.windows = ev, windows
            # Only then the extra readings of image text, so what one request needs is never
            # spent on another's extras, whatever the items' order: the fewest first, each
            # within an equal share of what the call has left. A request whose readings do
            # not all fit is marked read in part (``ocr_truncated``), which fails closed as
            # any image read in part: the reading left out could be the harmful one.
            t = time.perf_counter()
            extras = sorted(((p, *self._image_text_windows(p)) for p in pending
                             if p.seen.ocr_text.strip()), key=lambda e: len(e[1]))
            for n, (p, extra, complete) in enumerate(extras):
                share = max(call.windows // (len(extras) - n), 0)
                if len(extra) > share or not complete:
                    p.seen = replace(p.seen, ocr_truncated=True)
                    extra = extra[:share]
                call.windows -= len(extra)
                p.reserved += len(extra)
                p.windows = p.windows + extra
            if extras:
                spent = ms_since(t) / len(extras)
                for p, _, _ in extras:
                    p.timings["tokenise"] = p.timings.get("tokenise", 0.0) + spent
            if not pending:
                return []
            if self.batch_encoder:
                shared: dict[str, float] = {}
                logits = self._judge_windows([w for p in pending for w in p.windows], shared)
                k = 0
                for p in pending:
                    p.logits = logits[k:k + len(p.windows)]
                    k += len(p.windows)
                    p.timings["encoder"] = shared["encoder"] / len(pending)
            else:
                for p in pending:
                    p.logits = self._judge_windows(p.windows, p.timings)
            return [self._decide(p) for p in pending]
        except VLMGuardError:
            raise
        except Exception as exc:
            raise GuardError(f"rewriter model failed ({exc!r}); fail closed") from exc

    def _image_text_windows(self, p: _Pending) -> tuple[list[Window], bool]:
        """Windows for ``p``'s image text read as typed text is (normalise.readings, line by
        line: spaces the OCR lost, disguises, another tense, an ask put as others'), within
        half the per-request budget, and whether every line got its readings, all of them
        fitting."""
        p.ocr_readings = line_readings(p.seen.ocr_text, self.encoder.split_words)
        room = MAX_WINDOWS // 2 - len(p.windows)
        extra: list[Window] = []
        for reading in p.ocr_readings:
            again = verbalise_evidence(p.seen.concepts, reading, p.seen.has_image)
            try:
                extra += self.encoder.encode(again.text, p.text, again.ocr_offset,
                                             requests=p.requests,
                                             max_windows=room - len(extra))
            except BudgetExceededError:  # counted before built: nothing was added
                return extra, False
        return extra, reads_every_line(p.seen.ocr_text)

    def info(self) -> dict[str, Any]:
        from . import __version__, preprocess

        return {
            "version": __version__,
            "model": self.bundle_record.name,
            "model_file": self.model_file,
            "bundle": str(self.bundle),
            "providers": self.providers,
            "vision_providers": {"tagger": self.tagger.providers,
                                 "ocr": self.ocr.providers if self.ocr else []},
            "native_preprocessing": preprocess.NATIVE,
            "threshold": self.threshold,
            "categories": sorted(self.categories),
            "category_thresholds": dict(self.category_thresholds),
            "monitor": self.monitor,
            "precedents": None if self.precedents is None else {
                "k": self.precedents.spec.k, "tau": self.precedents.spec.tau,
                "harmful": len(self.precedents.harmful), "benign": len(self.precedents.benign)},
        }


def possible_sources(seen: Seen) -> tuple[str, ...]:
    """Where a threat can come from in this request: the source head is read among these
    only, so a text-only request is never told to the VLM as "text written inside the image"
    (markup in plain text could tip the head that way)."""
    if not seen.has_image:
        return ("text", "jailbreak")
    if not seen.ocr_text:
        return ("text", "image", "cross_modal", "jailbreak")
    return ("text", "image", "typography", "cross_modal", "jailbreak")


def _check_context(context: object) -> str:
    """The last ``MAX_CONTEXT_TURNS`` earlier user turns as one text, at most
    ``MAX_CONTEXT_CHARS`` (their end), or "" for none."""
    if isinstance(context, str | bytes) or not isinstance(context, Sequence):
        raise UnsupportedInputTypeError("context must be a sequence of str (earlier user "
                                        f"turns, oldest first), not {type(context).__name__}")
    turns = [_check_str("each context turn", t).strip() for t in context]
    joined = "\n".join(t for t in turns[-MAX_CONTEXT_TURNS:] if t)
    return joined[-MAX_CONTEXT_CHARS:]


def _check_key(key: object) -> bytes:
    """The guard's signing key: the caller's (bytes, at least ``MIN_KEY_BYTES``), or a
    fresh random one. Errors name its type and length, never its value."""
    if key is None:
        return secrets.token_bytes(32)
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        what = (f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__)
        raise InvalidConfigError(f"signing_key must be bytes, at least {MIN_KEY_BYTES} of them "
                                 f"(e.g. secrets.token_bytes(32)), not {what}")
    return key


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


"""The guard: load a bundle once, then ``rewrite(image, text)`` cheaply, many times.

Data flows one way: input → image → vision (tagger, OCR) → sequence → model → render →
result. A confident benign verdict returns the text unchanged. Any failure inside the
pipeline raises :class:`~vlmguard.errors.GuardError`: callers must fail closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from .bundle import load_manifest, read_verified, read_verified_text, section
from .encoder import (
    HEADS,
    MAX_TOKENS,
    SequenceEncoder,
    Window,
    concept_words,
    head_slices,
    label_names,
    softmax,
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
from .image import ImageInput, load_image
from .policy import Judgement, Policy
from .result import Evidence, Reasoning, RewriteResult
from .runtime import ProviderSpec, make_session, resolve_providers
from .taxonomy import CATEGORIES, HAZARD_CODES
from .vision import (
    MAX_OCR_BOXES,
    OCR,
    Concept,
    Tagger,
    check_not_constant,
    check_output,
    lines_text,
)

if TYPE_CHECKING:
    from .messages import FetchLimits, MessagesResult

log = logging.getLogger("vlmguard")

DEFAULT_BUNDLE = Path(__file__).parent / "models" / "default"
MAX_TEXT_CHARS = 100_000
MAX_TEXT_TOKENS = 8_192
"""The request's token budget. Cost follows tokens, not characters (100,000 CJK characters are
~100,000 tokens but 100,000 English ones ~22,000), so the budget is counted in tokens: about
90 encoder windows (~35,000 characters of English), a few seconds on a small CPU."""
MAX_WINDOWS = 512
"""Encoder windows one request may cost (request windows x readings x image-text slices):
the time bound, about 10-15 ms a window on one core."""
MAX_BATCH_WINDOWS = 16
"""Encoder windows per ONNX Runtime call: bounds the activations held at once, whatever the
request's length or the batch's size."""
GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class _Seen:
    """Evidence from the vision stage for one request."""

    has_image: bool
    concepts: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    ocr_text: str = ""
    ocr_truncated: bool = False


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise UnsupportedInputTypeError(f"{name} must be a str, not {type(value).__name__}")
    return _check_text(value, True) if value else ""


def _check_text(text: object, has_image: bool) -> str:
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
                 max_pixels: int = 40_000_000, ocr_side: int | None = None,
                 max_text_tokens: int = MAX_TEXT_TOKENS,
                 max_ocr_boxes: int = MAX_OCR_BOXES,
                 category_thresholds: Mapping[str, float] | None = None,
                 monitor: bool = False) -> None:
        bundle = Path(bundle)
        # Every file below is read once, checked against the manifest's sha256, and those
        # same bytes are loaded: a modified bundle raises ModelLoadError, never loads.
        self.manifest: dict[str, Any] = load_manifest(bundle)
        cfg = section(self.manifest, "config")
        if self.manifest.get("labels") != label_names():
            raise ModelLoadError("the bundle's labels do not match this vlmguard version")
        self.bundle = bundle
        try:
            bundle_threshold = float(cfg.get("threshold", 0.5))
            max_tokens = int(cfg.get("max_tokens", MAX_TOKENS))
            det_side = int(ocr_side or cfg.get("det_limit_side", 640))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{bundle}/manifest.json: malformed config: {exc}") from exc
        if not 0.0 < bundle_threshold < 1.0 or not 16 <= max_tokens <= 4096:
            raise ModelLoadError(f"{bundle}/manifest.json: config out of range")
        self.threshold = _check_threshold(threshold if threshold is not None
                                          else bundle_threshold)
        self.categories = self._check_categories(categories)
        self.category_thresholds = self._check_category_thresholds(category_thresholds)
        if not isinstance(monitor, bool):
            raise InvalidConfigError(f"monitor must be a bool, got {monitor!r}")
        self.monitor = monitor
        if not _is_int(max_pixels) or max_pixels < 1:
            raise InvalidConfigError(f"max_pixels must be a positive int, got {max_pixels!r}")
        if not _is_int(max_text_tokens) or max_text_tokens < 1:
            raise InvalidConfigError("max_text_tokens must be a positive int, "
                                     f"got {max_text_tokens!r}")
        if not _is_int(max_ocr_boxes) or max_ocr_boxes < 1:
            raise InvalidConfigError(f"max_ocr_boxes must be a positive int, "
                                     f"got {max_ocr_boxes!r}")
        self.max_pixels = max_pixels
        self.max_text_tokens = max_text_tokens
        self.requested_providers = resolve_providers(providers)
        if isinstance(policy, Policy):
            self.policy = policy
        else:
            self.policy = Policy.from_text(read_verified_text(bundle, self.manifest,
                                                              "policy.json"),
                                           str(bundle / "policy.json"))
            if policy:
                if not isinstance(policy, Mapping):
                    raise InvalidConfigError("policy must be a Policy or a mapping of "
                                             f"overrides, not {type(policy).__name__}")
                self.policy = self.policy.override(policy)
        model_file = self._pick_model_file(cfg)
        self.session = make_session(read_verified(bundle, self.manifest, model_file),
                                    self.requested_providers, threads, name=model_file)
        self.model_file = model_file
        self._input_names = {i.name for i in self.session.get_inputs()}
        # A model with dynamically quantised activations uses one scale per call, so
        # padding a batch would change each request's verdict: such a model (the manifest
        # says "batchable": false) reads one request per call.
        self.batch_encoder = bool(cfg.get("batchable", False))
        tok_json = read_verified_text(bundle, self.manifest, "tokenizer.json")
        try:
            tokenizer = Tokenizer.from_str(tok_json)
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(f"{bundle}/tokenizer.json is not a tokenizer: {exc}") from exc
        self.encoder = SequenceEncoder(tokenizer, max_tokens=max_tokens)
        # A bundle may ship its own vision models; otherwise it uses the default ones.
        vision_dir = bundle / "vision"
        if not vision_dir.is_dir():
            vision_dir = DEFAULT_BUNDLE / "vision"
        # With OCR on, the tagger runs beside text detection (see _see): one thread each
        # keeps the two from fighting over two cores.
        self.tagger = Tagger(vision_dir, providers=self.requested_providers,
                             threads=threads or (1 if ocr else None))
        self.ocr = (OCR(vision_dir, providers=self.requested_providers, threads=threads,
                        det_limit_side=det_side, max_boxes=max_ocr_boxes)
                    if ocr else None)
        self._slices = head_slices()
        self._n_labels = len(label_names())
        self.concurrent_vision = True
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, providers:
                        Sequence[ProviderSpec] | None = None, **kwargs: Any) -> Guard:
        """Load a bundle (the one shipped in the wheel by default).

        ``providers`` defaults to TensorRT → CUDA → CPU, keeping those this onnxruntime
        offers; ``guard.providers`` says what actually runs. ``threshold`` and
        ``categories`` (the enforced hazard keys) default to the bundle's validated choice
        and to all thirteen categories. ``category_thresholds`` ({key: t}) judges those
        categories alone, each by its own score against its own threshold; the rest are
        judged together against ``threshold``. ``monitor=True`` reports verdicts but never
        rewrites (``result.action == "monitor"``, ``prompt`` is the original text).
        """
        return cls(Path(path) if path is not None else DEFAULT_BUNDLE, providers, **kwargs)

    @staticmethod
    def _check_categories(categories: Iterable[str] | None) -> frozenset[str]:
        all_cats = frozenset(c for c in CATEGORIES if c != "none")
        if categories is None:
            return all_cats
        if isinstance(categories, str | bytes):
            raise InvalidConfigError("categories must be a collection of category keys, "
                                     f"not one {type(categories).__name__}")
        try:
            chosen = frozenset(categories)
        except TypeError as exc:
            raise InvalidConfigError(f"categories must be a collection of category keys: "
                                     f"{exc}") from exc
        unknown = chosen - all_cats
        if unknown:
            raise InvalidConfigError(f"unknown categories {sorted(map(repr, unknown))}; "
                                     f"choose from {sorted(all_cats)}")
        if not chosen:
            raise InvalidConfigError("enforce at least one category")
        return chosen

    def _check_category_thresholds(self, given: Mapping[str, float] | None
                                   ) -> dict[str, float]:
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            raise InvalidConfigError("category_thresholds must be a mapping of category key "
                                     f"to threshold, not {type(given).__name__}")
        out = {}
        for key, value in given.items():
            if key not in self.categories:
                raise InvalidConfigError(
                    f"category_thresholds names {key!r}, which is not an enforced category; "
                    f"choose from {sorted(self.categories)}")
            out[key] = _check_threshold(value)
        return out

    def _pick_model_file(self, cfg: Mapping[str, Any]) -> str:
        first = self.requested_providers[0]
        name = first if isinstance(first, str) else first[0]
        gpu_file = str(cfg.get("model_gpu", "model.fp16.onnx"))
        cpu_file = str(cfg.get("model_cpu", "model.cpu.onnx"))
        if name in GPU_PROVIDERS:
            if gpu_file in self.manifest["files"] and (self.bundle / gpu_file).is_file():
                return gpu_file
            log.warning("no %s in the bundle; the GPU runs the CPU model", gpu_file)
        return cpu_file

    @property
    def providers(self) -> list[str]:
        """The execution providers ONNX Runtime actually runs the rewriter model on."""
        return list(self.session.get_providers())

    # ---- the pipeline --------------------------------------------------------------------
    def _see(self, image: ImageInput, timings: dict[str, float]) -> _Seen:
        t = time.perf_counter()
        rgb = load_image(image, max_pixels=self.max_pixels)
        timings["decode"] = _ms(t)
        if rgb is None:
            return _Seen(False)
        ocr_text, truncated = "", False
        boxes: list[tuple[tuple[int, int, int, int], float]] = []
        if self.ocr is None or not self.concurrent_vision:
            tags = self._tag(rgb, timings)
            if self.ocr is not None:
                boxes = self._detect(rgb, timings)
        else:
            # The tagger runs on a worker thread while text detection (the gate, then full
            # detection where it passes) runs here: ONNX Runtime releases the GIL, so on two
            # cores the tagger's time hides behind detection's. Each model sees the same
            # input as in turn, so the outputs are the same.
            pending = self._vision_pool().submit(self._tag, rgb, timings)
            try:
                boxes = self._detect(rgb, timings)
            finally:
                tags = pending.result()  # the tagger's error, if any, wins as if it ran first
        words = concept_words(tags)
        scores = tuple(round(c.score, 4) for c in tags[: len(words)])
        if self.ocr is not None and boxes:
            t = time.perf_counter()
            lines, truncated = self.ocr.read_capped(rgb, boxes)
            ocr_text = lines_text(lines)
            timings["ocr_rec"] = _ms(t)
        return _Seen(True, words, scores, ocr_text, truncated)

    def _tag(self, rgb: np.ndarray, timings: dict[str, float]) -> list[Concept]:
        t = time.perf_counter()
        tags = self.tagger(rgb)
        timings["tagger"] = _ms(t)
        return tags

    def _detect(self, rgb: np.ndarray, timings: dict[str, float]
                ) -> list[tuple[tuple[int, int, int, int], float]]:
        assert self.ocr is not None
        t = time.perf_counter()
        boxes = self.ocr.detect(rgb)
        timings["ocr_det"] = _ms(t)
        return boxes

    def _vision_pool(self) -> ThreadPoolExecutor:
        """The worker thread the tagger runs on (started on first use)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="vlmguard-tagger")
            return self._pool

    def _judge_windows(self, windows: Sequence[Window], timings: dict[str, float]
                       ) -> list[np.ndarray]:
        """Logits per window, at most ``MAX_BATCH_WINDOWS`` windows per model call.

        Every output is checked before it is trusted: NaN, inf, the wrong shape or a
        constant (e.g. all-zero) output raises GuardError instead of reading as "safe".
        """
        # Windows of similar length share a call, so a short last window is not padded
        # to the width of a full one.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].encoding.ids))
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(windows)
        for i in range(0, len(order), MAX_BATCH_WINDOWS):
            idx = order[i:i + MAX_BATCH_WINDOWS]
            chunk = [windows[j] for j in idx]
            t = time.perf_counter()
            feeds = self.encoder.batch(chunk)
            feeds = {k: v for k, v in feeds.items() if k in self._input_names}
            timings["tokenise"] = timings.get("tokenise", 0.0) + _ms(t)
            t = time.perf_counter()
            logits = self.session.run(None, feeds)[0]
            timings["encoder"] = timings.get("encoder", 0.0) + _ms(t)
            width = max(len(w.encoding.ids) for w in chunk)
            logits = check_output("rewriter logits", logits,
                                  (len(chunk), width, self._n_labels))
            check_not_constant("rewriter logits", logits)
            check_not_constant("rewriter logits (first token)", logits[:, 0, :])
            logits = logits.astype(np.float32)
            for j, k in enumerate(idx):
                out[k] = logits[j]
        return out

    def _check_tokens(self, text: str) -> None:
        """Refuse a request over the token budget before any window is built."""
        n = len(self.encoder.tokenizer.encode(text, add_special_tokens=False).ids)
        if n > self.max_text_tokens:
            raise TextTooLongError(
                f"text is {n:,} tokens; the guard reads at most {self.max_text_tokens:,} "
                "(max_text_tokens). Split the request or raise the budget deliberately.")

    def _decide(self, text: str, seen: _Seen, windows: Sequence[Window],
                logits: Sequence[np.ndarray], evidence_text: str, ocr_offset: int,
                timings: dict[str, float]) -> RewriteResult:
        sl = self._slices
        best, best_key, best_probs = 0, (False, -1.0), {}
        best_tripped: frozenset[str] = frozenset()
        best_risk = 0.0
        scores = dict.fromkeys(CATEGORIES[1:], 0.0)
        for i, lg in enumerate(logits):
            probs = {h: softmax(lg[0, sl[h]]) for h in ("safety", "category", "source",
                                                         "strategy")}
            window_scores = self._category_scores(probs)
            for c, v in window_scores.items():
                scores[c] = max(scores[c], v)
            risk, tripped, level = self._verdict(probs, window_scores)
            if (bool(tripped), level) > best_key:
                best, best_key, best_probs = i, (bool(tripped), level), probs
                best_risk, best_tripped = risk, tripped
        category_scores = {c: round(v, 4) for c, v in scores.items()}
        t = time.perf_counter()
        if not best_tripped:
            result = RewriteResult(
                safe=True, risk=round(best_risk, 4), category="none", hazard_code=None,
                source="none", strategy="none", prompt=text,
                reasoning=Reasoning("No threat found.", "An ordinary request.",
                                    "Pass the request through unchanged."),
                evidence=Evidence(seen.concepts, seen.scores, seen.ocr_text, "",
                                  seen.ocr_truncated),
                timings_ms=timings, category_scores=category_scores)
            timings["render"] = _ms(t)
            return result
        category = self._argmax_named("category", best_probs["category"], best_tripped)
        flagged = (category,) + tuple(sorted(
            c for c, th in self.category_thresholds.items() if c != category and scores[c] >= th))
        source = self._argmax_named("source", best_probs["source"])
        strategy = self._argmax_named("strategy", best_probs["strategy"])
        span = self._span_text(windows[best], logits[best], text, evidence_text, ocr_offset)
        j = Judgement(best_risk, category, source, strategy, seen.concepts, seen.ocr_text, span)
        prompt = text if self.monitor else self.policy.render(text, j)
        timings["render"] = _ms(t)
        return RewriteResult(
            safe=False, risk=round(best_risk, 4), category=category,
            hazard_code=HAZARD_CODES[category], source=source, strategy=strategy,
            prompt=prompt,
            reasoning=Reasoning(self.policy.threat_text(j), self.policy.intent_text(j),
                                self.policy.guidance_text(j)),
            evidence=Evidence(seen.concepts, seen.scores, seen.ocr_text, span,
                              seen.ocr_truncated),
            timings_ms=timings, category_scores=category_scores, flagged_categories=flagged,
            action="monitor" if self.monitor else "rewrite")

    def _enforced_risk(self, probs: Mapping[str, np.ndarray],
                       categories: frozenset[str] | None = None) -> float:
        enforced_set = self.categories if categories is None else categories
        p_unsafe = float(probs["safety"][1])
        if len(enforced_set) == len(CATEGORIES) - 1:
            return p_unsafe
        cats = HEADS["category"]
        pc = probs["category"]
        harmful = sum(float(pc[i]) for i, c in enumerate(cats) if c != "none")
        enforced = sum(float(pc[i]) for i, c in enumerate(cats) if c in enforced_set)
        return p_unsafe * (enforced / harmful if harmful > 0 else 0.0)

    @staticmethod
    def _category_scores(probs: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Each harmful category's share of P(unsafe), as the category head divides it."""
        p_unsafe = float(probs["safety"][1])
        pc = probs["category"]
        cats = HEADS["category"]
        harmful = sum(float(pc[i]) for i, c in enumerate(cats) if c != "none")
        return {c: (p_unsafe * float(pc[i]) / harmful if harmful > 0 else 0.0)
                for i, c in enumerate(cats) if c != "none"}

    def _verdict(self, probs: Mapping[str, np.ndarray], scores: Mapping[str, float]
                 ) -> tuple[float, frozenset[str], float]:
        """(enforced risk, the categories a threshold trips, how close to tripping one).

        Categories with their own threshold are judged alone by their own score; the rest
        together, by their summed share of P(unsafe) against ``threshold``. With no
        per-category thresholds this is exactly ``risk >= threshold``.
        """
        risk = self._enforced_risk(probs)
        own = self.category_thresholds
        if not own:
            return (risk, self.categories if risk >= self.threshold else frozenset(),
                    risk / self.threshold)
        joint = self.categories - own.keys()
        joint_risk = self._enforced_risk(probs, joint) if joint else 0.0
        tripped = {c for c, th in own.items() if scores[c] >= th}
        if joint and joint_risk >= self.threshold:
            tripped |= joint
        level = max([joint_risk / self.threshold] + [scores[c] / th for c, th in own.items()])
        return risk, frozenset(tripped), level

    @staticmethod
    def _argmax_named(head: str, probs: np.ndarray, allowed: Iterable[str] | None = None) -> str:
        names = HEADS[head]
        allowed_set = set(allowed) if allowed is not None else set(names) - {"none"}
        order = np.argsort(-probs)
        picked: str = next(names[i] for i in order if names[i] in allowed_set)
        return picked

    def _span_text(self, window: Window, logits: np.ndarray, text: str, evidence: str,
                   ocr_offset: int) -> str:
        """The words the span head tagged, from the segment where most tags fall."""
        tags = logits[: len(window.encoding.ids), self._slices["span"]].argmax(-1)
        enc = window.encoding
        hits: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
        for tag, seq, (a, b) in zip(tags, enc.sequence_ids, enc.offsets, strict=True):
            if tag > 0 and seq is not None and b > a:
                hits[seq].append((a, b))
        seg = 1 if len(hits[1]) >= len(hits[0]) else 0
        if not hits[seg]:
            return ""
        a, b = min(x for x, _ in hits[seg]), max(y for _, y in hits[seg])
        if seg == 1:
            off = window.request_offset
            return (window.request or text)[off + a: off + b]
        evidence = window.evidence or evidence
        return evidence[max(a, ocr_offset if ocr_offset >= 0 else a): b]

    # ---- public calls ----------------------------------------------------------------------
    def rewrite(self, image: ImageInput = None, text: str | bytes | None = "") -> RewriteResult:
        """Check one request; return the verdict and the prompt to send downstream."""
        return self.rewrite_batch([(image, text)])[0]

    async def arewrite(self, image: ImageInput = None, text: str | bytes | None = "", *,
                       executor: Executor | None = None) -> RewriteResult:
        """``rewrite`` in a worker thread (``executor``, or the loop's default), so an event
        loop keeps serving while the models run (ONNX Runtime releases the GIL)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(self.rewrite, image, text))

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

    def rewrite_batch(self, items: Iterable[tuple[ImageInput, str | bytes | None]]
                      ) -> list[RewriteResult]:
        """Check many requests; the rewriter model runs once over all of them."""
        if isinstance(items, str | bytes | bytearray | memoryview):
            raise UnsupportedInputTypeError("rewrite_batch takes an iterable of (image, text) "
                                            f"pairs, not {type(items).__name__}")
        try:
            items = list(items)
        except TypeError as exc:
            raise UnsupportedInputTypeError("rewrite_batch takes an iterable of (image, text) "
                                            f"pairs: {exc}") from exc
        seen_items = []
        for item in items:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise UnsupportedInputTypeError("rewrite_batch takes (image, text) pairs")
            image, text = item
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            try:
                seen = self._see(image, timings)
            except VLMGuardError:
                raise
            except Exception as exc:
                raise GuardError(f"vision stage failed ({exc!r}); fail closed") from exc
            seen_items.append((text, seen, timings, t0))
        return self._judge_all(seen_items)

    def rewrite_seen(self, text: str, concepts: Sequence[str] = (), ocr_text: str = "",
                     has_image: bool = True) -> RewriteResult:
        """Judge a request from evidence found elsewhere (your own tagger/OCR, or a dataset).

        ``concepts`` are visual concept words, best first; ``ocr_text`` the text in the image.
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
        seen = _Seen(bool(has_image), words, (), ocr if has_image else "")
        return self._judge_all([(text, seen, {}, time.perf_counter())])[0]

    def _judge_all(self, seen_items: Sequence[tuple[Any, _Seen, dict[str, float], float]]
                   ) -> list[RewriteResult]:
        try:
            prepared = []
            for text, seen, timings, t0 in seen_items:
                text = _check_text(text, seen.has_image)
                ev = verbalise_evidence(seen.concepts, seen.ocr_text, seen.has_image)
                t = time.perf_counter()
                self._check_tokens(text)
                windows = self.encoder.encode(ev.text, text, ev.ocr_offset)
                if not windows:
                    raise GuardError("the encoder produced no windows; fail closed")
                if len(windows) > MAX_WINDOWS:
                    raise BudgetExceededError(
                        f"this request needs {len(windows):,} encoder windows (text x image "
                        f"text); the per-request budget is {MAX_WINDOWS}. Shorten the text.")
                timings["tokenise"] = _ms(t)
                prepared.append((text, seen, windows, ev, timings, t0))
            if not prepared:
                return []
            if self.batch_encoder:
                shared: dict[str, float] = {}
                logits = self._judge_windows([w for p in prepared for w in p[2]], shared)
                per_item, k = [], 0
                for p in prepared:
                    per_item.append(logits[k:k + len(p[2])])
                    k += len(p[2])
                    p[4]["encoder"] = shared["encoder"] / len(prepared)
            else:
                per_item = [self._judge_windows(p[2], p[4]) for p in prepared]
            results = []
            for (text, seen, windows, ev, timings, t0), lg in zip(prepared, per_item,
                                                                   strict=True):
                results.append(self._decide(text, seen, windows, lg, ev.text, ev.ocr_offset,
                                            timings))
                timings["total"] = _ms(t0)
            return results
        except VLMGuardError:
            raise
        except Exception as exc:
            raise GuardError(f"rewriter model failed ({exc!r}); fail closed") from exc

    def info(self) -> dict[str, Any]:
        from . import __version__, preprocess

        return {
            "version": __version__,
            "model": self.manifest.get("name", self.bundle.name),
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
        }


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_threshold(value: object) -> float:
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"threshold must be a number, got {value!r}") from exc
    if not (math.isfinite(t) and 0.0 < t < 1.0):
        raise InvalidConfigError(f"threshold must be in (0, 1), got {t}")
    return t


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)

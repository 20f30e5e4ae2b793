"""A teacher that runs the three stage prompts on any OpenAI-compatible chat endpoint.

For users who have a capable VLM (a hosted API, or vLLM / Ollama / llama.cpp serving one),
this produces richer annotations than the offline synthesiser, behind the same
:class:`~training.synthesis.teacher.Teacher` interface. It is built for long unattended runs:

- answers are parsed and validated by hand against each stage's schema (types, taxonomy
  enums, the intent span must be a real substring); a malformed answer is asked again;
- transport failures (timeouts, refused connections, 408, 429, 5xx) are retried with
  exponential back-off and jitter, honouring ``Retry-After``; other 4xx fail at once
  (retrying a bad request only burns quota);
- every validated answer is cached on disk, keyed by the exact request, so an interrupted or
  repeated run costs no requests for what is done;
- ``annotate_many`` runs items on a bounded thread pool and returns them in input order.

Only the standard library does HTTP, so the training extras stay light.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import hashlib
import http.client
import io
import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageOps
from tqdm import tqdm

from training.synthesis.prompts import STAGES, build_messages
from training.synthesis.schema import Example, SeedItem
from training.synthesis.teacher import BaseTeacher, TeacherError, example_id
from vlmguard.taxonomy import CATEGORIES, SOURCES, STRATEGIES

__all__ = [
    "VLMTeacher",
    "TeacherError",
    "MalformedAnswerError",
    "encode_image",
    "parse_json_content",
    "validate_threat",
    "validate_intent",
    "validate_guidance",
    "default_cache_dir",
    "endpoint_models",
]

log = logging.getLogger(__name__)

#: Bump when validation or prompts change meaning, so old cache entries are not reused.
CACHE_VERSION = "v1"
MAX_IMAGE_SIDE = 1024
_IMAGE_PLACEHOLDER = "vlmguard-image:"
_LOSSLESS_FORMATS = {"PNG", "GIF", "BMP", "TIFF", "PPM", "PGM", "PBM", "ICO"}
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def default_cache_dir() -> Path:
    """``$VLMGUARD_CACHE/teacher``, else ``$XDG_CACHE_HOME/vlmguard/teacher`` (or ~/.cache)."""
    root = os.environ.get("VLMGUARD_CACHE")
    if root:
        return Path(root) / "teacher"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "vlmguard" / "teacher"


# ----------------------------------------------------------------------------- errors


class MalformedAnswerError(ValueError):
    """The endpoint answered, but not with JSON that fits the stage schema (worth retrying)."""


class _TransientError(Exception):
    """A failure that may pass: timeout, connection error, 429, 5xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _FatalError(Exception):
    """A failure that will not pass by asking again (4xx other than 408/429)."""


# ----------------------------------------------------------------------------- images


def encode_image(path: str | os.PathLike[str], max_side: int = MAX_IMAGE_SIDE) -> str:
    """Re-encode an image file as a ``data:`` URL, downscaled so its longer side ≤ max_side.

    Re-encoding normalises odd formats (WebP, CMYK, EXIF rotation) to what every endpoint
    accepts and bounds the payload. Lossless sources (rendered typography) stay PNG so text
    stays sharp; photos become JPEG.
    """
    try:
        with Image.open(path) as opened:
            fmt = (opened.format or "").upper()
            img = ImageOps.exif_transpose(opened)
            img.load()
    except (OSError, ValueError) as e:
        raise TeacherError(f"cannot read image {str(path)!r}: {e}") from e
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    buf = io.BytesIO()
    if fmt in _LOSSLESS_FORMATS or has_alpha:
        if img.mode not in ("1", "L", "LA", "RGB", "RGBA", "P"):
            img = img.convert("RGBA" if has_alpha else "RGB")
        img.save(buf, format="PNG", optimize=False)
        mime = "image/png"
    else:
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        img.save(buf, format="JPEG", quality=90)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise TeacherError(f"cannot read image {str(path)!r}: {e}") from e
    return h.hexdigest()


# ----------------------------------------------------------------------------- parsing


def parse_json_content(content: str) -> dict[str, Any]:
    """Parse an assistant message as one JSON object, tolerating ```json fences and chatter.

    Models in JSON mode still sometimes wrap the object in a fence or add a sentence; the
    object itself is what counts.
    """
    text = content.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise MalformedAnswerError(f"not JSON: {content[:200]!r}") from None
        try:
            value = json.loads(text[start : end + 1])
        except json.JSONDecodeError as e:
            raise MalformedAnswerError(f"not JSON ({e}): {content[:200]!r}") from None
    if not isinstance(value, dict):
        raise MalformedAnswerError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _require(answer: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in answer:
        raise MalformedAnswerError(f"missing key {key!r}")
    value = answer[key]
    # bool is an int subclass; never let true/false pass for another type or vice versa.
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise MalformedAnswerError(f"{key!r} must be {name}, got {value!r}")
    return value


def _enum(answer: dict[str, Any], key: str, allowed: Sequence[str]) -> str:
    value = _require(answer, key, str)
    if value not in allowed:
        raise MalformedAnswerError(f"{key!r} = {value!r} is not one of {list(allowed)}")
    return value


def _text(answer: dict[str, Any], key: str, *, nonempty: bool = True) -> str:
    value = _require(answer, key, str).strip()
    if nonempty and not value:
        raise MalformedAnswerError(f"{key!r} is empty")
    return value


def _str_list(answer: dict[str, Any], key: str) -> list[str]:
    value = answer.get(key, [])
    if value is None:
        return []
    if isinstance(value, str):  # a single item given as a string is harmless
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedAnswerError(f"{key!r} must be a list of strings, got {value!r}")
    return [v.strip() for v in value if v.strip()]


def validate_threat(answer: dict[str, Any], item: SeedItem) -> dict[str, Any]:
    """Check a stage 1 answer; return it normalised (a safe verdict gets 'none' labels)."""
    unsafe = _require(answer, "unsafe", bool)
    category = _enum(answer, "category", CATEGORIES)
    source = _enum(answer, "source", SOURCES)
    threat = _text(answer, "threat")
    evidence_raw = answer.get("evidence", {})
    if evidence_raw is None:
        evidence_raw = {}
    if not isinstance(evidence_raw, dict):
        raise MalformedAnswerError(f"'evidence' must be an object, got {evidence_raw!r}")
    evidence: dict[str, str] = {}
    for key in ("visual", "request", "image_text"):
        value = evidence_raw.get(key) or ""
        if not isinstance(value, str):
            raise MalformedAnswerError(f"'evidence.{key}' must be a string, got {value!r}")
        evidence[key] = value.strip()
    if unsafe and (category == "none" or source == "none"):
        raise MalformedAnswerError(
            f"an unsafe verdict needs a category and a source, got {category!r}/{source!r}"
        )
    if not unsafe:
        category, source = "none", "none"
    return {
        "unsafe": unsafe,
        "category": category,
        "source": source,
        "threat": threat,
        "evidence": evidence,
    }


def locate_span(item: SeedItem, field: str, quote: str) -> tuple[str, int, int]:
    """Char offsets of ``quote`` in the item's request (``text``) or image text (``ocr``)."""
    if field not in ("text", "ocr"):
        raise MalformedAnswerError(f"span field {field!r} is not 'text' or 'ocr'")
    haystack = item.text if field == "text" else item.ocr_text
    needle = quote.strip()
    if not needle:
        raise MalformedAnswerError("span quote is empty")
    start = haystack.find(needle)
    if start < 0:
        raise MalformedAnswerError(f"span quote {needle!r} is not a substring of the {field}")
    return (field, start, start + len(needle))


def validate_intent(answer: dict[str, Any], item: SeedItem) -> dict[str, Any]:
    """Check a stage 2 answer; return the intent and the located span (or None)."""
    intent = _text(answer, "intent")
    if "span" not in answer:
        raise MalformedAnswerError("missing key 'span' (use null when no words carry it)")
    span_raw = answer["span"]
    span: tuple[str, int, int] | None = None
    if span_raw is not None:
        if not isinstance(span_raw, dict):
            raise MalformedAnswerError(f"'span' must be an object or null, got {span_raw!r}")
        field = _require(span_raw, "field", str)
        quote = _require(span_raw, "quote", str)
        span = locate_span(item, field, quote)
    return {"intent": intent, "span": span}


def validate_guidance(answer: dict[str, Any], item: SeedItem) -> dict[str, Any]:
    """Check a stage 3 answer (only asked for unsafe turns, so the strategy is not 'none')."""
    strategy = _enum(answer, "strategy", STRATEGIES)
    if strategy == "none":
        raise MalformedAnswerError("strategy 'none' is only for safe turns")
    return {
        "strategy": strategy,
        "avoid": _str_list(answer, "avoid"),
        "help_with": _str_list(answer, "help_with"),
        "guidance": _text(answer, "guidance"),
    }


_VALIDATORS: dict[str, Callable[[dict[str, Any], SeedItem], dict[str, Any]]] = {
    "threat": validate_threat,
    "intent": validate_intent,
    "guidance": validate_guidance,
}


def _retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date, counted
    from ``now``, a Unix time: the current time unless given)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _opener_for(url: str, trust_env: bool) -> urllib.request.OpenerDirector:
    """Environment proxies never make sense for a server on this machine."""
    handlers: list[urllib.request.BaseHandler] = []
    if not trust_env or _is_loopback(url):
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def endpoint_models(base_url: str, api_key: str | None = None, timeout: float = 30.0,
                    trust_env: bool = True) -> list[str]:
    """The model ids an OpenAI-compatible endpoint lists at ``GET {base_url}/models``, so a
    command line can default to the one model a local server (vLLM, llama.cpp) serves."""
    url = f"{base_url.rstrip('/')}/models"
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with _opener_for(url, trust_env).open(request, timeout=timeout) as response:
            data = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise TeacherError(f"HTTP {e.code} from {url}: {_error_detail(e)}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise TeacherError(f"cannot list the models at {url}: {e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TeacherError(f"{url} did not answer JSON: {e}") from e
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise TeacherError(f"{url} has no 'data' list of models")
    return [str(m["id"]) for m in entries if isinstance(m, dict) and m.get("id")]


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------- teacher


class VLMTeacher(BaseTeacher):
    """The three-stage teacher over an OpenAI-compatible ``/chat/completions`` endpoint.

    Stages 1 (threat) and 2 (intent) run for every item; stage 3 (guidance) only when stage 1
    says unsafe, since a safe turn is passed through unchanged (strategy 'none').

    ``max_retries`` counts the extra attempts per stage after the first, shared by transport
    failures and malformed answers. ``cache_dir="auto"`` is :func:`default_cache_dir`;
    ``None`` disables the cache.
    """

    name = "vlm-teacher"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        concurrency: int = 4,
        cache_dir: str | os.PathLike[str] | None = "auto",
        *,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        max_image_side: int = MAX_IMAGE_SIDE,
        max_tokens: int | None = 1024,
        json_mode: bool = True,
        extra_body: dict[str, Any] | None = None,
        trust_env: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be non-negative")
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        if cache_dir == "auto":
            cache_dir = default_cache_dir()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_image_side = max_image_side
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.extra_body = dict(extra_body or {})
        self._opener = _opener_for(self.endpoint, trust_env)
        #: How back-off waits (injectable, so tests read the delays instead of timing them).
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        #: Counters for monitoring: HTTP requests sent, cache hits, retries, failures.
        self.stats: dict[str, int] = {"requests": 0, "cache_hits": 0, "retries": 0, "errors": 0}

    # -- public API

    def annotate(self, item: SeedItem) -> Example:
        """Run the stages for one item and build a validated :class:`Example`."""
        image = _LazyImage(item.image, self.max_image_side) if item.image else None
        ref = image.ref if image else None
        previous: dict[str, dict[str, Any]] = {}
        results: dict[str, dict[str, Any]] = {}
        for stage in STAGES:
            if stage == "guidance" and not results["threat"]["unsafe"]:
                break
            messages = build_messages(stage, item, ref, previous)
            raw, checked = self._ask(stage, messages, item, image)
            results[stage] = checked
            previous[stage] = raw if stage != "threat" else checked
        return self._example(item, results, image.sha256 if image else None)

    def annotate_many(
        self,
        items: Sequence[SeedItem],
        progress: bool = True,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> list[Example]:
        """Annotate items on at most ``concurrency`` threads; results keep the input order.

        ``on_error="raise"`` stops at the first failure (finished work is cached, so a re-run
        resumes); ``"skip"`` logs failures and leaves those items out.
        """
        results: list[Example | None] = [None] * len(items)
        bar = tqdm(total=len(items), desc=self.name, unit="ex", disable=not progress)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="teacher")
        try:
            futures: dict[Future[Example], int] = {
                pool.submit(self.annotate, item): i for i, item in enumerate(items)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    i = futures[fut]
                    exc = fut.exception()
                    bar.update(1)
                    if exc is None:
                        results[i] = fut.result()
                    elif on_error == "skip":
                        log.warning("skipping item %s: %s", items[i].seed_id, exc)
                    else:
                        for other in pending:
                            other.cancel()
                        raise exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return [r for r in results if r is not None]

    # -- stages

    def _ask(
        self,
        stage: str,
        messages: list[dict[str, Any]],
        item: SeedItem,
        image: _LazyImage | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One stage: cache, else request + validate with retries. Returns (raw, checked)."""
        validate = _VALIDATORS[stage]
        key = self._cache_key(stage, messages)
        cached = self._cache_get(key)
        if cached is not None:
            try:
                checked = validate(cached, item)
            except MalformedAnswerError:
                log.warning("ignoring an invalid cache entry %s", key)
            else:
                self._count("cache_hits")
                return cached, checked

        payload: dict[str, Any] = {"model": self.model, "temperature": 0, **self.extra_body}
        if self.json_mode:
            payload["response_format"] = {"type": "json_object"}
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        last: Exception | None = None
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self._count("retries")
                self._sleep_before_retry(attempt, last)
            try:
                if "messages" not in payload:
                    payload["messages"] = _with_image(messages, image)
                content = self._post(payload)
                raw = parse_json_content(content)
                checked = validate(raw, item)
            except _TransientError as e:
                last = e
                log.info("stage %s, %s: attempt %d failed: %s", stage, item.seed_id, attempt, e)
                continue
            except MalformedAnswerError as e:
                last = e
                log.info("stage %s, %s: malformed answer: %s", stage, item.seed_id, e)
                continue
            except _FatalError as e:
                self._count("errors")
                raise TeacherError(f"stage {stage!r} of {item.seed_id!r}: {e}") from e
            self._cache_put(key, raw)
            return raw, checked
        self._count("errors")
        raise TeacherError(
            f"stage {stage!r} of {item.seed_id!r}: no valid answer after {attempts} "
            f"attempt(s); last error: {last}"
        ) from last

    def _sleep_before_retry(self, attempt: int, last: Exception | None) -> None:
        """Exponential back-off with jitter, or the server's ``Retry-After`` when it gave one."""
        retry_after = getattr(last, "retry_after", None)
        if retry_after is not None:
            delay = min(retry_after, self.max_retry_after)
        else:
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            delay *= random.uniform(0.5, 1.5)
        if delay > 0:
            self._sleep(delay)

    def _post(self, payload: dict[str, Any]) -> str:
        """One HTTP request; returns the assistant content or raises a classified error."""
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        with self._slots:
            self._count("requests")
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                detail = _error_detail(e)
                retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
                if e.code in (408, 429) or e.code >= 500:
                    raise _TransientError(f"HTTP {e.code}: {detail}", retry_after) from e
                raise _FatalError(f"HTTP {e.code} from {self.endpoint}: {detail}") from e
            except urllib.error.URLError as e:
                raise _TransientError(f"connection failed: {e.reason}") from e
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                raise _TransientError(f"{type(e).__name__}: {e}") from e
        return _assistant_content(raw)

    # -- example

    def _example(
        self, item: SeedItem, results: dict[str, dict[str, Any]], image_sha: str | None
    ) -> Example:
        threat = results["threat"]
        intent = results["intent"]
        unsafe = threat["unsafe"]
        guidance = results.get("guidance")
        evidence = threat["evidence"]
        notes = [
            f"{label}: {evidence[key]}"
            for key, label in (
                ("visual", "image"),
                ("request", "request"),
                ("image_text", "image text"),
            )
            if evidence[key]
        ]
        threat_text = threat["threat"] + (f" Evidence: {'; '.join(notes)}." if notes else "")
        example = Example(
            id=example_id(
                item.seed_id,
                "vlm",
                self.model,
                item.text,
                image_sha,
                item.ocr_text,
                tuple(item.concepts),
            ),
            seed_id=item.seed_id,
            text=item.text,
            concepts=list(item.concepts),
            ocr_text=item.ocr_text,
            unsafe=unsafe,
            category=threat["category"] if unsafe else "none",
            source=threat["source"] if unsafe else "none",
            strategy=guidance["strategy"] if unsafe and guidance else "none",
            threat=threat_text,
            intent=intent["intent"],
            intent_span=intent["span"],
            guidance=guidance["guidance"] if unsafe and guidance else "",
            image=item.image,
            origin=item.origin or f"vlm-teacher:{self.model}",
            licence=item.licence,
        )
        try:
            example.validate()
        except ValueError as e:
            raise TeacherError(f"example for {item.seed_id!r} is invalid: {e}") from e
        return example

    # -- cache

    def _cache_key(self, stage: str, messages: list[dict[str, Any]]) -> str:
        """sha256 of what determines the answer: model, stage, messages (image by hash)."""
        blob = json.dumps(
            {
                "v": CACHE_VERSION,
                "model": self.model,
                "stage": stage,
                "messages": messages,
                "json_mode": self.json_mode,
                "extra": self.extra_body,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def _cache_put(self, key: str, raw: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash or a concurrent writer never leaves a torn entry.
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1


class _LazyImage:
    """An item's image: hashed up front (for cache keys), encoded only when a request needs it."""

    def __init__(self, path: str, max_side: int) -> None:
        self.path = path
        self.max_side = max_side
        self.sha256 = _file_sha256(path)
        self.ref = f"{_IMAGE_PLACEHOLDER}sha256:{self.sha256}:max{max_side}"
        self._url: str | None = None
        self._lock = threading.Lock()

    def data_url(self) -> str:
        with self._lock:
            if self._url is None:
                self._url = encode_image(self.path, self.max_side)
            return self._url


def _with_image(messages: list[dict[str, Any]], image: _LazyImage | None) -> list[dict[str, Any]]:
    """Swap the image placeholder for the real data URL (only for the wire, not the key)."""
    if image is None:
        return messages
    out = copy.deepcopy(messages)
    for message in out:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") == "image_url" and part["image_url"].get("url") == image.ref:
                part["image_url"]["url"] = image.data_url()
    return out


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        text = e.read().decode("utf-8", "replace")
    except Exception:  # the body is only for the message
        text = ""
    try:
        data = json.loads(text)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    except json.JSONDecodeError:
        pass
    return text[:500] or str(e.reason)


def _assistant_content(raw: bytes) -> str:
    """The first choice's message content; a 200 that is not a chat completion is malformed."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedAnswerError(f"response is not JSON: {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise MalformedAnswerError("response is not a JSON object")
    if data.get("error"):
        raise MalformedAnswerError(f"endpoint reported an error: {str(data['error'])[:300]}")
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise MalformedAnswerError(f"no choices[0].message.content in {str(data)[:300]}") from None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise MalformedAnswerError("empty assistant content")
    return content

"""The HTTP service: OpenAI-compatible moderation, the guard's own rewrite endpoint, LiteLLM's
generic guardrail API, a chat-completions pre-filter proxy, health, readiness and metrics.

Fail closed: a failure inside the guard answers 5xx and the proxy never forwards the request;
a bad request answers 4xx. Every error body is OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``. Guard checks run in a thread pool (the
models release the GIL), bounded by ``max_pending`` (503 above) and ``request_timeout_s``
(504), so the event loop keeps serving health checks and streams while the models run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InvalidInputError
from ..guard import Guard
from ..messages import MESSAGE_KEYS, MessagesResult, is_empty
from ..result import RewriteResult
from .config import ServerConfig, is_number
from .metrics import Metrics
from .openai_compat import moderation_result

log = logging.getLogger("vlmguard.server")
T = TypeVar("T")
_URL_SCHEMES = ("data:", "http://", "https://", "file:")


class ApiError(Exception):
    """An answer other than 200, as OpenAI shapes errors."""

    def __init__(self, status: int, code: str, message: str,
                 kind: str = "invalid_request_error", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind
        self.param = param

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind,
                                       "param": self.param, "code": self.code}},
                            status_code=self.status)


def _snake(name: str) -> str:
    """``ImageURLNotAllowedError`` → ``image_url_not_allowed_error``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    return words.removesuffix("_error") + "_error"


# ---- request schemas ----------------------------------------------------------------------------
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModerationRequest(_Lenient):
    input: str | list[str | dict[str, Any]]
    model: str | None = None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewriteRequest(_Strict):
    """The guard's own schema: an unknown field (a misnamed ``image_url``) is refused, not
    dropped unread."""

    text: str = ""
    image: str | None = None
    images: list[str] = []
    messages: list[dict[str, Any]] | None = None


class LiteLLMGuardrailRequest(_Lenient):
    texts: list[str] = []
    images: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    request_data: dict[str, Any] = {}
    input_type: Literal["request", "response"] = "request"
    litellm_call_id: str | None = None
    litellm_trace_id: str | None = None
    additional_provider_specific_params: dict[str, Any] | None = None


class ChatRequest(_Lenient):
    messages: list[dict[str, Any]]
    stream: bool | None = None


def _validate(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise ApiError(400, "invalid_request",
                       f"{where or 'body'}: {first.get('msg', 'invalid')}") from exc


# ---- what the proxy forwards -------------------------------------------------------------------
def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v: object) -> bool:
    return isinstance(v, str)


FORWARDED_FIELDS: dict[str, Callable[[Any], bool]] = {
    "model": _str, "user": _str,
    "stop": lambda v: isinstance(v, str) or (isinstance(v, list) and all(map(_str, v))),
    "temperature": is_number, "top_p": is_number, "presence_penalty": is_number,
    "frequency_penalty": is_number,
    "top_k": _int, "min_p": is_number, "repetition_penalty": is_number,  # vLLM's sampling knobs
    "max_tokens": _int, "max_completion_tokens": _int, "n": _int, "seed": _int,
    "top_logprobs": _int, "logprobs": lambda v: isinstance(v, bool),
    "stream": lambda v: isinstance(v, bool),
    "stream_options": lambda v: isinstance(v, dict) and all(
        k in ("include_usage", "continuous_usage_stats") and isinstance(x, bool)
        for k, x in v.items()),
    # json_schema is refused: its names and descriptions are text the model reads
    "response_format": lambda v: v in ({"type": "text"}, {"type": "json_object"}),
}
"""The chat request fields the proxy forwards besides ``messages``, each with the check that
its value carries no text the model reads (a sampling knob, a stop string, an id). Anything
else (``tools``, ``functions``, vLLM's ``chat_template``, ``chat_template_kwargs``,
``documents``, ``continue_final_message``, guided decoding, ...) holds or renders text the
guard never reads: refused with 400, since a guard must not forward what it has not judged."""


UNSAFE_FIELDS = {
    "logit_bias": "it can ban the tokens a refusal starts with (-100 on 'I', 'Sorry', ...), "
                  "undoing the guidance a flagged request is rewritten with",
}
"""Chat request fields that carry no text but can undo the guard's rewrite: refused with 400
``unsafe_field`` when they hold a value (an empty one is dropped)."""
FIELD_RANGES = {"n": (1, 4), "top_logprobs": (0, 5)}
"""Bounds on forwarded integer fields, 400 past them. ``n`` samples one judged request n
times (best-of-n jailbreaking, and n times the upstream's work): a client that wants more
sends more requests, each judged. ``logprobs`` and ``top_logprobs`` are forwarded: they show
the probabilities of the answer the model gave, one token deep and conditioned on it (a
refusal, for a rewritten request), so they do not recover what it would have said; the
cap keeps that peek small."""


def _unjudged(where: str, why: str) -> ApiError:
    """400 ``unjudged_field``: ``where`` holds text for the model that the guard did not read."""
    return ApiError(400, "unjudged_field", f"{where}: {why}; the guard passes only what it has "
                    "judged or what carries no text for the model", param=where)


LITELLM_UNJUDGED = ("tools", "functions", "tool_calls")
"""LiteLLM request fields the guardrail endpoint refuses when they hold a value: tool
definitions and calls are names, descriptions, schemas and arguments the model reads, which
the guard does not judge (the chat proxy refuses them too)."""


def forwardable(body: dict[str, Any]) -> dict[str, Any]:
    """The allowlisted fields of a chat request, ``messages`` left out, once its messages hold
    only the keys ``rewrite_messages`` accepts (``MESSAGE_KEYS``; it forwards only ``role``
    and ``content``). An empty value of any other field or key is dropped; any other value,
    an ``UNSAFE_FIELDS`` value and one outside ``FIELD_RANGES`` are an ApiError (400),
    raised before anything is judged or forwarded."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "messages" or is_empty(value):
            continue
        if key in UNSAFE_FIELDS:
            raise ApiError(400, "unsafe_field", f"{key}: {UNSAFE_FIELDS[key]}; the guard does "
                           "not forward it", param=key)
        check = FORWARDED_FIELDS.get(key)
        if check is None:
            raise _unjudged(key, "the guard does not read this field")
        if not check(value):
            raise _unjudged(key, "the guard does not forward this value unread")
        if key in FIELD_RANGES:
            low, high = FIELD_RANGES[key]
            if not low <= value <= high:
                raise ApiError(400, "invalid_request", f"{key}: {value} is outside "
                               f"{low}..{high}, the proxy's limit (FIELD_RANGES)", param=key)
        out[key] = value
    for i, m in enumerate(body.get("messages") or ()):
        for key, value in m.items():
            if key not in MESSAGE_KEYS and not is_empty(value):
                raise _unjudged(f"messages[{i}].{key}",
                                "the guard does not read this message key")
    return out


def _image_url(ref: str) -> str:
    """A URL for an image reference; bare base64 (LiteLLM's form) becomes a data URL."""
    ref = ref.strip()
    return ref if ref.lower().startswith(_URL_SCHEMES) else "data:image/*;base64," + ref


def _user_turn(text: str, images: list[str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": _image_url(u)}} for u in images]
    return [{"role": "user", "content": parts}]


async def _read_capped(resp: httpx.Response, limit: int) -> bytes:
    """An upstream answer's body, refused (502, nothing forwarded) past ``limit`` bytes, by
    its Content-Length or as counted while reading."""
    length = resp.headers.get("content-length", "")
    too_big = ApiError(502, "upstream_too_large", f"the upstream answer is over {limit:,} "
                       "bytes (upstream_max_bytes); nothing of it was forwarded",
                       "server_error")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, total = [], 0
    async for chunk in resp.aiter_bytes():  # decoded: what is held and relayed
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


# ---- the app ------------------------------------------------------------------------------------
class _State:
    def __init__(self, cfg: ServerConfig, guard: Guard) -> None:
        self.cfg, self.guard = cfg, guard
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(cfg.workers, thread_name_prefix="vlmguard")
        self.pending = 0  # checks queued or running, till each really ends
        self._lock = threading.Lock()
        self.ready = False
        self.ready_error = "starting"
        self.client: httpx.AsyncClient | None = None
        self.limits = cfg.fetch_limits()
        self.model_name = guard.bundle_record.name

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` in the guard's thread pool, within the time and queue limits; guard
        errors become ApiErrors (input → 400, anything else → 500: fail closed).

        A check whose caller stops waiting (504 after ``request_timeout_s``, or the request
        cancelled) is abandoned: one still queued never starts; one already running runs to
        its end (a thread cannot be stopped; the guard's own per-request budgets bound it),
        and its ``pending`` slot stays taken till then, so ``max_pending`` counts the work
        really in the pool."""
        if self.pending >= self.cfg.max_pending:
            raise ApiError(503, "overloaded", f"{self.pending} guard checks already pending; "
                           "retry later", "server_error")
        call = functools.partial(fn, *args, **kwargs)
        abandoned = threading.Event()

        def job() -> T | None:
            if abandoned.is_set():  # its client got 504 (or left) while it queued
                return None
            return call()

        def done(f: concurrent.futures.Future[Any]) -> None:
            # runs when the job really ends (or is cancelled before it starts), in whichever
            # thread that happens: the slot stays taken while a worker is still on it
            with self._lock:
                self.pending -= 1
            self.metrics.pending.dec()
            if not f.cancelled():
                f.exception()  # retrieved, even when the caller timed out

        cf = self.executor.submit(job)
        with self._lock:
            self.pending += 1
        self.metrics.pending.inc()
        cf.add_done_callback(done)  # called at once if the job has already ended
        fut = asyncio.wrap_future(cf)
        try:
            result = await asyncio.wait_for(fut, self.cfg.request_timeout_s)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise ApiError(504, "guard_timeout", "the guard check took longer than "
                           f"{self.cfg.request_timeout_s}s; nothing was forwarded",
                           "server_error") from exc
        except InvalidInputError as exc:
            raise ApiError(400, _snake(type(exc).__name__), str(exc)) from exc
        except Exception as exc:  # GuardError, ModelLoadError, or a bug: fail closed
            log.exception("guard failure")
            raise ApiError(500, "guard_error", f"the guard failed, so nothing was forwarded "
                           f"(fail closed): {exc}", "server_error") from exc
        finally:
            if not cf.done():  # timed out, or the request was cancelled: no one will read it
                abandoned.set()  # a queued job never starts (cancel() may lose the race)
                cf.cancel()  # a running one cannot be stopped: it finishes, unread
        return cast(T, result)

    def check_key(self, request: Request) -> None:
        keys = self.cfg.api_keys
        if not keys:
            return  # no keys configured: any bearer token (or none) is accepted
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        token = token or request.headers.get("x-api-key", "").strip()
        if not token or not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
            raise ApiError(401, "invalid_api_key", "missing or unknown API key "
                           "(Authorization: Bearer <key> or x-api-key)", "authentication_error")

    async def json_body(self, request: Request) -> Any:
        """The body as JSON, refused above ``max_body_bytes`` before it is all read."""
        limit = self.cfg.max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise ApiError(413, "request_too_large", f"the body is over {limit:,} bytes")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, "request_too_large", f"the body is over {limit:,} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from exc

    def observe(self, endpoint: str, result: RewriteResult, action: str | None = None) -> None:
        self.metrics.observe(endpoint, result, action)


def build_guard(cfg: ServerConfig) -> Guard:
    """The guard the configuration describes."""
    return Guard.from_pretrained(
        cfg.model, providers=list(cfg.providers) or None, threshold=cfg.threshold,
        categories=list(cfg.categories) or None, threads=cfg.threads,
        category_thresholds=cfg.category_thresholds or None, monitor=cfg.monitor,
        vision_providers=list(cfg.vision_providers) or None, precedents=cfg.precedents,
        signing_key=cfg.signing_key)


def create_app(cfg: ServerConfig | None = None, guard: Guard | None = None, *,
               upstream_transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The service's ASGI app. ``guard`` defaults to the one ``cfg`` describes;
    ``upstream_transport`` replaces the network for the proxy (tests)."""
    cfg = cfg or ServerConfig()
    st = _State(cfg, guard or build_guard(cfg))
    g = st.guard

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if cfg.upstream:
            st.client = httpx.AsyncClient(transport=upstream_transport,
                                          timeout=cfg.upstream_timeout_s)
        info = g.info()
        for p in info["providers"]:
            st.metrics.providers.labels("rewriter", p).set(1)
        for model, provs in info["vision_providers"].items():
            for p in provs:
                st.metrics.providers.labels(model, p).set(1)
        try:  # readiness means one real check went through every stage that will run
            await st.run(g.rewrite, None, "Is this service ready?")
            st.ready, st.ready_error = True, ""
        except ApiError as exc:
            st.ready_error = exc.message
            log.error("warm-up check failed: %s", exc.message)
        try:
            yield
        finally:
            if st.client is not None:
                await st.client.aclose()
            st.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="vlmguard", version=__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.vlmguard = st

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        route = request.scope.get("route")
        st.metrics.errors.labels(getattr(route, "path", "other"), exc.code).inc()
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return ApiError(400, "invalid_request", str(exc.errors()[:1])).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, code, str(exc.detail)).response()

    @app.middleware("http")
    async def _timed(request: Request,
                     call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        st.metrics.http.labels(getattr(route, "path", "other")).observe(
            time.perf_counter() - t)
        return response

    # ---- health ------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        info = g.info()
        body = {"status": "ready" if st.ready else "not_ready", "version": __version__,
                "model": info["model"], "model_file": info["model_file"],
                "providers": info["providers"], "vision_providers": info["vision_providers"],
                "native_preprocessing": info["native_preprocessing"],
                "monitor": g.monitor, "threshold": g.threshold,
                "category_thresholds": info["category_thresholds"],
                "upstream": bool(cfg.upstream), "pending": st.pending}
        if not st.ready:
            body["error"] = st.ready_error
        return JSONResponse(body, status_code=200 if st.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ---- OpenAI moderation ----------------------------------------------------------------------
    @app.post("/v1/moderations")
    async def moderations(request: Request) -> dict[str, Any]:
        st.check_key(request)
        req: ModerationRequest = _validate(ModerationRequest, await st.json_body(request))
        inp = req.input
        texts: list[str]
        images: list[str]
        if isinstance(inp, str) or (inp and all(isinstance(x, str) for x in inp)):
            # every item checked to be a string just above
            texts = [inp] if isinstance(inp, str) else list(cast(list[str], inp))
            results = await st.run(g.rewrite_batch, [(None, t) for t in texts])
            entries = [moderation_result(r, ["text"]) for r in results]
        elif inp and all(isinstance(x, dict) for x in inp):
            parts = cast(list[dict[str, Any]], inp)  # every item checked to be a dict just above
            texts, images = [], []
            for k, part in enumerate(parts):
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind == "image_url":
                    iu = part.get("image_url")
                    url = iu.get("url") if isinstance(iu, dict) else iu
                    if not isinstance(url, str):
                        raise ApiError(400, "invalid_request",
                                       f"input[{k}].image_url.url must be a string")
                    images.append(url)
                else:
                    raise ApiError(400, "invalid_request", f"input[{k}]: a part is "
                                   "{type: text, text} or {type: image_url, image_url: {url}}")
            out: MessagesResult = await st.run(
                g.rewrite_messages, _user_turn("\n".join(texts), images), limits=st.limits)
            kinds = (["text"] if any(t.strip() for t in texts) else []) + (
                ["image"] if images else [])
            results = [out.result]
            entries = [moderation_result(out.result, kinds)]
        else:
            raise ApiError(400, "invalid_request", "input is a string, a non-empty array of "
                           "strings, or a non-empty array of content parts (not mixed)")
        for r in results:
            st.observe("/v1/moderations", r)
        return {"id": f"modr-{uuid.uuid4().hex}", "model": st.model_name, "results": entries}

    # ---- the guard's own schema -----------------------------------------------------------------
    @app.post("/v1/rewrite")
    async def rewrite(request: Request) -> dict[str, Any]:
        st.check_key(request)
        req: RewriteRequest = _validate(RewriteRequest, await st.json_body(request))
        body: dict[str, Any] = {"id": f"rw-{uuid.uuid4().hex}", "model": st.model_name}
        beside = sorted(req.model_fields_set & {"text", "image", "images"})
        if req.messages is not None and beside:  # it would go unread
            raise ApiError(400, "invalid_request", f"{', '.join(beside)}: sent with messages; "
                           "put the text and images in the messages' user turn", param=beside[0])
        if req.messages is not None:
            out = await st.run(g.rewrite_messages, req.messages, limits=st.limits)
            body.update(result=out.result.to_dict(), messages=out.messages, turn=out.turn)
            result = out.result
        else:
            images = ([req.image] if req.image else []) + list(req.images)
            if images:
                out = await st.run(g.rewrite_messages, _user_turn(req.text, images),
                                   limits=st.limits)
                result = out.result
            else:
                result = await st.run(g.rewrite, None, req.text)
            body["result"] = result.to_dict()
        st.observe("/v1/rewrite", result)
        return body

    # ---- LiteLLM generic guardrail API ----------------------------------------------------------
    @app.post("/beta/litellm_basic_guardrail_api")
    async def litellm_guardrail(request: Request) -> dict[str, Any]:
        """LiteLLM's contract: NONE (proceed), GUARDRAIL_INTERVENED (proceed with ``texts``
        rewritten) or BLOCKED. The last non-blank text is the request judged, with every
        image, read after the non-blank texts before it (as earlier user turns: LiteLLM
        sends every message's text without its role, and an ask split over two messages
        must be judged whole); each earlier text is also judged on its own and rewritten
        where it stands. Output (``input_type: response``) is not the guard's to judge:
        NONE. A request with tools (``LITELLM_UNJUDGED``) is refused: 400, as the proxy
        answers."""
        st.check_key(request)
        body = await st.json_body(request)
        req: LiteLLMGuardrailRequest = _validate(LiteLLMGuardrailRequest, body)
        params = req.additional_provider_specific_params or {}
        on_flagged = params.get("on_flagged", "rewrite")
        if on_flagged not in ("rewrite", "block"):
            raise ApiError(400, "invalid_request",
                           "additional_provider_specific_params.on_flagged is rewrite or block")
        images = list(req.images or [])
        if req.input_type != "request":
            return {"action": "NONE"}
        for key in LITELLM_UNJUDGED:
            if not is_empty(body.get(key)):
                raise _unjudged(key, "tool definitions and calls are text the model reads")
        idx = next((i for i in range(len(req.texts) - 1, -1, -1) if req.texts[i].strip()),
                   len(req.texts) - 1 if req.texts else None)
        text = req.texts[idx] if idx is not None else ""
        if not text.strip() and not images:
            return {"action": "NONE"}
        # every earlier text is a user turn: each is judged on its own, the last two also
        # as context of the text (Guard.rewrite_messages)
        where = [i for i in range(idx or 0) if req.texts[i].strip()]
        turns = [{"role": "user", "content": req.texts[i]} for i in where] + _user_turn(
            text, images)
        out = await st.run(g.rewrite_messages, turns, limits=st.limits)
        r = out.result
        if r.safe or r.action == "monitor":
            st.observe("/beta/litellm_basic_guardrail_api", r)
            return {"action": "NONE"}
        if on_flagged == "block" or idx is None:  # no text to carry a rewrite: block
            st.observe("/beta/litellm_basic_guardrail_api", r, "block")
            return {"action": "BLOCKED",
                    "blocked_reason": f"vlmguard: {r.reasoning.threat} {r.reasoning.intent}"}
        texts = list(req.texts)
        for k, i in enumerate([*where, idx]):  # each text rewritten where it stands
            if out.messages[k] != turns[k]:
                content = out.messages[k]["content"]
                texts[i] = content if isinstance(content, str) else next(
                    p["text"] for p in content if p.get("type") == "text")
        st.observe("/beta/litellm_basic_guardrail_api", r)
        return {"action": "GUARDRAIL_INTERVENED", "texts": texts}

    # ---- chat completions pre-filter proxy ------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        st.check_key(request)
        if not cfg.upstream or st.client is None:
            raise ApiError(501, "no_upstream", "this service has no --upstream to forward "
                           "chat completions to")
        body = await st.json_body(request)
        req: ChatRequest = _validate(ChatRequest, body)
        forward = forwardable(body)
        out = await st.run(g.rewrite_messages, req.messages, limits=st.limits,
                           inline_images=cfg.inline_images)
        st.observe("/v1/chat/completions", out.result)
        headers = {"content-type": "application/json", "accept-encoding": "identity",
                   "accept": request.headers.get("accept", "application/json")}
        if cfg.upstream_api_key:
            headers["authorization"] = f"Bearer {cfg.upstream_api_key}"
        elif not cfg.api_keys and "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
        url = cfg.upstream.rstrip("/") + "/chat/completions"
        upstream_req = st.client.build_request(
            "POST", url, headers=headers,
            content=json.dumps({**forward, "messages": out.messages}, ensure_ascii=False))
        # a non-streamed answer has a total deadline (headers and body); a stream's reads
        # each have upstream_timeout_s (httpx's timeout), since a long stream is expected
        started = time.monotonic()
        try:
            resp = await asyncio.wait_for(st.client.send(upstream_req, stream=True),
                                          cfg.upstream_timeout_s)
        except (httpx.HTTPError, asyncio.TimeoutError, TimeoutError) as exc:
            st.metrics.upstream.labels("unreachable").inc()
            raise ApiError(502, "upstream_unreachable", f"upstream {url}: {exc!r}",
                           "server_error") from exc
        st.metrics.upstream.labels(str(resp.status_code)).inc()
        r = out.result
        out_headers = {k: v for k, v in resp.headers.items()
                       if k.lower() in ("content-type", "cache-control", "x-request-id")}
        out_headers.update({"x-vlmguard-action": r.action, "x-vlmguard-category": r.category,
                            "x-vlmguard-risk": f"{r.risk:.4f}"})
        if req.stream:
            return StreamingResponse(resp.aiter_raw(), status_code=resp.status_code,
                                     headers=out_headers, background=BackgroundTask(resp.aclose))
        try:
            left = cfg.upstream_timeout_s - (time.monotonic() - started)
            content = await asyncio.wait_for(_read_capped(resp, cfg.upstream_max_bytes),
                                             max(left, 0.001))
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise ApiError(502, "upstream_timeout", f"upstream {url} did not answer in full "
                           f"within {cfg.upstream_timeout_s}s; nothing of it was forwarded",
                           "server_error") from exc
        except httpx.HTTPError as exc:
            raise ApiError(502, "upstream_unreachable", f"upstream {url}: {exc!r}",
                           "server_error") from exc
        finally:
            await resp.aclose()
        return Response(content, status_code=resp.status_code, headers=out_headers)

    # ---- playground -----------------------------------------------------------------------------
    if cfg.playground:
        page = (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")

        @app.get("/", response_class=HTMLResponse)
        async def playground() -> HTMLResponse:
            return HTMLResponse(page)

    return app

"""OpenAI-style chat messages in, the messages to forward out; image URLs fetched within limits.

``rewrite_messages`` judges the *last user turn*: its text (string content, or its text parts
joined by newlines) against every image of the conversation's user turns (an image sent
earlier still reaches the model with the new question, so a cross-modal request can span
turns). Each image is judged with the text and the riskiest verdict wins. The user turns'
text before it is read too (``Guard.rewrite(context=...)``: the last two, before the text),
so an ask split over turns is judged whole. A rewritten turn keeps its image parts and gets
the refined prompt as its only text (every text or refusal part replaced by one).

Image references are data URLs (``data:image/png;base64,...``) or http(s) URLs. A URL is
fetched with limits, since the caller controls it: size, total time, redirects, content type,
and no ``file://``, loopback, private, link-local or otherwise non-global address unless
allowed (nor one an IPv6 address carries: NAT64, 6to4, Teredo, IPv4-compatible). The
address is checked when the socket connects (every hop of a redirect, and the connection
uses the checked address), so DNS rebinding cannot slip past the check. Every failure
raises a typed error below, all of them :class:`~vlmguard.errors.InvalidInputError`.

In a stateless API the client writes the whole history, so the rest of it is judged too, each
text on its own (:func:`history_texts`): every earlier user turn and every system, developer,
assistant, tool or function message (an assistant "prefill" the model would continue, or an
earlier answer restating an ask, reads as instructions too). Each of those found unsafe is
rewritten in place as the last turn would be, and the riskiest verdict of all decides.

A text that is exactly one of the guard's own sections, unchanged (an app that stored the
rewritten prompt it sent as the turn; :meth:`Guard.is_own_section`), is judged as any text
(its verdict is the judge's: a section quoting a flagged ask still flags the chat) but is
never wrapped again: it is forwarded as it was sent. The last user turn is one only without
images and without user turns before it (the section's signature covers neither). An own
section among the earlier user turns is still read as their text before the last turn.

One call shares one budget (``guard.MAX_CALL_WINDOWS`` encoder windows, ``MAX_CALL_IMAGES``
images, ``REC_CALL_BUDGET`` of OCR recognition, ``ZOOM_CALL_BUDGET`` OCR zoom passes), and
every cheap check (the history's size,
the image count, each text's size and tokens, the windows they need) runs before any image
is fetched or decoded and before any model runs (``BudgetExceededError``).

Refused, since they would reach the model unread: audio or file parts, an image outside a
user turn, any part but text outside a user turn, a turn whose role is not one of
OpenAI's (``KNOWN_ROLES``), and any message key but ``role``, ``content``, ``name`` and
``refusal`` that holds a value (``tool_calls``, ``function_call``, ...: ``MESSAGE_KEYS``). The
messages to forward hold only ``role`` and ``content``: a ``name`` is not judged, so it is
dropped; an assistant's ``refusal`` string becomes a refusal part of its content.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import http.client
import ipaddress
import math
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .errors import (
    BudgetExceededError,
    GuardError,
    ImageDecodeError,
    InvalidConfigError,
    InvalidInputError,
    UnsupportedInputTypeError,
)
from .result import RewriteResult

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from .guard import Guard

__all__ = [
    "FetchLimits", "MessagesResult", "rewrite_messages", "split_messages", "load_image_ref",
    "fetch_image", "decode_data_url", "InvalidMessagesError", "ImageFetchError",
    "ImageURLNotAllowedError", "ImageFetchTimeoutError", "ImageFetchTooLargeError",
    "ImageFetchRedirectError", "ImageContentTypeError", "ImageFetchHTTPError",
]


# ---- errors ----------------------------------------------------------------------------------
class InvalidMessagesError(InvalidInputError):
    """The chat messages are malformed (no user turn, unknown part type, wrong shape)."""


class ImageFetchError(InvalidInputError):
    """An image reference (URL or data URL) could not be turned into image bytes."""


class ImageURLNotAllowedError(ImageFetchError):
    """The URL's scheme or address is not allowed (file://, loopback, private, ...)."""


class ImageFetchTimeoutError(ImageFetchError):
    """Fetching the image took longer than ``FetchLimits.timeout_s`` (all hops together)."""


class ImageFetchTooLargeError(ImageFetchError):
    """The image is larger than ``FetchLimits.max_bytes``."""


class ImageFetchRedirectError(ImageFetchError):
    """Too many redirects, or a redirect without a usable Location."""


class ImageContentTypeError(ImageFetchError):
    """The response's (or data URL's) media type is not an accepted image type."""


class ImageFetchHTTPError(ImageFetchError):
    """The server could not be reached, or answered with a status other than 200."""


# ---- limits and results ------------------------------------------------------------------------
@dataclass(frozen=True)
class FetchLimits:
    """How far the guard goes to fetch an image a request refers to."""

    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 5.0            # the whole fetch, every redirect hop included
    max_redirects: int = 3
    content_types: tuple[str, ...] = ("image/",)  # accepted media-type prefixes
    allow_http: bool = True           # plain http:// as well as https://
    allow_private: bool = False       # loopback, private, link-local, reserved addresses
    allowed_networks: tuple[str, ...] = ()  # e.g. ("10.1.2.0/24",): allowed even if private
    allow_file: bool = False          # file:// URLs (a path on the guard's machine)
    max_images: int = 8               # images per conversation that are judged
    user_agent: str = "vlmguard"

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_redirects", "max_images"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (
                    v == 0 and name != "max_redirects"):
                raise InvalidConfigError(f"FetchLimits.{name} must be a positive int, got {v!r}")
        if not isinstance(self.timeout_s, int | float) or not self.timeout_s > 0:
            raise InvalidConfigError(f"FetchLimits.timeout_s must be > 0, got {self.timeout_s!r}")
        try:
            nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(f"FetchLimits.allowed_networks: {exc}") from exc
        object.__setattr__(self, "_networks", nets)

    def address_allowed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether the guard may connect to ``ip``: the address and every IPv4 address it
        carries (:func:`_reaches`) must each be public or in ``allowed_networks``."""
        if self.allow_private:
            return True
        nets = self._networks  # type: ignore[attr-defined]

        def public(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
            return a.is_global and not a.is_multicast and not any(a in n for n in _NEVER_GLOBAL)

        return all(any(a in net for net in nets) or public(a) for a in _reaches(ip))


_NEVER_GLOBAL = (ipaddress.ip_network("fec0::/10"), ipaddress.ip_network("64:ff9b:1::/48"))
"""Refused whatever this Python's ``ipaddress`` tables say: deprecated site-local addresses,
and the local-use NAT64 prefix, whose IPv4 address sits where the gateway's prefix length
puts it (RFC 6052), so the guard cannot read it."""
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _reaches(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
             ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a connection to ``ip`` reaches: an IPv6 address that carries an IPv4
    one (NAT64, 6to4, Teredo, IPv4-compatible) reaches it through a gateway or tunnel, so
    both are judged; IPv4-mapped IPv6 is the IPv4 address itself."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return [ip]
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if ip in _NAT64 or int(ip) >> 32 == 0:  # 64:ff9b::a.b.c.d, ::a.b.c.d
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out += ip.teredo  # (server, client)
    return out


@dataclass(frozen=True)
class MessagesResult:
    """The messages to forward and the verdict behind them."""

    messages: list[dict[str, Any]]   # to forward: role and content, unsafe texts rewritten
    result: RewriteResult            # the deciding verdict (the riskiest of all)
    turn: int                        # index of the message behind ``result``
    results: tuple[RewriteResult, ...] = ()  # the last user turn: one per image (or one)
    image_refs: tuple[str, ...] = field(default=(), repr=False)  # the judged references
    history: tuple[tuple[int, RewriteResult], ...] = ()  # (index, verdict) of the other texts

    @property
    def rewritten(self) -> bool:
        return self.result.action == "rewrite"


@dataclass(frozen=True)
class _Turn:
    index: int
    text: str
    image_refs: tuple[str, ...]
    earlier: tuple[str, ...] = ()  # the text of each user turn before it, oldest first


# ---- images -------------------------------------------------------------------------------------
def _media_ok(media: str, limits: FetchLimits) -> bool:
    media = media.split(";", 1)[0].strip().lower()
    return any(media.startswith(p.lower()) for p in limits.content_types)


def decode_data_url(url: str, limits: FetchLimits) -> tuple[bytes, str]:
    """The bytes and media type of a ``data:`` URL, within ``limits.max_bytes``."""
    head, sep, payload = url.partition(",")
    if not sep:
        raise ImageDecodeError("a data URL needs a ',' before its data")
    meta = head[len("data:"):].split(";")
    media = meta[0].strip().lower() or "text/plain"
    if not _media_ok(media, limits):
        raise ImageContentTypeError(f"data URL media type {media!r} is not an accepted image "
                                    f"type ({', '.join(limits.content_types)})")
    if "base64" in (m.strip().lower() for m in meta[1:]):
        compact = "".join(payload.split())
        if len(compact) * 3 // 4 > limits.max_bytes:
            raise ImageFetchTooLargeError(f"data URL image is over {limits.max_bytes:,} bytes")
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageDecodeError(f"data URL is not valid base64: {exc}") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > limits.max_bytes:
        raise ImageFetchTooLargeError(f"data URL image is over {limits.max_bytes:,} bytes")
    if not data:
        raise ImageDecodeError("data URL holds no data")
    return data, media


class _DeadlineSocket(socket.socket):
    """A socket whose every read and send waits only until ``deadline``, the whole fetch's.
    http.client reads the status line and headers a ``recv`` at a time, and a timeout set
    once gave each its own wait: a host that dripped a header byte a second held the fetch
    for as long as it liked (s37 audit)."""

    deadline = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        _arm(self)
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        _arm(self)
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """:class:`_DeadlineSocket` over TLS (an ``SSLContext.sslsocket_class``)."""

    deadline = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None,
                  flags: int = 0) -> int:
        _arm(self)
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        _arm(self)
        super().sendall(data, flags)


def _arm(sock: socket.socket) -> None:
    """Set ``sock``'s timeout to the time left before its ``deadline``; TimeoutError once
    none is left."""
    remaining = getattr(sock, "deadline", math.inf) - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the image fetch's deadline has passed")
    sock.settimeout(remaining)


def _connect_checked(address: tuple[str, int], timeout: float | None = None,
                     source_address: Any = None, *, limits: FetchLimits,
                     deadline: float) -> socket.socket:
    """Resolve, refuse any disallowed address, then connect to a checked one (pinned)."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageFetchHTTPError(f"cannot resolve image host {host!r}: {exc}") from exc
    addrs = []
    for family, socktype, proto, _, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not limits.address_allowed(ip):
            raise ImageURLNotAllowedError(
                f"image host {host!r} resolves to {ip}, a non-public address; the guard "
                "fetches only from public addresses (FetchLimits.allow_private / "
                "allowed_networks)")
        addrs.append((family, socktype, proto, sockaddr))
    last: OSError | None = None
    for family, socktype, proto, sockaddr in addrs:
        sock = _DeadlineSocket(family, socktype, proto)
        sock.deadline = deadline
        try:
            _arm(sock)
            sock.connect(sockaddr)
            _arm(sock)  # a TLS handshake, next, is one operation bounded by what is left
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    if isinstance(last, TimeoutError):
        raise ImageFetchTimeoutError(f"connecting to {host!r} timed out") from last
    raise ImageFetchHTTPError(f"cannot connect to image host {host!r}: {last}") from last


def fetch_image(url: str, limits: FetchLimits | None = None) -> tuple[bytes, str]:
    """GET an image over http(s) within ``limits``; the bytes and the response media type."""
    limits = limits or FetchLimits()
    deadline = time.monotonic() + float(limits.timeout_s)
    for _hop in range(limits.max_redirects + 1):
        parts = _parse_url(url, limits)
        conn_cls = (http.client.HTTPSConnection if parts.scheme == "https"
                    else http.client.HTTPConnection)
        kwargs: dict[str, Any] = {"timeout": max(0.001, deadline - time.monotonic())}
        if parts.scheme == "https":
            kwargs["context"] = context = ssl.create_default_context()
            context.sslsocket_class = _DeadlineSSLSocket
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError as exc:
            raise ImageFetchError(f"bad port in image URL: {exc}") from exc
        conn = conn_cls(host, port, **kwargs)
        # every connection (each redirect hop) goes through the address check, and connects
        # to exactly the address that was checked
        conn._create_connection = functools.partial(  # type: ignore[attr-defined]
            _connect_checked, limits=limits, deadline=deadline)
        try:
            conn.connect()  # address check, connect and TLS handshake, within the deadline
            if not isinstance(conn.sock, _DeadlineSocket | _DeadlineSSLSocket):
                raise GuardError("image fetch: the connection is not bound by the deadline")
            conn.sock.deadline = deadline  # every later read and send: headers, body
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            conn.request("GET", target, headers={"User-Agent": limits.user_agent,
                                                 "Accept": "image/*",
                                                 "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise ImageFetchRedirectError(f"redirect {resp.status} without a Location")
                url = urllib.parse.urljoin(url, location)
                continue
            if resp.status != 200:
                raise ImageFetchHTTPError(f"image URL answered HTTP {resp.status}")
            media = (resp.getheader("Content-Type") or "").strip().lower()
            if not _media_ok(media, limits):
                raise ImageContentTypeError(
                    f"image URL answered with content type {media or 'none'!r}, not an "
                    f"accepted image type ({', '.join(limits.content_types)})")
            length = resp.getheader("Content-Length")
            if length and length.strip().isdigit() and int(length) > limits.max_bytes:
                raise ImageFetchTooLargeError(
                    f"image is {int(length):,} bytes; the limit is {limits.max_bytes:,}")
            return _read_capped(resp, limits), media.split(";", 1)[0]
        except ImageFetchError:
            raise
        except TimeoutError as exc:
            raise ImageFetchTimeoutError(f"image fetch over {limits.timeout_s}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ImageFetchHTTPError(f"image fetch failed: {exc!r}") from exc
        finally:
            conn.close()
    raise ImageFetchRedirectError(f"more than {limits.max_redirects} redirects")


def _read_capped(resp: http.client.HTTPResponse, limits: FetchLimits) -> bytes:
    """Read the body a chunk at a time, to stop at the byte cap (the socket stops each read
    at the fetch's deadline)."""
    chunks, total = [], 0
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_bytes:
            raise ImageFetchTooLargeError(f"image is over {limits.max_bytes:,} bytes")
        chunks.append(chunk)
    if not total:
        raise ImageFetchError("image URL answered with an empty body")
    return b"".join(chunks)


def _parse_url(url: str, limits: FetchLimits) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ImageFetchError(f"not a URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or (scheme == "http" and not limits.allow_http):
        allowed = "https" if not limits.allow_http else "http(s)"
        raise ImageURLNotAllowedError(f"image URL scheme {scheme or 'none'!r} is not allowed "
                                      f"(only {allowed}, or a data: URL)")
    if not parts.hostname:
        raise ImageFetchError("image URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ImageURLNotAllowedError("image URLs with credentials are not fetched")
    return parts


def load_image_ref(ref: object, limits: FetchLimits | None = None, *,
                   raw_base64: bool = False) -> tuple[bytes, str]:
    """The bytes and media type behind an image reference.

    ``ref`` is a ``data:`` URL, an http(s) URL, a ``file://`` URL (only with
    ``limits.allow_file``) or, with ``raw_base64``, bare base64 image data (LiteLLM's form).
    """
    limits = limits or FetchLimits()
    if not isinstance(ref, str):
        raise UnsupportedInputTypeError(f"an image reference must be a str URL, "
                                        f"not {type(ref).__name__}")
    ref = ref.strip()
    scheme = ref.split(":", 1)[0].lower() if ":" in ref[:16] else ""
    if scheme == "data":
        return decode_data_url(ref, limits)
    if scheme in ("http", "https"):
        return fetch_image(ref, limits)
    if scheme == "file":
        if not limits.allow_file:
            raise ImageURLNotAllowedError("file:// image URLs are not allowed "
                                          "(FetchLimits.allow_file)")
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(ref).path))
        try:
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise ImageFetchTooLargeError(f"{path} is {size:,} bytes; the limit is "
                                              f"{limits.max_bytes:,}")
            return path.read_bytes(), ""
        except OSError as exc:
            raise ImageFetchError(f"cannot read {path}: {exc}") from exc
    if raw_base64 and ref and not scheme:
        return decode_data_url("data:image/*;base64," + ref, limits)
    raise ImageURLNotAllowedError(f"image reference scheme {scheme or 'none'!r} is not "
                                  "supported (data:, http(s):)")


# ---- messages ---------------------------------------------------------------------------------
def _image_ref(part: Mapping[str, Any], where: str) -> str:
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, Mapping) else iu
    if not isinstance(url, str) or not url.strip():
        raise InvalidMessagesError(f"{where}: an image_url part needs image_url.url")
    return url


def _parts(content: object, where: str) -> list[Mapping[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content or ""}]
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        parts = list(content)
        for k, part in enumerate(parts):
            if not isinstance(part, Mapping):
                raise InvalidMessagesError(f"{where}.content[{k}] must be an object")
        return parts
    raise InvalidMessagesError(f"{where}.content must be a string or a list of parts, "
                               f"not {type(content).__name__}")


KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""The OpenAI chat roles. Only ``user`` turns are judged; any other role is refused."""

MESSAGE_KEYS = ("role", "content", "name", "refusal")
"""The message keys accepted. ``role`` and ``content`` are read and forwarded; a
``refusal`` string (an assistant's refused answer, as OpenAI's SDK returns it) is read and
forwarded as a refusal part of the content; ``name`` (a participant name some chat
templates render) is not judged, so it is dropped from the messages to forward. Any other
key with a value (``tool_calls``, ``function_call``, ``tool_call_id``, a custom key a
template may render) is refused: it would reach the model unread. Empty values
(``"refusal": null``, ``"tool_calls": []``, as clients echo them) are dropped."""


def _refusal_as_part(message: object) -> object:
    """An assistant message with a ``refusal`` string (as OpenAI's SDK returns a refused
    answer and clients echo it back) as the same message with that refusal as a refusal
    content part: read, judged and rewritten as one (``TEXT_PARTS``). Anything else as is."""
    if not isinstance(message, Mapping) or is_empty(message.get("refusal")):
        return message
    if not isinstance(message["refusal"], str):
        raise InvalidMessagesError("a message's refusal must be a str")
    content = message.get("content")
    parts: list[Any] = ([] if is_empty(content) else [{"type": "text", "text": content}]
                        if isinstance(content, str) else list(content)
                        if isinstance(content, Sequence) else [content])
    out = {k: v for k, v in message.items() if k != "refusal"}
    out["content"] = parts + [{"type": "refusal", "refusal": message["refusal"]}]
    return out


def is_empty(value: object) -> bool:
    """A value that carries nothing (clients echo ``"refusal": null``, ``"tool_calls": []``)."""
    return value is None or value == "" or value == [] or value == {}


def _forwarded(message: Mapping[str, Any]) -> dict[str, Any]:
    """The message as forwarded: only what the guard read (``role``, ``content``)."""
    return {k: message[k] for k in ("role", "content") if k in message}


def split_messages(messages: object) -> tuple[_Turn, list[str]]:
    """The last user turn (index, text, its images, the user turns' text before it) and
    every user image, latest first."""
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise InvalidMessagesError("messages must be a list of {role, content} objects")
    last = None
    per_turn: list[list[str]] = []
    user_texts: list[str] = []
    for i, raw in enumerate(messages):
        m = _refusal_as_part(raw)
        if not isinstance(m, Mapping):
            raise InvalidMessagesError(f"messages[{i}] must be an object, "
                                       f"not {type(m).__name__}")
        role = m.get("role")
        if not isinstance(role, str):
            raise InvalidMessagesError(f"messages[{i}] has no role")
        if role not in KNOWN_ROLES:  # "User" or "user ": a backend may read it as the user's
            raise InvalidMessagesError(f"messages[{i}] has role {role!r}; the guard knows "
                                       f"{', '.join(sorted(KNOWN_ROLES))} and refuses a turn "
                                       "it would otherwise forward unread")
        for key, value in m.items():
            if key not in MESSAGE_KEYS and not is_empty(value):
                raise InvalidMessagesError(
                    f"messages[{i}].{key}: the guard reads only a message's role, content and "
                    "refusal (a name is dropped) and refuses a key it would forward unread")
        if role != "user":
            continue
        texts, images = [], []
        for k, part in enumerate(_parts(m.get("content"), f"messages[{i}]")):
            kind = part.get("type")
            if kind == "text":
                t = part.get("text")
                if not isinstance(t, str):
                    raise InvalidMessagesError(f"messages[{i}].content[{k}].text must be a str")
                texts.append(t)
            elif kind == "image_url":
                images.append(_image_ref(part, f"messages[{i}].content[{k}]"))
            else:
                raise InvalidMessagesError(
                    f"messages[{i}].content[{k}] has type {kind!r}; the guard reads only text "
                    "and image_url parts and refuses what it cannot check")
        last = _Turn(i, "\n".join(t for t in texts if t), tuple(images), tuple(user_texts))
        user_texts.append(last.text)
        per_turn.append(images)
    if last is None:
        raise InvalidMessagesError("messages hold no user message to check")
    ordered: list[str] = []
    for images in reversed(per_turn):
        for ref in images:
            if ref not in ordered:
                ordered.append(ref)
    return last, ordered


TEXT_PARTS = ("text", "refusal")
"""The part types read as text (a refusal part only in an assistant turn): all of them are
judged, and a rewritten turn has all of them replaced by its one text part."""

MAX_HISTORY_CHARS = 100_000
"""Text the rest of a conversation may hold (:func:`history_texts`, all of it together): the
bound on what judging it costs, as ``MAX_TEXT_CHARS`` bounds one request's text."""


def history_texts(messages: Sequence[Mapping[str, Any]], last: int) -> list[tuple[int, str]]:
    """(index, text) of everything else the model reads: the user turns before message
    ``last`` and every system, developer, assistant, tool or function message, wherever it
    stands. Run after :func:`split_messages`, which has checked every user turn's parts; here
    the other roles' parts are checked: text (or an assistant's refusal) is read, an image
    outside a user turn or any other part is refused, since it would reach the model
    unjudged."""
    out = []
    for i, raw in enumerate(messages):
        m = cast(Mapping[str, Any], _refusal_as_part(raw))
        role = m["role"]
        if role == "user" and i >= last:
            continue
        texts = []
        for k, part in enumerate(_parts(m.get("content"), f"messages[{i}]")):
            kind = part.get("type")
            if role == "user" and kind == "image_url":
                continue  # judged with the last turn's text (split_messages)
            if kind not in TEXT_PARTS or (kind == "refusal" and role != "assistant"):
                raise InvalidMessagesError(
                    f"messages[{i}].content[{k}] ({role}) has type {kind!r}; outside a user "
                    "turn the guard reads only text parts and refuses what it cannot check")
            value = part.get(kind)  # a text part's "text", a refusal part's "refusal"
            if not isinstance(value, str):
                raise InvalidMessagesError(f"messages[{i}].content[{k}].{kind} must be a str")
            texts.append(value)
        text = "\n".join(t for t in texts if t)
        if text.strip():
            out.append((i, text))
    return out


def _rewrite_turn(message: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    """The message with the prompt as its only text: every part the guard read as text
    (``TEXT_PARTS``) is replaced by one text part where the first stood, so nothing it read
    is forwarded after the prompt's closing marker; image parts are kept."""
    out = dict(message)
    content = message.get("content")
    if content is None or isinstance(content, str):
        out["content"] = prompt
        return out
    new_parts: list[Any] = []
    placed = False
    for part in content:
        if part.get("type") in TEXT_PARTS:
            if not placed:
                new_parts.append({"type": "text", "text": prompt})
                placed = True
        else:
            new_parts.append(part)
    if not placed:
        new_parts.insert(0, {"type": "text", "text": prompt})
    out["content"] = new_parts
    return out


def _inline(message: Mapping[str, Any], data_urls: Mapping[str, str]) -> dict[str, Any]:
    """The message with fetched http(s) image URLs replaced by data URLs of the checked bytes."""
    content = message.get("content")
    if not isinstance(content, list):
        return dict(message)
    parts = []
    for part in content:
        if part.get("type") == "image_url":
            ref = _image_ref(part, "message")
            if ref in data_urls:
                part = copy.deepcopy(dict(part))
                iu = part["image_url"]
                if isinstance(iu, dict):
                    iu["url"] = data_urls[ref]
                else:
                    part["image_url"] = {"url": data_urls[ref]}
        parts.append(part)
    return {**message, "content": parts}


def rewrite_messages(guard: Guard, messages: Sequence[Mapping[str, Any]], *,
                     limits: FetchLimits | None = None, inline_images: bool = False,
                     load: Callable[[str, FetchLimits], tuple[bytes, str]] | None = None
                     ) -> MessagesResult:
    """Judge the last user turn with every user image, and after the user turns before it
    (``Guard.rewrite(context=...)``), and the rest of the history (:func:`history_texts`)
    text by text; return the messages to forward.

    ``inline_images`` replaces each fetched http(s) image URL by a data URL of the bytes
    that were judged, so the model sees exactly what the guard saw (the server's proxy does
    this: a URL could answer differently on a second fetch).
    """
    limits = limits or FetchLimits()
    load = load or load_image_ref
    if isinstance(messages, Sequence) and not isinstance(messages, str | bytes):
        messages = [cast(Mapping[str, Any], _refusal_as_part(m)) for m in messages]
    turn, refs = split_messages(messages)
    if len(refs) > limits.max_images:
        raise BudgetExceededError(f"the conversation holds {len(refs)} images; the guard "
                                  f"judges at most {limits.max_images} (FetchLimits.max_images)")
    others = history_texts(messages, turn.index)
    chars = sum(len(t) for _, t in others)
    if chars > MAX_HISTORY_CHARS:  # judging it would cost minutes; passing it unread, a hole
        raise BudgetExceededError(
            f"the conversation's history holds {chars:,} characters of text; the guard judges "
            f"at most {MAX_HISTORY_CHARS:,} besides the last user turn. Send less history.")
    # One budget for the whole call (MAX_CALL_WINDOWS, MAX_CALL_IMAGES, REC_CALL_BUDGET,
    # ZOOM_CALL_BUDGET), and every cheap check (history size, image count, each text and
    # its tokens, the windows they need) before any image is fetched (rewrite_call calls
    # fetch last) or decoded, or any model runs. The last turn's text is judged with each image (or
    # alone), the history text by text.
    images: list[tuple[bytes, str]] = []  # (bytes, media type), for inline_images

    def fetch() -> list[bytes]:
        images.extend(load(ref, limits) for ref in refs)
        return [data for data, _ in images]

    results, verdicts = guard.rewrite_call(
        [(bool(refs), turn.text)] * max(len(refs), 1), fetch, context=turn.earlier,
        alone=[t for _, t in others])
    history = [(i, r) for (i, _), r in zip(others, verdicts, strict=True)]

    def riskiest(judged: Sequence[tuple[int, RewriteResult]]) -> tuple[int, RewriteResult]:
        return max(judged, key=lambda ir: (not ir[1].safe, ir[1].risk))

    last = riskiest([(turn.index, r) for r in results])  # over the images
    index, result = riskiest([last, *history])
    out = [_forwarded(m) for m in messages]
    for i, r in [last, *history]:
        if r.action == "rewrite":
            out[i] = _rewrite_turn(out[i], r.prompt)
    if inline_images:
        data_urls = {ref: f"data:{media or 'image/png'};base64,"
                          + base64.b64encode(data).decode("ascii")
                     for ref, (data, media) in zip(refs, images, strict=True)
                     if not ref.lower().startswith("data:")}
        if data_urls:
            out = [_inline(m, data_urls) if m.get("role") == "user" else m for m in out]
    return MessagesResult(out, result, index, tuple(results), tuple(refs), tuple(history))

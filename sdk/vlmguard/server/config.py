"""The service's settings: each one a command-line flag, an environment variable
(``VLMGUARD_<NAME>``) and a key of an optional JSON config file, in that order of precedence."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError
from ..messages import FetchLimits

ENV_PREFIX = "VLMGUARD_"


def _bool(v: object) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def is_number(v: object) -> bool:
    """An int or a float, not a bool (which Python counts as an int)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def _list(v: object) -> tuple[str, ...]:
    if isinstance(v, list | tuple):
        return tuple(str(x).strip() for x in v if str(x).strip())
    return tuple(x.strip() for x in str(v).split(",") if x.strip())


def _thresholds(v: object) -> dict[str, float]:
    """``{"hate": 0.8}`` or ``"hate=0.8,privacy=0.9"``."""
    if isinstance(v, Mapping):
        return {str(k): float(x) for k, x in v.items()}
    out = {}
    for item in _list(v):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected category=threshold, got {item!r}")
        out[key.strip()] = float(value)
    return out


MIN_KEY_BYTES = 16  # as vlmguard.guard.MIN_KEY_BYTES (this module stays light for --help)


def _key(v: object) -> bytes:
    """A signing key given as hex (when every character is a hex digit) or else base64.
    Errors never quote the value: it is a secret."""
    if isinstance(v, bytes):
        return v
    s = str(v).strip()
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", s):
        return bytes.fromhex(s)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the signing key is neither hex nor base64") from None


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``vlmguard serve`` can be told. Secrets (API keys) are best set from the
    environment, where ``ps`` does not show them."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "port to listen on"})
    upstream: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible base URL that /v1/chat/completions forwards to, "
                "e.g. http://localhost:8001/v1"})
    upstream_api_key: str | None = field(default=None, metadata={
        "help": "bearer token sent upstream (default: the client's own Authorization header "
                "when the service has no API keys of its own)"})
    upstream_timeout_s: float = field(default=120.0, metadata={
        "help": "longest the upstream may take to answer a non-streamed request in full, "
                "and to send each piece of a stream (502 above)"})
    upstream_max_bytes: int = field(default=32 * 1024 * 1024, metadata={
        "help": "largest non-streamed upstream answer relayed (502 above)"})
    api_keys: tuple[str, ...] = field(default=(), metadata={
        "help": "comma-separated keys clients must send (Authorization: Bearer or x-api-key);"
                " unset: any bearer token is accepted; set but holding no key: an error"})
    model: str | None = field(default=None, metadata={"help": "bundle directory"})
    providers: tuple[str, ...] = field(default=(), metadata={
        "help": "ONNX Runtime providers in order (default TensorRT, CUDA, CPU as available)"})
    vision_providers: tuple[str, ...] = field(default=(), metadata={
        "help": "providers for the tagger and OCR (default CPU: faster than CUDA on images)"})
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime threads"})
    threshold: float | None = field(default=None, metadata={"help": "risk threshold"})
    categories: tuple[str, ...] = field(default=(), metadata={
        "help": "enforced category keys (default: all thirteen)"})
    category_thresholds: dict[str, float] = field(default_factory=dict, metadata={
        "help": "per-category thresholds, e.g. specialized_advice=0.9,hate=0.5"})
    monitor: bool = field(default=False, metadata={
        "help": "monitor-only: report verdicts, never rewrite or block"})
    precedents: bool = field(default=False, metadata={
        "help": "also compare requests by meaning with labelled training requests "
                "(vlmguard.precedent): more bare harmful asks caught, a few more look-alikes"})
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata={
        "help": "largest request body accepted (413 above)"})
    request_timeout_s: float = field(default=30.0, metadata={
        "help": "longest a guard check may take, image fetches included (504 above)"})
    workers: int = field(default=2, metadata={"help": "threads running guard checks"})
    max_pending: int = field(default=64, metadata={
        "help": "guard checks queued or running at once before requests get 503"})
    inline_images: bool = field(default=True, metadata={
        "help": "proxy: forward fetched image URLs as data URLs of the bytes the guard "
                "checked, so the model sees exactly what was judged"})
    image_max_bytes: int = field(default=10 * 1024 * 1024, metadata={
        "help": "largest image fetched or decoded from a data URL"})
    image_timeout_s: float = field(default=5.0, metadata={"help": "image fetch time limit"})
    image_max_redirects: int = field(default=3, metadata={"help": "image fetch redirects"})
    max_images: int = field(default=8, metadata={"help": "images judged per request"})
    allow_private_image_urls: bool = field(default=False, metadata={
        "help": "let image URLs reach loopback/private addresses (off: SSRF protection)"})
    image_allowed_networks: tuple[str, ...] = field(default=(), metadata={
        "help": "CIDR networks image URLs may reach even though private"})
    playground: bool = field(default=True, metadata={"help": "serve the playground at /"})
    signing_key: bytes | None = field(default=None, repr=False, metadata={
        "help": "key (hex or base64, 16 bytes or more; best from the environment) the guard "
                "signs its rewritten prompts with, so one sent back as chat history is known "
                "as already guarded; replicas share it. Unset: a random key per process"})

    def __post_init__(self) -> None:
        """Range checks: a bad value is an InvalidConfigError here, not a server that
        answers every request 504/413/503 or a traceback from the socket layer."""
        for name in ("request_timeout_s", "upstream_timeout_s", "image_timeout_s"):
            v = getattr(self, name)
            if not (is_number(v) and math.isfinite(v) and v > 0):
                raise InvalidConfigError(f"{name} must be a finite number of seconds above 0, "
                                         f"not {v!r}")
        ranges = {"port": (1, 65535), "max_body_bytes": (1, None), "max_pending": (1, None),
                  "workers": (1, None), "image_max_bytes": (1, None), "max_images": (1, None),
                  "image_max_redirects": (0, None),
                  "upstream_max_bytes": (1, None)}
        for name, (low, high) in ranges.items():
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= low
                    and (high is None or v <= high)):
                span = f"from {low} to {high}" if high else f"{low} or more"
                raise InvalidConfigError(f"{name} must be a whole number {span}, not {v!r}")
        if isinstance(self.api_keys, str) or not all(  # a str would be keys of one letter
                isinstance(k, str) and k.strip() == k != "" for k in self.api_keys):
            raise InvalidConfigError("api_keys must be a tuple of non-blank keys without "
                                     f"surrounding spaces, not {self.api_keys!r}")
        if self.upstream is not None:
            _check_upstream(self.upstream)
        if self.signing_key is not None and not (
                isinstance(self.signing_key, bytes) and len(self.signing_key) >= MIN_KEY_BYTES):
            size = (f"{len(self.signing_key)} bytes" if isinstance(self.signing_key, bytes)
                    else type(self.signing_key).__name__)
            raise InvalidConfigError(f"signing_key must be {MIN_KEY_BYTES} bytes or more "
                                     f"(32 hex digits), not {size}")
        self.fetch_limits()  # its own checks too (image_allowed_networks)

    def fetch_limits(self) -> FetchLimits:
        return FetchLimits(max_bytes=self.image_max_bytes, timeout_s=self.image_timeout_s,
                           max_redirects=self.image_max_redirects,
                           allow_private=self.allow_private_image_urls,
                           allowed_networks=self.image_allowed_networks,
                           max_images=self.max_images)

    @classmethod
    def load(cls, cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
             config_file: str | Path | None = None) -> ServerConfig:
        """Merge CLI values (None/absent = not given), ``VLMGUARD_*`` variables, a JSON file."""
        cli = dict(cli or {})
        env = os.environ if env is None else env
        config_file = config_file or cli.pop("config", None) or env.get(ENV_PREFIX + "CONFIG")
        from_file: dict[str, Any] = {}
        if config_file:
            try:
                from_file = json.loads(Path(config_file).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InvalidConfigError(f"cannot read config file {config_file}: {exc}") from exc
            if not isinstance(from_file, dict):
                raise InvalidConfigError(f"{config_file}: expected a JSON object")
        names = {f.name: f for f in fields(cls)}
        unknown = set(from_file) - set(names)
        if unknown:
            raise InvalidConfigError(f"{config_file}: unknown settings {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name in names:
            raw: Any = cli.get(name)
            where = f"--{name.replace('_', '-')}"
            if raw is None and ENV_PREFIX + name.upper() in env:
                raw, where = env[ENV_PREFIX + name.upper()], ENV_PREFIX + name.upper()
            if raw is None and name in from_file:
                raw, where = from_file[name], f"{config_file}: {name}"
            if raw is None:
                continue
            try:
                values[name] = _PARSERS[name](raw)
            except (TypeError, ValueError) as exc:
                raise InvalidConfigError(f"{where}: {exc}") from exc
            if name == "api_keys" and not values[name]:  # an unset secret: "", ",", " "
                raise InvalidConfigError(f"{where}: {raw!r} holds no API key; the service "
                                         "would accept every request (leave it unset for that)")
        return cls(**values)


def _check_upstream(url: object) -> None:
    """An upstream httpx can send to: a bad one is an error at start, not a 500 on every
    proxied request."""
    try:  # the server's extra: this module stays stdlib-only for ``serve --help``
        import httpx
    except ImportError:  # no proxy to send with either (the app needs httpx)
        return
    try:
        parsed = httpx.URL(str(url).rstrip("/") + "/chat/completions")
    except httpx.InvalidURL as exc:
        raise InvalidConfigError(f"upstream {url!r} is not a URL: {exc}") from exc
    if not isinstance(url, str) or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidConfigError(f"upstream must be an http(s) URL with a host, such as "
                                 f"http://localhost:8001/v1, not {url!r}")
    if "?" in url or "#" in url:  # the proxy appends /chat/completions: it would land in them
        raise InvalidConfigError(f"upstream must be a base URL without a query or fragment "
                                 f"(the proxy appends /chat/completions), not {url!r}")


def _opt(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v in (None, "") else parse(v)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "host": str, "port": int, "upstream": _opt(str), "upstream_api_key": _opt(str),
    "upstream_timeout_s": float, "upstream_max_bytes": int, "api_keys": _list,
    "model": _opt(str), "providers": _list,
    "vision_providers": _list, "threads": _opt(int), "threshold": _opt(float),
    "categories": _list,
    "category_thresholds": _thresholds, "monitor": _bool, "precedents": _bool,
    "max_body_bytes": int,
    "request_timeout_s": float, "workers": int, "max_pending": int, "inline_images": _bool,
    "image_max_bytes": int, "image_timeout_s": float, "image_max_redirects": int,
    "max_images": int, "allow_private_image_urls": _bool, "image_allowed_networks": _list,
    "playground": _bool, "signing_key": _opt(_key),
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """One flag per setting; unset flags stay absent so the environment and file apply."""
    ap.add_argument("--config", default=argparse.SUPPRESS,
                    help=f"JSON file of settings (env {ENV_PREFIX}CONFIG)")
    for f in fields(ServerConfig):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata.get('help', '')} (env {env})"
        if _PARSERS[f.name] is _bool:
            ap.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                            action=argparse.BooleanOptionalAction, help=help_text)
        else:
            ap.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=help_text)

"""Command line: ``vlmguard rewrite --image PATH --text TEXT [--json]``, ``vlmguard info`` and
``vlmguard serve [--host H] [--port P] [--upstream URL]`` (the HTTP service, an extra)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from .errors import InvalidConfigError, InvalidInputError, ModelLoadError, VLMGuardError

if TYPE_CHECKING:
    from .guard import Guard


def _names(flag: str, value: str | None) -> list[str] | None:
    """A comma-separated provider list; given but naming none (``--providers ,``) is an
    error, not a silent fall back to the defaults."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise InvalidConfigError(f"{flag} {value!r} names no execution provider")
    return names


def _guard(args: argparse.Namespace) -> Guard:  # Guard imported lazily for a fast --help
    from .guard import Guard

    providers = _names("--providers", args.providers)
    vision = _names("--vision-providers", args.vision_providers)
    return Guard.from_pretrained(args.model, providers=providers, threshold=args.threshold,
                                 threads=args.threads, vision_providers=vision,
                                 precedents=bool(args.precedents))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vlmguard", description="On-device guard for VLM requests.")
    ap.add_argument("--model", help="bundle directory (default: the bundled model)")
    ap.add_argument("--providers", help="comma-separated ONNX Runtime providers, in order")
    ap.add_argument("--vision-providers",
                    help="providers for the tagger and OCR (default: CPU, faster on images)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--precedents", action="store_true", default=None,
                    help="also compare the request by meaning with labelled training requests "
                         "(catches more bare harmful asks, flags a few more look-alikes)")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    rw = sub.add_parser("rewrite", help="check one request and print the refined prompt")
    rw.add_argument("--image", help="image path (optional)")
    rw.add_argument("--text", default="", help="the user's request")
    rw.add_argument("--json", action="store_true", help="print the whole result as JSON")
    info = sub.add_parser("info", help="version, model, providers, native preprocessing")
    info.add_argument("--json", action="store_true")
    serve = sub.add_parser("serve", help="run the HTTP service (pip install "
                           "'vlmguard-sdk[server]'); every flag also reads VLMGUARD_<FLAG>")
    _add_serve_arguments(serve)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return _serve(args)
    try:
        guard = _guard(args)
        if args.command == "info":
            data = guard.info()
            _emit(json.dumps(data, indent=2) if args.json else
                  "\n".join(f"{k}: {v}" for k, v in data.items()))
            return 0
        result = guard.rewrite(args.image, args.text)
    except Exception as exc:  # a bug must still fail closed, with a message, not a traceback
        return _failed(exc)
    if args.json:
        _emit(result.to_json(indent=2))
    else:
        verdict = "SAFE" if result.safe else f"UNSAFE ({result.category}, {result.hazard_code})"
        _emit(f"# {verdict} risk={result.risk:.3f} source={result.source}\n{result.prompt}")
    return 0


def _failed(exc: Exception) -> int:
    """Say why on one line of stderr and return the exit code: 2 for what the caller must
    fix (a --model that does not load, an option, an input), 3 for a guard failure (fail
    closed), a bug included."""
    if isinstance(exc, ModelLoadError):  # a bad --model (or bundle): not a guard failure
        why, code = f"cannot load the model: {_one_line(exc)}", 2
    elif isinstance(exc, InvalidInputError):
        why, code = f"invalid input: {exc}", 2
    elif isinstance(exc, InvalidConfigError):
        why, code = f"invalid configuration: {exc}", 2
    elif isinstance(exc, VLMGuardError):
        why, code = f"guard failed, fail closed: {exc}", 3
    else:
        why, code = f"guard failed, fail closed: {exc!r}", 3
    print(f"vlmguard: {why}", file=sys.stderr)
    return code


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (an ONNX Runtime message can span several)."""
    return " ".join(str(exc).split())


def _emit(text: str) -> None:
    """Print to stdout; a reader that stops early (``| head -1``) ends the output quietly
    instead of with a BrokenPipeError traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that cannot raise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _add_serve_arguments(ap: argparse.ArgumentParser) -> None:
    from .server.config import add_arguments  # stdlib only: no extra needed for --help

    add_arguments(ap)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, serve

    try:
        cfg = ServerConfig.load({k: v for k, v in vars(args).items()
                                 if k not in ("command", "verbose")})
        serve(cfg)
    except ImportError as exc:
        print(f"vlmguard: {exc}", file=sys.stderr)
        return 2
    except VLMGuardError as exc:  # a bad setting or --model is configuration: exit 2
        print(f"vlmguard: cannot start the service: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidInputError | InvalidConfigError
                               | ModelLoadError) else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``vlmguard serve``: the guard as an HTTP service (``pip install "vlmguard-sdk[server]"``).

Endpoints: ``POST /v1/moderations`` (OpenAI's schema), ``POST /v1/rewrite`` (the guard's),
``POST /beta/litellm_basic_guardrail_api`` (LiteLLM's generic guardrail API),
``POST /v1/chat/completions`` (pre-filter proxy to ``--upstream``), ``GET /healthz``,
``/readyz``, ``/metrics`` and a playground at ``/``.

The settings (:class:`ServerConfig`) need nothing beyond the core package, so the CLI can
describe them; the app itself imports FastAPI and friends on first use.
"""

from __future__ import annotations

from typing import Any

from .config import ServerConfig

__all__ = ["ApiError", "ServerConfig", "build_guard", "create_app", "serve"]
_LAZY = ("ApiError", "build_guard", "create_app")


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import prometheus_client  # noqa: F401
        import pydantic  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the vlmguard service needs its extra: pip install "
                          f"'vlmguard-sdk[server]' ({exc.name} is missing)") from exc


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        _require_extra()
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve(cfg: ServerConfig) -> None:
    """Load the guard, then serve until interrupted (uvicorn, one process)."""
    _require_extra()
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info",
                timeout_graceful_shutdown=10)

"""Pensieve server: the Anthropic Messages API over HTTP (Starlette app, served by Hypercorn).

    from pensieve.server import bind_socket, create_app, serve
    app = create_app(service, config, engine=engine, device=engine.model.device.to_dict())
    serve(app, config)  # blocks until SIGINT/SIGTERM

Routes: ``POST /v1/messages`` (SSE when ``stream: true`` or ``x-stream: true``),
``POST /v1/messages/count_tokens``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /api/ps``,
``GET /health``,
``GET /metrics``, ``GET``/``HEAD /``. ``/v1/*`` and ``/api/ps`` need an API key (see :class:`KeyPolicy`).
"""

from pensieve.server.app import create_app
from pensieve.server.auth import DEV_KEY, DEV_KEY_PREFIX, KeyPolicy, is_loopback, require_safe_bind
from pensieve.server.routes import EngineStatus, LoadedModels
from pensieve.server.runner import bind_socket, serve

__all__ = [
    "DEV_KEY",
    "DEV_KEY_PREFIX",
    "EngineStatus",
    "KeyPolicy",
    "LoadedModels",
    "bind_socket",
    "create_app",
    "is_loopback",
    "require_safe_bind",
    "serve",
]

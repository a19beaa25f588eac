"""Assembling the Starlette app: routes, the API-key guard, request context and error handlers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from pensieve.claude import MessagesService
from pensieve.core.config import Config
from pensieve.server.auth import ApiKeyGuard, KeyPolicy
from pensieve.server.context import RequestContextMiddleware
from pensieve.server.errors import EXCEPTION_HANDLERS
from pensieve.server.metrics import Metrics
from pensieve.server.routes import EngineStatus, Handlers

__all__ = ["create_app"]


def create_app(
    service: MessagesService,
    config: Config,
    *,
    engine: EngineStatus,
    device: Mapping[str, Any] | None = None,
) -> Starlette:
    """The HTTP app serving ``service``.

    ``engine`` reports liveness, queue depth and the model id for /health and /metrics;
    ``device`` is the device description /health shows. Raises ConfigError for a
    non-loopback ``server.host`` without ``server.api_keys``.
    """
    policy = KeyPolicy(config.server)
    metrics = Metrics(queue_depth=lambda: engine.queue_depth)
    handlers = Handlers(service, config.limits, engine, metrics, device or {})
    guarded = [Middleware(ApiKeyGuard, policy=policy)]
    routes = [
        Route("/v1/messages", handlers.messages, methods=["POST"], middleware=guarded),
        Route("/v1/messages/count_tokens", handlers.count_tokens, methods=["POST"], middleware=guarded),
        Route("/v1/models", handlers.list_models, methods=["GET"], middleware=guarded),
        Route("/v1/models/{model_id:path}", handlers.get_model, methods=["GET"], middleware=guarded),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
        Route("/", handlers.root, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware, metrics=metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
    )

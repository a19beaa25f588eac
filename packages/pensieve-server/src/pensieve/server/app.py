"""Assembling the Starlette app: routes, admission, CORS, request context and error handlers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from pensieve.claude import MessagesService
from pensieve.core.config import Config
from pensieve.server.auth import ApiKeyGuard, KeyPolicy
from pensieve.server.context import RequestContextMiddleware
from pensieve.server.errors import EXCEPTION_HANDLERS, internal_error
from pensieve.server.limits import Admission, InFlight, RateLimiter
from pensieve.server.metrics import Metrics
from pensieve.server.routes import EngineStatus, Handlers
from pensieve.server.shutdown import Drain

__all__ = ["create_app"]

# Headers a browser client may read: the request id, and when to retry after a 429.
_EXPOSED_HEADERS = ["request-id", "retry-after"]


def create_app(
    service: MessagesService,
    config: Config,
    *,
    engine: EngineStatus,
    device: Mapping[str, Any] | None = None,
) -> Starlette:
    """The HTTP app serving ``service``.

    ``engine`` reports liveness, queue depth and the default model for /health and /metrics
    (a ``pensieve.engine.ModelPool`` also reports its loaded models, for /health and /api/ps);
    ``device`` is the device description /health shows. Raises ConfigError for a
    non-loopback ``server.host`` without ``server.api_keys`` (or CORS ``*`` without them).
    ``app.state.drain`` is the app's :class:`~pensieve.server.shutdown.Drain`, which ``serve`` uses.
    """
    limits = config.limits
    policy = KeyPolicy(config.server)
    limiter = (
        RateLimiter(limits.rate_limit_per_minute, limits.rate_limit_burst)
        if limits.rate_limit_per_minute
        else None
    )
    drain = Drain()
    in_flight = InFlight()
    metrics = Metrics(queue_depth=lambda: engine.queue_depth)
    handlers = Handlers(service, limits, engine, metrics, device or {}, drain)
    guarded = [
        Middleware(ApiKeyGuard, policy=policy, limiter=limiter),
        Middleware(Admission, limits=limits, drain=drain, counter=in_flight),
    ]
    routes = [
        Route("/v1/messages", handlers.messages, methods=["POST"], middleware=guarded),
        Route("/v1/messages/count_tokens", handlers.count_tokens, methods=["POST"], middleware=guarded),
        Route("/v1/models", handlers.list_models, methods=["GET"], middleware=guarded),
        Route("/v1/models/{model_id:path}", handlers.get_model, methods=["GET"], middleware=guarded),
        Route("/api/ps", handlers.loaded_models, methods=["GET"], middleware=guarded),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
        Route("/", handlers.root, methods=["GET"]),
    ]
    middleware = [Middleware(RequestContextMiddleware, metrics=metrics, fallback=internal_error)]
    if config.server.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=config.server.cors_origins,
                allow_methods=["GET", "HEAD", "POST"],
                allow_headers=["*"],  # the SDKs send many x-stainless-* and anthropic-* headers
                expose_headers=_EXPOSED_HEADERS,
                max_age=600,
            )
        )
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
    app.state.drain = drain
    return app

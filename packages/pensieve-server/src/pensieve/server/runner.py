"""Running an app under Hypercorn (asyncio) on a socket bound before serving starts."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

from pensieve.core.config import Config
from pensieve.core.errors import ConfigError, ConfigProblem
from pensieve.server.auth import require_safe_bind

__all__ = ["bind_socket", "serve"]

logger = logging.getLogger("pensieve.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one; read it from ``getsockname``).

    Binding before serving lets callers report the real address and know the port is taken
    (connections queue in the backlog) before Hypercorn's loop runs.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError([ConfigProblem("server.host", f"cannot resolve {host!r}: {exc.strerror}")]) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            [ConfigProblem("server.port", f"cannot listen on {host}:{port}: {exc.strerror}")]
        ) from exc
    return sock


def serve(
    app: ASGIApp,
    config: Config,
    *,
    sock: socket.socket | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``app`` until stopped; blocks the calling thread.

    Listens on ``sock`` (taken over and closed at the end) or on ``config.server.host``/``port``.
    Without ``stop`` it stops on SIGINT/SIGTERM (main thread only); with it, when it is set —
    either way gracefully, giving open requests ``server.shutdown_grace_seconds`` to finish.
    To know when it listens (or which port 0 chose), bind with ``bind_socket`` first.
    """
    require_safe_bind(config.server)
    if sock is None:
        sock = bind_socket(config.server.host, config.server.port)
    hypercorn = HypercornConfig()
    # Hypercorn adopts the descriptor and closes it when it is done.
    hypercorn.bind = [f"fd://{sock.detach()}"]
    hypercorn.graceful_timeout = config.server.shutdown_grace_seconds
    hypercorn.accesslog = None  # the app writes its own access line, with request id and tokens
    hypercorn.errorlog = logger
    hypercorn.include_server_header = False
    trigger = None if stop is None else _waiter(stop)
    # Hypercorn types ASGI more narrowly than Starlette does; any ASGI 3 app is fine here.
    asyncio.run(hypercorn_serve(app, hypercorn, shutdown_trigger=trigger))  # type: ignore[arg-type]


def _waiter(stop: threading.Event) -> Callable[[], Awaitable[None]]:
    async def wait() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.05)

    return wait

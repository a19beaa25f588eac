"""Running an app under Hypercorn (asyncio) on a socket bound before serving starts."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

from pensieve.core.config import Config
from pensieve.core.errors import ConfigError, ConfigProblem
from pensieve.server.auth import require_safe_bind
from pensieve.server.shutdown import drain_of

__all__ = ["bind_socket", "serve"]

logger = logging.getLogger("pensieve.server")

# Time Hypercorn allows after the grace period for the error events of aborted answers to go out.
_ABORT_MARGIN_SECONDS = 5.0


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
    Without ``stop`` it stops on SIGINT/SIGTERM (main thread only; a second signal cuts the
    grace period short); with it, when it is set. Either way new requests are refused and open
    ones get ``server.shutdown_grace_seconds`` to finish; then the answers of an app made by
    ``create_app`` end with an error (an SSE ``error`` event, or a 529), never mid-frame.
    To know when it listens (or which port 0 chose), bind with ``bind_socket`` first.
    """
    require_safe_bind(config.server)
    if sock is None:
        sock = bind_socket(config.server.host, config.server.port)
    asyncio.run(_serve(app, config, sock, stop))


def _hypercorn_config(config: Config, sock: socket.socket) -> HypercornConfig:
    limits = config.limits
    hypercorn = HypercornConfig()
    # Hypercorn adopts the descriptor and closes it when it is done.
    hypercorn.bind = [f"fd://{sock.detach()}"]
    hypercorn.graceful_timeout = config.server.shutdown_grace_seconds + _ABORT_MARGIN_SECONDS
    hypercorn.accesslog = None  # the app writes its own access line, with request id and tokens
    hypercorn.errorlog = logger
    hypercorn.include_server_header = False
    # Hypercorn closes a connection idle this long, and "idle" lasts until a request's head is
    # complete: this also bounds clients that send their headers slowly.
    hypercorn.keep_alive_timeout = limits.keep_alive_timeout_seconds
    hypercorn.h11_max_incomplete_size = limits.max_header_bytes
    hypercorn.h2_max_header_list_size = limits.max_header_bytes
    # read_timeout stays None: it bounds every read, so it would also cut long answers (the client
    # sends nothing while it waits). The app bounds body reads instead (limits.read_timeout_seconds).
    return hypercorn


async def _serve(app: ASGIApp, config: Config, sock: socket.socket, stop: threading.Event | None) -> None:
    loop = asyncio.get_running_loop()
    drain = drain_of(app)
    grace = config.server.shutdown_grace_seconds
    requested = asyncio.Event()

    def request_stop() -> None:
        if requested.is_set() and drain is not None:
            logger.info("stopping now: ending the open requests")
            drain.abort()
        requested.set()

    async def shutdown_trigger() -> None:
        await requested.wait()
        logger.info("shutting down: open requests have %g s to finish", grace)
        if drain is not None:
            drain.begin()
            loop.call_later(grace, drain.abort)

    signals = (signal.SIGINT, signal.SIGTERM) if stop is None else ()
    for number in signals:
        loop.add_signal_handler(number, request_stop)
    watcher = None if stop is None else loop.create_task(_watch(stop, request_stop))
    try:
        # Hypercorn types ASGI more narrowly than Starlette does; any ASGI 3 app is fine here.
        await hypercorn_serve(
            app,  # type: ignore[arg-type]
            _hypercorn_config(config, sock),
            shutdown_trigger=shutdown_trigger,
        )
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        if watcher is not None:
            watcher.cancel()


async def _watch(stop: threading.Event, request_stop: Callable[[], None]) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.05)
    request_stop()

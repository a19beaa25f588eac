"""Per-request bookkeeping: the request id, the access log line and the request metrics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pensieve.api import new_request_id
from pensieve.server.metrics import Metrics

__all__ = ["RequestContextMiddleware", "RequestRecord", "record_of"]

access_log = logging.getLogger("pensieve.server.access")

_STATE_KEY = "pensieve_record"


@dataclass
class RequestRecord:
    """What one request did; handlers fill in token counts, the middleware reports them."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    input_tokens: int | None = None
    output_tokens: int | None = None
    first_token_seconds: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def record_of(request: Request) -> RequestRecord:
    record: RequestRecord = request.scope["state"][_STATE_KEY]
    return record


class RequestContextMiddleware:
    """Gives every request an id (``request-id`` header on every response) and logs and counts it.

    The access line holds no API key and no prompt text: id, method, path, status, latency, tokens.
    A response sent before its request body was read (401, 413…) says ``connection: close``: the
    server drops such a connection, and a client that knows it will not reuse it.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        record = RequestRecord(new_request_id())
        scope.setdefault("state", {})[_STATE_KEY] = record
        status = 500  # what the client gets if the app fails before starting a response
        body_pending = _has_body(scope)

        async def receive_tracked() -> Message:
            nonlocal body_pending
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_pending = False
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if "request-id" not in headers:
                    headers["request-id"] = record.request_id
                if body_pending:
                    headers["connection"] = "close"
            await send(message)

        try:
            await self._app(scope, receive_tracked, send_with_id)
        finally:
            self._report(scope, record, status)

    def _report(self, scope: Scope, record: RequestRecord, status: int) -> None:
        seconds = record.elapsed()
        route = getattr(scope.get("route"), "path", "unmatched")
        self._metrics.observe_request(scope["method"], route, status, seconds)
        if record.input_tokens is not None:
            self._metrics.observe_tokens(record.input_tokens, record.output_tokens or 0)
        if record.first_token_seconds is not None:
            self._metrics.observe_first_token(record.first_token_seconds)
        access_log.info(
            "%s %s %s %d %.1fms in=%s out=%s",
            record.request_id,
            scope["method"],
            scope["path"],
            status,
            seconds * 1000,
            "-" if record.input_tokens is None else record.input_tokens,
            "-" if record.output_tokens is None else record.output_tokens,
        )


def _has_body(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    length = headers.get("content-length", "0")
    return "chunked" in headers.get("transfer-encoding", "").lower() or (length.isdigit() and int(length) > 0)

"""Per-request bookkeeping: the request id, the access log line, the request metrics, and the
last resort for failures nothing else handled.

Logs never quote request content by default: error messages can (a template's complaint, a
tokenizer's), so failures are logged by type, with the stack for unexpected ones, and their
messages only at debug level.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pensieve.api import new_request_id
from pensieve.core.errors import PensieveError
from pensieve.server.metrics import Metrics

__all__ = ["RequestContextMiddleware", "RequestRecord", "log_failure", "record_of"]

access_log = logging.getLogger("pensieve.server.access")
logger = logging.getLogger("pensieve.server")

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


def log_failure(request_id: str, exc: Exception, where: str = "a request") -> None:
    """Log a server-side failure without its message (at debug level, with it)."""
    if isinstance(exc, PensieveError):
        if exc.status_code >= 500:
            # A timeout, overload or shutdown is the server working as designed; a 500 is not.
            level = logging.ERROR if exc.status_code == 500 else logging.WARNING
            logger.log(level, "%s: %s failed: %s (%s)", request_id, where, type(exc).__name__, exc.error_type)
        logger.debug("%s: %s: %s", request_id, type(exc).__name__, exc.message)
        return
    stack = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    logger.error("%s: unexpected %s in %s; stack:\n%s", request_id, type(exc).__name__, where, stack.rstrip())
    logger.debug("%s: unexpected error", request_id, exc_info=exc)


class RequestContextMiddleware:
    """Gives every request an id (``request-id`` header on every response) and logs and counts it.

    The access line holds no API key, no query string and no prompt text: id, method, path, status,
    latency, tokens; the same fields are attributes of its log record (``record.request_id``…).
    A response sent before its request body was read (401, 413…) says ``connection: close``: the
    server drops such a connection, and a client that knows it will not reuse it.

    An exception nothing else handled is logged here and answered with ``fallback(request_id)``
    if no response has started. Starlette's outer ServerErrorMiddleware would re-raise it, and
    Hypercorn would log its message, which may quote the prompt.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, fallback: Callable[[str], Response]) -> None:
        self._app = app
        self._metrics = metrics
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        record = RequestRecord(new_request_id())
        scope.setdefault("state", {})[_STATE_KEY] = record
        status = 500  # what the client gets if the app fails before starting a response
        started = False
        body_pending = _has_body(scope)

        async def receive_tracked() -> Message:
            nonlocal body_pending
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_pending = False
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = MutableHeaders(scope=message)
                if "request-id" not in headers:
                    headers["request-id"] = record.request_id
                if body_pending:
                    headers["connection"] = "close"
            await send(message)

        try:
            await self._app(scope, receive_tracked, send_with_id)
        except ClientDisconnect:
            status = 499  # gone while sending its body: nobody to answer
        except Exception as exc:  # noqa: BLE001 - the last resort: logged, answered, not re-raised
            log_failure(record.request_id, exc)
            if not started:
                await self._fallback(record.request_id)(scope, receive, send_with_id)
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
        fields = {
            "request_id": record.request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": round(seconds * 1000, 1),
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
        }
        # The same fields twice: readable in the message, structured (``extra``) for log pipelines.
        access_log.info(
            "%s %s %s %d %.1fms in=%s out=%s",
            record.request_id,
            scope["method"],
            scope["path"],
            status,
            seconds * 1000,
            "-" if record.input_tokens is None else record.input_tokens,
            "-" if record.output_tokens is None else record.output_tokens,
            extra=fields,
        )


def _has_body(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    length = headers.get("content-length", "0")
    return "chunked" in headers.get("transfer-encoding", "").lower() or (length.isdigit() and int(length) > 0)

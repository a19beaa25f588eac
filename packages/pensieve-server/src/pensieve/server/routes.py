"""The endpoints: HTTP in and out around the Messages service; no request parsing of their own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pensieve.api import (
    CountTokensResponse,
    Message,
    ModelList,
    ModelObject,
    decode_count_tokens_request,
    decode_messages_request,
    encode_json,
)
from pensieve.claude import ACCEPTED_ROLES, MessagesService
from pensieve.core.config import LimitSettings
from pensieve.core.errors import InvalidRequestError, RequestTooLargeError
from pensieve.core.protocols import ModelInfo
from pensieve.server.context import record_of
from pensieve.server.limits import BodyTimeoutError, timed_out
from pensieve.server.metrics import Metrics
from pensieve.server.shutdown import Drain, shutting_down
from pensieve.server.streaming import event_stream_response

__all__ = ["EngineStatus", "Handlers", "LoadedModels", "read_body"]


class EngineStatus(Protocol):
    """What /health and /metrics need to know about the engine (``pensieve.engine.Engine`` has it)."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def alive(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...


@runtime_checkable
class LoadedModels(Protocol):
    """An engine status that also reports several loaded models (``pensieve.engine.ModelPool``)."""

    def loaded_models(self) -> Sequence[msgspec.Struct]:
        """One struct per loaded model (``pensieve.engine.LoadedModel``), as ``/api/ps`` shows it."""
        ...


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body: 413 as soon as it exceeds ``limit`` bytes (it is never read whole), and
    408 unless all of it arrives within ``timeout`` seconds (a slow client holds a slot)."""
    too_large = RequestTooLargeError(f"request body exceeds the limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(timeout) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise BodyTimeoutError(
            f"the request body did not arrive within {timeout:g} s (limits.read_timeout_seconds)"
        )
    return b"".join(chunks)


async def _answer(
    request: Request, answer: Awaitable[Message], timeout: float, drain: Drain
) -> Message | None:
    """Await ``answer`` within the request's deadline; None if the client disconnects first.

    A disconnect, the deadline or a shutdown's abort cancels ``answer`` and so its generation.
    """
    deadline = anyio.current_time() + timeout - record_of(request).elapsed()
    with drain.abortable(deadline) as scope:
        message = await _unless_disconnected(request, answer)
    if scope.cancelled_caught:
        raise shutting_down() if drain.aborted else timed_out(timeout)
    return message


async def _unless_disconnected(request: Request, answer: Awaitable[Message]) -> Message | None:
    """Await ``answer``, cancelling it (and so its generation) if the client disconnects first."""
    result: Message | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def produce() -> None:
            nonlocal result, failure
            try:
                result = await answer
            except Exception as exc:  # noqa: BLE001 - re-raised below as itself, not in an ExceptionGroup
                failure = exc
            group.cancel_scope.cancel()

        async def watch() -> None:
            # The body has been read, so the next message can only be the disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(produce)
        group.start_soon(watch)
    if failure is not None:
        raise failure
    return result


def _wire(body: Message | CountTokensResponse | ModelObject | ModelList) -> Response:
    return Response(encode_json(body), media_type="application/json")


def _wants_stream(request: Request, body_stream: bool) -> bool:
    # The seed's clients ask for a stream with an ``x-stream: true`` header instead of the body field.
    return body_stream or request.headers.get("x-stream", "").strip().lower() == "true"


class Handlers:
    """Endpoint methods sharing the service, the limits and the engine status."""

    def __init__(
        self,
        service: MessagesService,
        limits: LimitSettings,
        engine: EngineStatus,
        metrics: Metrics,
        device: Mapping[str, Any],
        drain: Drain,
    ) -> None:
        self._service = service
        self._limits = limits
        self._drain = drain
        self._engine = engine
        self._metrics = metrics
        self._device = dict(device)
        self._started = time.monotonic()
        self._started_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def messages(self, request: Request) -> Response:
        body = await self._body(request)
        message_request = decode_messages_request(body, roles=ACCEPTED_ROLES)
        record = record_of(request)
        timeout = self._limits.request_timeout_seconds
        if _wants_stream(request, message_request.stream):
            events = await self._service.stream(message_request)
            return event_stream_response(events, record, timeout=timeout, drain=self._drain)
        message = await _answer(request, self._service.create(message_request), timeout, self._drain)
        if message is None:
            return Response(status_code=499)  # nobody is listening; the status only reaches the access log
        record.input_tokens = message.usage.prompt_tokens
        record.output_tokens = message.usage.output_tokens
        return _wire(message)

    async def count_tokens(self, request: Request) -> Response:
        body = await self._body(request)
        count_request = decode_count_tokens_request(body, roles=ACCEPTED_ROLES)
        return _wire(await self._service.count_tokens(count_request))

    async def _body(self, request: Request) -> bytes:
        return await read_body(request, self._limits.max_body_bytes, self._limits.read_timeout_seconds)

    async def list_models(self, request: Request) -> Response:
        params = request.query_params
        limit = params.get("limit", "20")
        if not limit.strip().isdigit():
            raise InvalidRequestError("limit: must be an integer between 1 and 1000")
        page = self._service.list_models(
            limit=int(limit), after_id=params.get("after_id"), before_id=params.get("before_id")
        )
        return _wire(page)

    async def get_model(self, request: Request) -> Response:
        return _wire(self._service.get_model(request.path_params["model_id"]))

    async def health(self, request: Request) -> Response:
        alive = self._engine.alive
        body = {
            "status": "healthy" if alive else "unhealthy",
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": self._engine.info.id,
            "device": self._device,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "queue_depth": self._engine.queue_depth,
            "loaded_models": [model["name"] for model in self._loaded()],
        }
        return JSONResponse(body, status_code=200 if alive else 503)

    async def loaded_models(self, request: Request) -> Response:
        """``GET /api/ps`` (as Ollama names it): the loaded models, their memory and keep-alive."""
        return JSONResponse({"models": self._loaded()})

    def _loaded(self) -> list[dict[str, Any]]:
        if isinstance(self._engine, LoadedModels):
            return [msgspec.to_builtins(model) for model in self._engine.loaded_models()]
        # A single engine, loaded for the server's whole life; its memory is not known here.
        info = self._engine.info
        return [
            {
                "name": info.id,
                "architecture": info.architecture,
                "quantization": info.quantization,
                "context_length": info.context_length,
                "loaded_at": self._started_at,
                "expires_at": None,
            }
        ]

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.render(), media_type=self._metrics.content_type)

    async def root(self, request: Request) -> Response:
        # Claude Code probes ``HEAD /`` at start; any 200 will do.
        return JSONResponse({"name": "pensieve", "status": "ok"})

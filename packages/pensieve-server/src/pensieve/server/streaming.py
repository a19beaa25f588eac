"""Streaming an answer as server-sent events.

The status line goes out before generation can fail, so a failure after the start becomes an
SSE ``error`` event and the stream ends cleanly: so does running past the request's deadline
(``timeout_error``) or the end of a shutdown's grace period (``overloaded_error``). When the
client goes away Starlette cancels the response; the service's iterator is then closed, which
cancels the generation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from pensieve.api import (
    ContentBlockDeltaEvent,
    MessageDeltaEvent,
    MessageStartEvent,
    StreamEvent,
    encode_sse,
    error_event,
)
from pensieve.core.errors import PensieveError
from pensieve.server.context import RequestRecord, log_failure
from pensieve.server.limits import timed_out
from pensieve.server.shutdown import Drain, shutting_down

__all__ = ["event_stream_response"]

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def event_stream_response(
    events: AsyncIterator[StreamEvent], record: RequestRecord, *, timeout: float, drain: Drain
) -> StreamingResponse:
    """The SSE response of ``events``; it ends ``timeout`` seconds after the request started."""
    frames = _frames(events, record, timeout, drain)
    return _EventStreamResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


class _EventStreamResponse(StreamingResponse):
    """Closes its frames however the response ends (a failed send leaves them suspended otherwise)."""

    body_iterator: AsyncGenerator[bytes, None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: after a disconnect this runs in a cancelled scope, and the close is what
            # tells the engine to stop generating.
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


async def _frames(
    events: AsyncIterator[StreamEvent], record: RequestRecord, timeout: float, drain: Drain
) -> AsyncGenerator[bytes, None]:
    deadline = anyio.current_time() + timeout - record.elapsed()
    try:
        while True:
            # A scope per step, never around a yield: cancelling it must not reach the sending.
            with drain.abortable(deadline) as step:
                event = await events.__anext__()
            if step.cancelled_caught:
                raise shutting_down() if drain.aborted else timed_out(timeout)
            _note(event, record)
            yield encode_sse(event)
    except StopAsyncIteration:
        pass
    except PensieveError as exc:
        log_failure(record.request_id, exc, "a stream")
        yield encode_sse(error_event(exc))
    except Exception as exc:  # noqa: BLE001 - whatever failed, the stream must end with an error event
        log_failure(record.request_id, exc, "a stream")
        yield encode_sse(error_event(PensieveError("internal server error")))
    finally:
        aclose = getattr(events, "aclose", None)  # an async generator's: it cancels the generation
        if aclose is not None:
            await aclose()


def _note(event: StreamEvent, record: RequestRecord) -> None:
    """Token counts and time to first token, for the access log and the metrics."""
    if isinstance(event, MessageStartEvent):
        record.input_tokens = event.message.usage.prompt_tokens
    elif isinstance(event, ContentBlockDeltaEvent) and record.first_token_seconds is None:
        record.first_token_seconds = record.elapsed()
    elif isinstance(event, MessageDeltaEvent):
        record.output_tokens = event.usage.output_tokens

"""Streaming an answer as server-sent events.

The status line goes out before generation can fail, so a failure after the start becomes an
SSE ``error`` event and the stream ends cleanly. When the client goes away Starlette cancels
the response; the service's iterator is then closed, which cancels the generation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

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
from pensieve.server.context import RequestRecord

__all__ = ["event_stream_response"]

logger = logging.getLogger("pensieve.server")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def event_stream_response(
    events: AsyncGenerator[StreamEvent, None], record: RequestRecord
) -> StreamingResponse:
    return _EventStreamResponse(_frames(events, record), media_type="text/event-stream", headers=SSE_HEADERS)


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
    events: AsyncGenerator[StreamEvent, None], record: RequestRecord
) -> AsyncGenerator[bytes, None]:
    try:
        async for event in events:
            _note(event, record)
            yield encode_sse(event)
    except PensieveError as exc:
        logger.warning("%s: stream ended by %s: %s", record.request_id, type(exc).__name__, exc.message)
        yield encode_sse(error_event(exc))
    except Exception as exc:
        logger.error("%s: unexpected error in a stream", record.request_id, exc_info=exc)
        yield encode_sse(error_event(PensieveError("internal server error")))
    finally:
        await events.aclose()


def _note(event: StreamEvent, record: RequestRecord) -> None:
    """Token counts and time to first token, for the access log and the metrics."""
    if isinstance(event, MessageStartEvent):
        record.input_tokens = event.message.usage.input_tokens
    elif isinstance(event, ContentBlockDeltaEvent) and record.first_token_seconds is None:
        record.first_token_seconds = record.elapsed()
    elif isinstance(event, MessageDeltaEvent):
        record.output_tokens = event.usage.output_tokens

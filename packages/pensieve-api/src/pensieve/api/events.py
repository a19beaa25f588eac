"""Server-sent events of a streamed answer, each with the exact shape the API sends.

A stream is ``message_start``; then per content block (indexes 0, 1, 2… in order)
``content_block_start``, one or more ``content_block_delta`` and ``content_block_stop``;
then ``message_delta`` and ``message_stop``. ``ping`` may come anywhere, and ``error``
may end a stream whose 200 status was already sent.
"""

from __future__ import annotations

import msgspec

from pensieve.api.responses import Message, MessageStopReason, ResponseContentBlock, Usage

__all__ = [
    "BlockDelta",
    "ContentBlockDeltaEvent",
    "ContentBlockStartEvent",
    "ContentBlockStopEvent",
    "ErrorDetail",
    "ErrorEvent",
    "InputJSONBlockDelta",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageStartEvent",
    "MessageStopEvent",
    "PingEvent",
    "SignatureBlockDelta",
    "StreamEvent",
    "TextBlockDelta",
    "ThinkingBlockDelta",
    "encode_sse",
]


class _Delta(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class TextBlockDelta(_Delta, frozen=True, tag="text_delta"):
    text: str


class InputJSONBlockDelta(_Delta, frozen=True, tag="input_json_delta"):
    """A piece of a tool call's input; the pieces of one block concatenate to its JSON."""

    partial_json: str


class ThinkingBlockDelta(_Delta, frozen=True, tag="thinking_delta"):
    thinking: str


class SignatureBlockDelta(_Delta, frozen=True, tag="signature_delta"):
    signature: str


BlockDelta = TextBlockDelta | InputJSONBlockDelta | ThinkingBlockDelta | SignatureBlockDelta


class MessageDelta(msgspec.Struct, frozen=True, kw_only=True):
    stop_reason: MessageStopReason | None
    stop_sequence: str | None = None


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """The ``error`` object of error bodies and error events: an API error type and a message."""

    type: str
    message: str


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class MessageStartEvent(_Event, frozen=True, tag="message_start"):
    """Opens the stream with the message so far: empty ``content``, ``stop_reason`` null."""

    message: Message


class ContentBlockStartEvent(_Event, frozen=True, tag="content_block_start"):
    """Opens block ``index`` with its empty form (``text: ""`` or ``input: {}``)."""

    index: int
    content_block: ResponseContentBlock


class ContentBlockDeltaEvent(_Event, frozen=True, tag="content_block_delta"):
    index: int
    delta: BlockDelta


class ContentBlockStopEvent(_Event, frozen=True, tag="content_block_stop"):
    index: int


class MessageDeltaEvent(_Event, frozen=True, tag="message_delta"):
    """Why the message stopped, with the cumulative usage of the whole message."""

    delta: MessageDelta
    usage: Usage


class MessageStopEvent(_Event, frozen=True, tag="message_stop"):
    pass


class PingEvent(_Event, frozen=True, tag="ping"):
    pass


class ErrorEvent(_Event, frozen=True, tag="error"):
    error: ErrorDetail


StreamEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | PingEvent
    | ErrorEvent
)

_encoder = msgspec.json.Encoder()


def encode_sse(event: StreamEvent) -> bytes:
    """One SSE frame, ``event: <type>\\ndata: <json>\\n\\n``; the event name equals the JSON ``type``."""
    name = type(event).__struct_config__.tag
    return b"event: " + str(name).encode() + b"\ndata: " + _encoder.encode(event) + b"\n\n"

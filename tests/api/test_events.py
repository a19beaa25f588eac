"""Stream events: exact SSE framing, exact JSON shapes, and the SDK's stream types accept them."""

from __future__ import annotations

import json

import anthropic.types as sdk
import pydantic
import pytest

from pensieve import api
from pensieve.core.errors import OverloadedError

_USAGE = api.Usage(input_tokens=25, output_tokens=1)

# A whole stream in order: thinking, text, then a tool call whose input arrives in pieces.
STREAM: list[api.StreamEvent] = [
    api.MessageStartEvent(
        message=api.Message(
            id="msg_1", model="claude-x", content=[], stop_reason=None, stop_sequence=None, usage=_USAGE
        )
    ),
    api.ContentBlockStartEvent(index=0, content_block=api.ThinkingBlock(thinking="", signature="")),
    api.ContentBlockDeltaEvent(index=0, delta=api.ThinkingBlockDelta(thinking="Let me think")),
    api.ContentBlockDeltaEvent(index=0, delta=api.SignatureBlockDelta(signature="EqQBCkYIBxgC")),
    api.ContentBlockStopEvent(index=0),
    api.PingEvent(),
    api.ContentBlockStartEvent(index=1, content_block=api.TextBlock(text="")),
    api.ContentBlockDeltaEvent(index=1, delta=api.TextBlockDelta(text="Hello\nworld")),
    api.ContentBlockStopEvent(index=1),
    api.ContentBlockStartEvent(
        index=2, content_block=api.ToolUseBlock(id="toolu_1", name="get_weather", input={})
    ),
    api.ContentBlockDeltaEvent(index=2, delta=api.InputJSONBlockDelta(partial_json='{"city": ')),
    api.ContentBlockDeltaEvent(index=2, delta=api.InputJSONBlockDelta(partial_json='"Paris"}')),
    api.ContentBlockStopEvent(index=2),
    api.MessageDeltaEvent(
        delta=api.MessageDelta(stop_reason="tool_use", stop_sequence=None),
        usage=api.Usage(input_tokens=25, output_tokens=40),
    ),
    api.MessageStopEvent(),
]


def _frame(raw: bytes) -> tuple[str, dict]:
    assert raw.endswith(b"\n\n")
    lines = raw[:-2].split(b"\n")
    assert len(lines) == 2, raw
    event_line, data_line = lines
    assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
    return event_line[len(b"event: ") :].decode(), json.loads(data_line[len(b"data: ") :])


def test_sse_frame_bytes() -> None:
    assert api.encode_sse(api.ContentBlockDeltaEvent(index=0, delta=api.TextBlockDelta(text="Hi"))) == (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    )
    assert api.encode_sse(api.PingEvent()) == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert api.encode_sse(api.MessageStopEvent()) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@pytest.mark.parametrize("event", STREAM, ids=lambda event: type(event).__name__)
def test_event_name_equals_json_type_and_data_stays_on_one_line(event: api.StreamEvent) -> None:
    name, data = _frame(api.encode_sse(event))
    assert data["type"] == name


def test_exact_shapes() -> None:
    shapes = [_frame(api.encode_sse(event))[1] for event in STREAM]
    assert shapes[0] == {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 25,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
    }
    assert shapes[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert shapes[9] == {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    }
    assert shapes[10] == {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
    }
    assert shapes[12] == {"type": "content_block_stop", "index": 2}
    assert shapes[13] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 25,
            "output_tokens": 40,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_sdk_parses_every_stream_event() -> None:
    adapter = pydantic.TypeAdapter(sdk.RawMessageStreamEvent)
    parsed = [
        adapter.validate_python(_frame(api.encode_sse(event))[1])
        for event in STREAM
        if not isinstance(event, api.PingEvent)
    ]
    assert [event.type for event in parsed] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = parsed[0]
    assert isinstance(start, sdk.RawMessageStartEvent) and start.message.usage.input_tokens == 25
    text = parsed[6]
    assert isinstance(text, sdk.RawContentBlockDeltaEvent) and isinstance(text.delta, sdk.TextDelta)
    assert text.delta.text == "Hello\nworld"
    end = parsed[12]
    assert isinstance(end, sdk.RawMessageDeltaEvent)
    assert (end.delta.stop_reason, end.usage.output_tokens, end.usage.input_tokens) == ("tool_use", 40, 25)


def test_error_event() -> None:
    event = api.error_event(OverloadedError("the server is busy"))
    assert api.encode_sse(event) == (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"the server is busy"}}\n\n'
    )

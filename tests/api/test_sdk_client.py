"""The real anthropic client, fed our bytes through a mock transport (no network), understands them.

This SDK version runs on ``httpx2`` (an httpx fork), so its MockTransport is used.
"""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import httpx2 as httpx
import pytest

from pensieve import api
from pensieve.core.errors import (
    AuthenticationError,
    GenerationError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    PensieveError,
    PromptTooLongError,
    RateLimitError,
    RequestTooLargeError,
)
from tests.api.test_events import STREAM

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test",
        base_url="http://pensieve.test",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def _sse(events: list[api.StreamEvent]) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=b"".join(api.encode_sse(e) for e in events),
    )


def _error(error: PensieveError) -> httpx.Response:
    return httpx.Response(
        error.status_code,
        content=api.error_body(error, "req_test"),
        headers={"content-type": "application/json"},
    )


def test_sdk_request_decodes_and_our_message_comes_back() -> None:
    seen: list[api.MessagesRequest] = []

    def handler(request: httpx.Request) -> httpx.Response:
        decoded = api.decode_messages_request(request.content)
        seen.append(decoded)
        message = api.Message(
            id=api.new_message_id(),
            model=decoded.model,
            content=[api.TextBlock(text="Hello!")],
            stop_reason="end_turn",
            stop_sequence=None,
            usage=api.Usage(input_tokens=9, output_tokens=2),
        )
        return httpx.Response(
            200, content=api.encode_json(message), headers={"content-type": "application/json"}
        )

    reply = _client(handler).messages.create(
        model="claude-3-sonnet-20240229",
        max_tokens=10,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hi"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "auto"},
        metadata={"user_id": "u1"},
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "Hello!"
    assert reply.id.startswith("msg_") and reply.usage.input_tokens == 9
    assert seen[0].tools is not None and seen[0].tools[0].name == "get_weather"


def test_sdk_stream_helper_rebuilds_the_message_and_skips_pings() -> None:
    with _client(lambda request: _sse(STREAM)).messages.stream(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello\nworld"
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    thinking, _, tool_use = final.content
    assert thinking.type == "thinking" and (thinking.thinking, thinking.signature) == (
        "Let me think",
        "EqQBCkYIBxgC",
    )
    assert tool_use.type == "tool_use" and tool_use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 40


def test_sdk_raises_our_error_event_mid_stream() -> None:
    events = [*STREAM[:3], api.error_event(OverloadedError("the server is busy"))]
    client = _client(lambda request: _sse(events))
    with (
        pytest.raises(anthropic.APIStatusError, match="the server is busy"),
        client.messages.stream(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        ) as stream,
    ):
        stream.get_final_message()


@pytest.mark.parametrize(
    "error, sdk_class",
    [
        (InvalidRequestError("max_tokens: Field required"), anthropic.BadRequestError),
        (PromptTooLongError(9004, 8192), anthropic.BadRequestError),
        (AuthenticationError("invalid x-api-key"), anthropic.AuthenticationError),
        (NotFoundError("no model named 'x'"), anthropic.NotFoundError),
        (RequestTooLargeError("body too large"), anthropic.RequestTooLargeError),
        (RateLimitError("too many requests", retry_after=1.0), anthropic.RateLimitError),
        (GenerationError("inference failed"), anthropic.InternalServerError),
        (OverloadedError("busy"), anthropic.OverloadedError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, PensieveError) else "",
)
def test_sdk_maps_our_error_bodies(error: PensieveError, sdk_class: type[anthropic.APIStatusError]) -> None:
    with pytest.raises(sdk_class) as caught:
        _client(lambda request: _error(error)).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.status_code == error.status_code
    assert caught.value.body == {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
        "request_id": "req_test",
    }


def test_sdk_count_tokens_round_trip() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        decoded = api.decode_count_tokens_request(request.content)
        return httpx.Response(
            200, content=api.encode_json(api.CountTokensResponse(input_tokens=len(decoded.messages)))
        )

    count = _client(handler).messages.count_tokens(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert count.input_tokens == 1

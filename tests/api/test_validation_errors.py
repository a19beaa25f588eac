"""Every way a body can be rejected yields a 400 whose message names the field and the problem."""

from __future__ import annotations

from typing import Any

import pytest

from pensieve import api
from pensieve.core.errors import InvalidRequestError
from tests.api.samples import SEED_BODY, TOOL_HISTORY_BODY, body

_USER = {"role": "user", "content": "Hi"}
_SCHEMA = {"type": "object", "properties": {}}


def _tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "input_schema": _SCHEMA, **extra}


def _blocks(*blocks: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(blocks)}]


CASES: dict[str, tuple[bytes, str]] = {
    # Schema: types, required fields, ranges.
    "max_tokens zero": (body(SEED_BODY, max_tokens=0), "max_tokens: Expected `int` >= 1, got `0`"),
    "max_tokens missing": (body(SEED_BODY, max_tokens=None), "max_tokens: Field required"),
    "max_tokens string": (body(SEED_BODY, max_tokens="10"), "max_tokens: Expected `int`, got `str`"),
    "model missing": (body(SEED_BODY, model=None), "model: Field required"),
    "messages missing": (body(SEED_BODY, messages=None), "messages: Field required"),
    "messages not a list": (
        body(SEED_BODY, messages={"role": "user"}),
        "messages: Expected `array`, got `object`",
    ),
    "temperature high": (body(SEED_BODY, temperature=1.5), "temperature: Expected `float` <= 1.0, got `1.5`"),
    "temperature negative": (
        body(SEED_BODY, temperature=-0.1),
        "temperature: Expected `float` >= 0.0, got `-0.1`",
    ),
    "top_p high": (body(SEED_BODY, top_p=2), "top_p: Expected `float` <= 1.0, got `2`"),
    "top_k negative": (body(SEED_BODY, top_k=-1), "top_k: Expected `int` >= 0, got `-1`"),
    "stream string": (body(SEED_BODY, stream="yes"), "stream: Expected `bool`, got `str`"),
    "role missing": (body(SEED_BODY, messages=[{"content": "Hi"}]), "messages.0.role: Field required"),
    "content missing": (body(SEED_BODY, messages=[{"role": "user"}]), "messages.0.content: Field required"),
    "content number": (
        body(SEED_BODY, messages=[{"role": "user", "content": 5}]),
        "messages.0.content: Expected `str | array`, got `int`",
    ),
    "unknown block type": (
        body(SEED_BODY, messages=_blocks({"type": "text", "text": "a"}, {"type": "foo"})),
        (
            "messages.0.content.1.type: unknown content block type 'foo' (expected one of: 'text', 'image', "
            "'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking')"
        ),
    ),
    "block without type": (
        body(SEED_BODY, messages=_blocks({"text": "a"})),
        "messages.0.content.0.type: Field required",
    ),
    "text block without text": (
        body(SEED_BODY, messages=_blocks({"type": "text"})),
        "messages.0.content.0.text: Field required",
    ),
    "tool_use input not an object": (
        body(
            SEED_BODY,
            messages=[
                _USER,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}],
                },
            ],
        ),
        "messages.1.content.0.input: Expected `object`, got `str`",
    ),
    "thinking without signature": (
        body(
            SEED_BODY,
            messages=[_USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}],
        ),
        "messages.1.content.0.signature: Field required",
    ),
    "unknown image source": (
        body(SEED_BODY, messages=_blocks({"type": "image", "source": {"type": "file", "file_id": "f"}})),
        "messages.0.content.0.source.type: unknown source type 'file' (expected one of: 'base64', 'url')",
    ),
    "bad image media type": (
        body(
            SEED_BODY,
            messages=_blocks(
                {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": ""}}
            ),
        ),
        (
            "messages.0.content.0.source.media_type: Input should be one of 'image/gif', 'image/jpeg', "
            "'image/png', 'image/webp', got 'image/bmp'"
        ),
    ),
    "unknown document source": (
        body(SEED_BODY, messages=_blocks({"type": "document", "source": {"type": "file", "file_id": "f"}})),
        (
            "messages.0.content.0.source.type: unknown source type 'file' (expected one of: 'base64', 'text', "
            "'url', 'content')"
        ),
    ),
    "unknown tool_result content": (
        body(
            SEED_BODY,
            messages=_blocks({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "x"}]}),
        ),
        (
            "messages.0.content.0.content.0.type: unknown content block type 'x' (expected one of: 'text', "
            "'image', 'document', 'tool_reference')"
        ),
    ),
    "system image": (
        body(SEED_BODY, system=[{"type": "image", "source": {}}]),
        "system.0.type: unknown system block type 'image' (expected one of: 'text')",
    ),
    "system number": (body(SEED_BODY, system=3), "system: Expected `str | array | null`, got `int`"),
    "unknown tool_choice": (
        body(SEED_BODY, tool_choice={"type": "some"}),
        "tool_choice.type: unknown tool_choice type 'some' (expected one of: 'auto', 'any', 'tool', 'none')",
    ),
    "tool_choice tool without name": (
        body(TOOL_HISTORY_BODY, tool_choice={"type": "tool"}),
        "tool_choice.name: Field required",
    ),
    "unknown thinking": (
        body(SEED_BODY, thinking={"type": "sometimes"}),
        (
            "thinking.type: unknown thinking type 'sometimes' (expected one of: 'enabled', 'adaptive', "
            "'between_tools', 'disabled')"
        ),
    ),
    "thinking budget too small": (
        body(SEED_BODY, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 1023}),
        "thinking.budget_tokens: Expected `int` >= 1024, got `1023`",
    ),
    "thinking budget missing": (
        body(SEED_BODY, thinking={"type": "enabled"}),
        "thinking.budget_tokens: Field required",
    ),
    "thinking display": (
        body(
            SEED_BODY, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048, "display": "full"}
        ),
        "thinking.display: Input should be one of 'omitted', 'summarized', got 'full'",
    ),
    "tool without name": (body(SEED_BODY, tools=[{"input_schema": _SCHEMA}]), "tools.0.name: Field required"),
    "stop_sequences not strings": (
        body(SEED_BODY, stop_sequences=["a", 1]),
        "stop_sequences.1: Expected `str`, got `int`",
    ),
    "metadata user_id number": (
        body(SEED_BODY, metadata={"user_id": 7}),
        "metadata.user_id: Expected `str | null`, got `int`",
    ),
    # Semantic rules.
    "no messages": (body(SEED_BODY, messages=[]), "messages: at least one message is required"),
    "unknown role": (
        body(SEED_BODY, messages=[{"role": "ctx", "content": "Hi"}]),
        "messages.0.role: Input should be one of 'user', 'assistant', 'system', got 'ctx'",
    ),
    "tool_use from the user": (
        body(SEED_BODY, messages=_blocks({"type": "tool_use", "id": "t", "name": "n", "input": {}})),
        "messages.0.content.0: tool_use blocks can only appear in assistant messages",
    ),
    "tool_result from the assistant": (
        body(
            SEED_BODY,
            messages=[_USER, {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}],
        ),
        "messages.1.content.0: tool_result blocks can only appear in user messages",
    ),
    "image in a system message": (
        body(
            SEED_BODY,
            messages=[
                {
                    "role": "system",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
                    ],
                },
                _USER,
            ],
        ),
        "messages.0.content.0: system messages can only contain text blocks",
    ),
    "budget not below max_tokens": (
        body(SEED_BODY, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}),
        "thinking.budget_tokens: must be less than max_tokens (2048), got 2048",
    ),
    "bad tool name": (
        body(SEED_BODY, tools=[_tool("get weather")]),
        "tools.0.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$', got 'get weather'",
    ),
    "tool name too long": (
        body(SEED_BODY, tools=[_tool("a" * 129)]),
        f"tools.0.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$', got '{'a' * 129}'",
    ),
    "duplicate tool names": (
        body(SEED_BODY, tools=[_tool("Read"), _tool("Bash"), _tool("Read")]),
        "tools.2.name: tool names must be unique; 'Read' appears twice",
    ),
    "tool without input_schema": (
        body(SEED_BODY, tools=[{"name": "Read"}]),
        "tools.0.input_schema: Field required",
    ),
    "input_schema not an object schema": (
        body(SEED_BODY, tools=[{"name": "Read", "input_schema": {"type": "string"}}]),
        "tools.0.input_schema.type: Input should be 'object', got 'string'",
    ),
    "server tool": (
        body(SEED_BODY, tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]),
        (
            "tools.0.type: server tool 'web_search_20250305' is not supported; only custom tools "
            "(with an input_schema) can be used"
        ),
    ),
    "tool_choice any without tools": (
        body(SEED_BODY, tool_choice={"type": "any"}),
        "tool_choice.type: 'any' requires at least one tool in tools",
    ),
    "tool_choice tool without tools": (
        body(SEED_BODY, tool_choice={"type": "tool", "name": "Read"}),
        "tool_choice.type: 'tool' requires at least one tool in tools",
    ),
    "tool_choice names a missing tool": (
        body(TOOL_HISTORY_BODY, tool_choice={"type": "tool", "name": "Read"}),
        "tool_choice.name: no tool named 'Read' in tools",
    ),
    "empty stop sequence": (
        body(SEED_BODY, stop_sequences=["END", ""]),
        "stop_sequences.1: stop sequences must be non-empty strings",
    ),
    # The body itself.
    "empty body": (b"", "request body is empty; expected a JSON object"),
    "blank body": (b" \n", "request body is empty; expected a JSON object"),
    "array body": (b"[1, 2]", "request body must be a JSON object, got `array`"),
    "string body": (b'"hello"', "request body must be a JSON object, got `str`"),
    "null body": (b"null", "request body must be a JSON object, got `null`"),
    "truncated JSON": (
        b'{"model": "m", "max_tokens": ',
        "request body is not valid JSON: Input data was truncated",
    ),
    "trailing garbage": (
        body(SEED_BODY) + b"}",
        "request body is not valid JSON: JSON is malformed: trailing characters",
    ),
    "schema error before a syntax error": (
        b'{"max_tokens": 0, "model": ',
        "request body is not valid JSON: Input data was truncated",
    ),
    "invalid UTF-8": (b'{"model": "\xff\xfe"}', "request body is not valid UTF-8: invalid start byte"),
}


@pytest.mark.parametrize("raw, expected", list(CASES.values()), ids=list(CASES))
def test_rejected_with_a_precise_message(raw: bytes, expected: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        api.decode_messages_request(raw)
    assert caught.value.message.startswith(expected), caught.value.message
    assert caught.value.status_code == 400


def test_count_tokens_uses_the_same_rules() -> None:
    with pytest.raises(InvalidRequestError, match=r"^messages: at least one message is required$"):
        api.decode_count_tokens_request(body(SEED_BODY, messages=[]))
    with pytest.raises(InvalidRequestError, match=r"^tools.0.name: String should match"):
        api.decode_count_tokens_request(body(SEED_BODY, tools=[_tool("a.b")]))
    with pytest.raises(InvalidRequestError, match=r"^request body is not valid UTF-8"):
        api.decode_count_tokens_request(b'{"model": "\xc3"}')


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        api.decode_messages_request(body(SEED_BODY, temperature=1.0000000000000002, top_k=-(10**40)))
    # The first problem in document order is reported, with the offending value shown.
    assert caught.value.message.startswith("temperature: Expected `float` <= 1.0, got `1.0000000000000002`")
    with pytest.raises(InvalidRequestError) as caught:
        api.decode_messages_request(body(SEED_BODY, top_k=-(10**80)))
    got = caught.value.message.split("got `", 1)[1]
    assert len(got) <= 61 and got.endswith("…`")


def test_the_original_error_is_chained() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        api.decode_messages_request(body(SEED_BODY, max_tokens=0))
    assert caught.value.__cause__ is not None

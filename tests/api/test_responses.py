"""Response bodies have the API's exact JSON shape, and the anthropic SDK's own types parse them."""

from __future__ import annotations

import json

import anthropic.types as sdk

from pensieve import api


def _message(**changes: object) -> api.Message:
    fields: dict[str, object] = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "model": "claude-3-sonnet-20240229",
        "content": [api.TextBlock(text="Hi!")],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": api.Usage(input_tokens=12, output_tokens=3),
    }
    fields.update(changes)
    return api.Message(**fields)  # type: ignore[arg-type]


def test_message_json_shape() -> None:
    assert json.loads(api.encode_json(_message())) == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-sonnet-20240229",
        "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_sdk_parses_a_message_with_every_block_kind() -> None:
    message = _message(
        content=[
            api.ThinkingBlock(thinking="Use the tool.", signature="sig"),
            api.RedactedThinkingBlock(data="opaque"),
            api.TextBlock(text="Checking."),
            api.ToolUseBlock(id="toolu_01", name="get_weather", input={"city": "Paris", "days": [1, 2]}),
        ],
        stop_reason="tool_use",
        usage=api.Usage(input_tokens=100, output_tokens=20, cache_read_input_tokens=80),
    )
    parsed = sdk.Message.model_validate_json(api.encode_json(message))
    assert [block.type for block in parsed.content] == ["thinking", "redacted_thinking", "text", "tool_use"]
    tool_use = parsed.content[3]
    assert isinstance(tool_use, sdk.ToolUseBlock)
    assert (tool_use.id, tool_use.name, tool_use.input) == (
        "toolu_01",
        "get_weather",
        {"city": "Paris", "days": [1, 2]},
    )
    assert parsed.stop_reason == "tool_use"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens, parsed.usage.cache_read_input_tokens) == (
        100,
        20,
        80,
    )


def test_sdk_parses_a_stop_sequence_message() -> None:
    parsed = sdk.Message.model_validate_json(
        api.encode_json(_message(stop_reason="stop_sequence", stop_sequence="END"))
    )
    assert (parsed.stop_reason, parsed.stop_sequence) == ("stop_sequence", "END")


def test_count_tokens_response() -> None:
    raw = api.encode_json(api.CountTokensResponse(input_tokens=42))
    assert json.loads(raw) == {"input_tokens": 42}
    assert sdk.MessageTokensCount.model_validate_json(raw).input_tokens == 42


def test_model_list() -> None:
    model = api.ModelObject(
        id="smollm2-135m-instruct",
        display_name="SmolLM2 135M Instruct",
        created_at="2024-11-01T12:00:00Z",
        max_input_tokens=8192,
        max_tokens=8192,
    )
    listing = api.ModelList(data=[model], has_more=False, first_id=model.id, last_id=model.id)
    assert json.loads(api.encode_json(listing)) == {
        "data": [
            {
                "type": "model",
                "id": "smollm2-135m-instruct",
                "display_name": "SmolLM2 135M Instruct",
                "created_at": "2024-11-01T12:00:00Z",
                "max_input_tokens": 8192,
                "max_tokens": 8192,
                "lifecycle": "active",
            }
        ],
        "has_more": False,
        "first_id": "smollm2-135m-instruct",
        "last_id": "smollm2-135m-instruct",
    }
    parsed = sdk.ModelInfo.model_validate_json(api.encode_json(model))
    assert parsed.created_at.year == 2024 and parsed.display_name == "SmolLM2 135M Instruct"


def test_empty_model_list_has_null_ids() -> None:
    listing = json.loads(api.encode_json(api.ModelList(data=[], has_more=False, first_id=None, last_id=None)))
    assert listing == {"data": [], "has_more": False, "first_id": None, "last_id": None}

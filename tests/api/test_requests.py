"""Realistic request bodies decode into the right types and survive an encode/decode round trip."""

from __future__ import annotations

import msgspec
import pytest

from pensieve import api
from pensieve.core.errors import InvalidRequestError
from tests.api.samples import CLAUDE_CODE_BODY, MEDIA_BODY, SEED_BODY, TOOL_HISTORY_BODY, body


@pytest.mark.parametrize("sample", [SEED_BODY, CLAUDE_CODE_BODY, TOOL_HISTORY_BODY, MEDIA_BODY])
def test_round_trip(sample: dict) -> None:
    request = api.decode_messages_request(body(sample))
    assert api.decode_messages_request(msgspec.json.encode(request)) == request


def test_seed_body() -> None:
    request = api.decode_messages_request(body(SEED_BODY))
    assert request.model == "claude-3-sonnet-20240229"
    assert request.max_tokens == 10
    assert request.messages == [api.MessageParam(role="user", content=[api.TextBlockParam(text="Hello")])]
    # Not given: left for the caller to default, never guessed here.
    assert (request.temperature, request.top_p, request.top_k, request.stop_sequences) == (
        None,
        None,
        None,
        None,
    )
    assert request.stream is False
    assert request.system is None and request.tools is None and request.thinking is None


def test_claude_code_body() -> None:
    request = api.decode_messages_request(body(CLAUDE_CODE_BODY))
    assert request.stream is True
    assert request.max_tokens == 32000
    assert request.thinking == api.ThinkingEnabled(budget_tokens=31999, display="omitted")
    assert request.metadata == api.Metadata(user_id="user_5f1c_account__session_0b6e")
    assert isinstance(request.system, list)
    assert [block.cache_control for block in request.system] == [
        None,
        api.CacheControl(type="ephemeral"),
        api.CacheControl(type="ephemeral", ttl="1h"),
    ]
    assert request.tools is not None
    assert [tool.name for tool in request.tools] == ["Read", "mcp__github__create_issue", "Bash"]
    assert [tool.defer_loading for tool in request.tools] == [False, True, False]
    assert request.tools[0].input_schema == CLAUDE_CODE_BODY["tools"][0]["input_schema"]
    assert request.tools[2].cache_control == api.CacheControl(type="ephemeral")


def test_tool_history_body() -> None:
    request = api.decode_messages_request(body(TOOL_HISTORY_BODY))
    assert (request.temperature, request.top_p, request.top_k) == (0.2, 0.9, 40)
    assert request.stop_sequences == ["\n\nHuman:", "END"]
    assert request.system == "You are a weather bot."
    assert request.tool_choice == api.ToolChoiceAuto(disable_parallel_tool_use=True)
    assert request.messages[0].content == "Weather in Paris?"
    assistant = request.messages[1].content
    assert assistant == [
        api.ThinkingBlockParam(thinking="I should call the tool.", signature="EqQBCkYIBxgCKkBsig"),
        api.RedactedThinkingBlockParam(data="EmwKAhgBEgy3va3pzix"),
        api.TextBlockParam(text="Let me check."),
        api.ToolUseBlockParam(
            id="toolu_01A09q90qw90lq917835lq9", name="get_weather", input={"city": "Paris"}
        ),
    ]
    results = request.messages[2].content
    assert isinstance(results, list)
    first, second, text = results
    assert isinstance(first, api.ToolResultBlockParam) and isinstance(second, api.ToolResultBlockParam)
    assert first.content == [api.TextBlockParam(text="18°C, cloudy")]
    assert first.cache_control == api.CacheControl(type="ephemeral") and first.is_error is False
    assert (second.content, second.is_error) == ("timeout", True)
    assert text == api.TextBlockParam(text="And tomorrow?")


def test_media_body() -> None:
    content = api.decode_messages_request(body(MEDIA_BODY)).messages[0].content
    assert isinstance(content, list)
    sources = [
        block.source for block in content if isinstance(block, (api.ImageBlockParam, api.DocumentBlockParam))
    ]
    assert [type(source) for source in sources] == [
        api.Base64ImageSource,
        api.URLImageSource,
        api.Base64PDFSource,
        api.PlainTextSource,
        api.URLPDFSource,
        api.ContentBlockSource,
    ]
    pdf = content[2]
    assert isinstance(pdf, api.DocumentBlockParam)
    assert (pdf.title, pdf.context) == ("Report", "Q3 numbers")


@pytest.mark.parametrize(
    "thinking",
    [
        api.ThinkingDisabled(),
        api.ThinkingAdaptive(),
        api.ThinkingAdaptive(display="summarized"),
        api.ThinkingBetweenTools(),
        api.ThinkingEnabled(budget_tokens=1024),
    ],
)
def test_thinking_kinds(thinking: api.ThinkingConfig) -> None:
    raw = msgspec.to_builtins(thinking)
    assert api.decode_messages_request(body(SEED_BODY, max_tokens=2048, thinking=raw)).thinking == thinking


@pytest.mark.parametrize(
    "choice",
    [
        api.ToolChoiceAuto(),
        api.ToolChoiceAny(disable_parallel_tool_use=True),
        api.ToolChoiceTool(name="get_weather"),
        api.ToolChoiceNone(),
    ],
)
def test_tool_choice_kinds(choice: api.ToolChoice) -> None:
    raw = msgspec.to_builtins(choice)
    assert api.decode_messages_request(body(TOOL_HISTORY_BODY, tool_choice=raw)).tool_choice == choice


def test_tool_choice_auto_and_none_need_no_tools() -> None:
    for kind in ("auto", "none"):
        request = api.decode_messages_request(body(SEED_BODY, tool_choice={"type": kind}))
        assert request.tool_choice is not None


def test_newer_top_level_fields_are_ignored() -> None:
    extras = {
        "cache_control": {"type": "ephemeral"},
        "service_tier": "auto",
        "container": "container_011CPR5CNjB747bTd36fQLFk",
        "inference_geo": "us",
        "speed": "fast",
        "diagnostics": {"cache": True},
        "mcp_servers": [{"type": "url", "url": "https://example.com/sse", "name": "x"}],
        "some_future_field": [1, 2, 3],
    }
    request = api.decode_messages_request(body(SEED_BODY, **extras))
    assert request == api.decode_messages_request(body(SEED_BODY))


def test_output_config_is_kept_for_the_caller_to_honour_or_refuse() -> None:
    schema = {"type": "json_schema", "schema": {"type": "object"}}
    request = api.decode_messages_request(body(SEED_BODY, output_config={"effort": "high", "format": schema}))
    assert request.output_config == api.OutputConfig(effort="high", format=schema)


def test_count_tokens_request_ignores_generation_fields() -> None:
    request = api.decode_count_tokens_request(body(CLAUDE_CODE_BODY))
    assert type(request) is api.CountTokensRequest
    assert not hasattr(request, "max_tokens")
    # Prompt fields are shared with MessagesRequest, so one renderer serves both endpoints.
    full = api.decode_messages_request(body(CLAUDE_CODE_BODY))
    assert isinstance(full, api.CountTokensRequest)
    for name in msgspec.structs.fields(api.CountTokensRequest):
        assert getattr(request, name.name) == getattr(full, name.name)


def test_count_tokens_without_max_tokens_accepts_any_thinking_budget() -> None:
    raw = body(SEED_BODY, max_tokens=None, thinking={"type": "enabled", "budget_tokens": 50000})
    assert isinstance(api.decode_count_tokens_request(raw).thinking, api.ThinkingEnabled)
    with pytest.raises(InvalidRequestError, match="max_tokens: Field required"):
        api.decode_messages_request(raw)


def test_large_max_tokens_is_accepted() -> None:
    assert api.decode_messages_request(body(SEED_BODY, max_tokens=1_000_000)).max_tokens == 1_000_000


def test_extra_roles_are_accepted_when_the_caller_allows_them() -> None:
    raw = body(
        SEED_BODY, messages=[{"role": "ctx", "content": "background"}, {"role": "user", "content": "Hi"}]
    )
    with pytest.raises(InvalidRequestError, match="messages.0.role"):
        api.decode_messages_request(raw)
    request = api.decode_messages_request(raw, roles=(*api.MESSAGE_ROLES, "ctx"))
    assert request.messages[0].role == "ctx"
    assert api.decode_count_tokens_request(raw, roles=(*api.MESSAGE_ROLES, "ctx")).messages[0].role == "ctx"


def test_system_role_message_with_text() -> None:
    raw = body(
        SEED_BODY, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert api.decode_messages_request(raw).messages[0].role == "system"


def test_validate_request_checks_requests_built_in_code() -> None:
    request = api.MessagesRequest(
        model="m", max_tokens=10, messages=[api.MessageParam(role="user", content="hi")], stop_sequences=[""]
    )
    with pytest.raises(InvalidRequestError, match="stop_sequences.0"):
        api.validate_request(request)
    api.validate_request(msgspec.structs.replace(request, stop_sequences=["\n"]))

"""Agent features of the Messages service on a scripted model with real chat templates.

Tool calls become tool_use blocks with correct stream indexes; tool results go back into the
prompt through the template; tool_choice shapes the prompt and the constraint; thinking on a
synthetic reasoning template yields signed thinking blocks within the budget.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from pensieve.api import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJSONBlockDelta,
    MessageDeltaEvent,
    MessagesRequest,
    SignatureBlockDelta,
    TextBlock,
    TextBlockDelta,
    ThinkingBlock,
    ThinkingBlockDelta,
    ToolUseBlock,
    decode_messages_request,
)
from pensieve.claude import ACCEPTED_ROLES, MessagesService, ModelCatalog, ThinkingSigner, render_prompt
from pensieve.core import InvalidRequestError
from tests.claude.scripted import QWEN3_LIKE, QWEN_LIKE, ScriptedBackend

KEY = b"k" * 32
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
SEARCH = {"name": "search", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _request(**fields: Any) -> MessagesRequest:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2000,
        "messages": ASK,
        "tools": [WEATHER, SEARCH],
        **fields,
    }
    return msgspec.convert(body, MessagesRequest)


def _service(backend: ScriptedBackend) -> MessagesService:
    return MessagesService(ModelCatalog(backend), thinking_key=KEY)


def _stream(service: MessagesService, request: MessagesRequest) -> list[Any]:
    async def collect() -> list[Any]:
        return [event async for event in await service.stream(request)]

    return asyncio.run(collect())


def _fold(events: list[Any]) -> list[dict[str, Any]]:
    """Reassemble content blocks from stream events, checking index discipline on the way."""
    blocks: list[dict[str, Any]] = []
    open_index: int | None = None
    for event in events:
        if isinstance(event, ContentBlockStartEvent):
            assert open_index is None and event.index == len(blocks)
            blocks.append({**msgspec.to_builtins(event.content_block), "_json": ""})
            open_index = event.index
        elif isinstance(event, ContentBlockDeltaEvent):
            assert event.index == open_index
            block, delta = blocks[event.index], event.delta
            if isinstance(delta, TextBlockDelta):
                block["text"] += delta.text
            elif isinstance(delta, InputJSONBlockDelta):
                block["_json"] += delta.partial_json
            elif isinstance(delta, ThinkingBlockDelta):
                block["thinking"] += delta.thinking
            elif isinstance(delta, SignatureBlockDelta):
                block["signature"] = delta.signature
        elif isinstance(event, ContentBlockStopEvent):
            assert event.index == open_index
            open_index = None
    assert open_index is None
    for block in blocks:
        if block["type"] == "tool_use":
            block["input"] = json.loads(block["_json"])
        del block["_json"]
    return blocks


def _without_ids(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in block.items() if k != "id"} for block in blocks]


def test_text_tool_use_text_blocks_in_order_stream_equals_create() -> None:
    backend = ScriptedBackend(lambda prompt: f"Let me check.\n{CALL}\nDone.")
    service = _service(backend)
    request = _request()
    events = _stream(service, request)
    blocks = _fold(events)
    assert _without_ids(blocks) == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "text", "text": "Done."},
    ]
    assert blocks[1]["id"].startswith("toolu_")
    start = next(e for e in events if isinstance(e, ContentBlockStartEvent) and e.index == 1)
    assert isinstance(start.content_block, ToolUseBlock) and start.content_block.input == {}
    final = next(e for e in events if isinstance(e, MessageDeltaEvent))
    assert final.delta.stop_reason == "tool_use"
    message = asyncio.run(service.create(request))
    assert message.stop_reason == "tool_use"
    assert _without_ids(msgspec.to_builtins(message.content)) == _without_ids(blocks)
    constraint = backend.requests[0].constraint
    assert constraint is not None and constraint.trigger == "<tool_call>"
    assert "get_weather" in constraint.grammar and "search" in constraint.grammar


def test_tool_choice_shapes_prompt_and_constraint() -> None:
    backend = ScriptedBackend(lambda prompt: '\n{"name": "search", "arguments": {"q": "x"}}\n</tool_call>')
    service = _service(backend)
    forced = asyncio.run(service.create(_request(tool_choice={"type": "tool", "name": "search"})))
    assert backend.prompt_text().endswith("<|im_start|>assistant\n<tool_call>")
    constraint = backend.requests[-1].constraint
    assert constraint is not None and constraint.trigger is None
    assert "search" in constraint.grammar and "get_weather" not in constraint.grammar
    assert [(type(b), getattr(b, "name", None)) for b in forced.content] == [(ToolUseBlock, "search")]
    assert forced.stop_reason == "tool_use"

    backend.respond = lambda prompt: "No tools needed."
    none = asyncio.run(service.create(_request(tool_choice={"type": "none"})))
    assert "<tools>" not in backend.prompt_text() and backend.requests[-1].constraint is None
    assert none.content == [TextBlock(text="No tools needed.")] and none.stop_reason == "end_turn"


def test_deferred_tools_stay_out_of_the_prompt_unless_named() -> None:
    backend = ScriptedBackend(lambda prompt: "ok")
    deferred = {**SEARCH, "defer_loading": True}
    request = _request(tools=[WEATHER, deferred])
    text = backend.tokenizer.decode(render_prompt(request, backend).tokens)
    assert '"get_weather"' in text and '"search"' not in text
    named = _request(tools=[WEATHER, deferred], tool_choice={"type": "tool", "name": "search"})
    assert '"search"' in backend.tokenizer.decode(render_prompt(named, backend).tokens)


def test_a_call_cut_by_max_tokens_ends_with_max_tokens_and_partial_input() -> None:
    backend = ScriptedBackend(lambda prompt: CALL)
    message = asyncio.run(_service(backend).create(_request(max_tokens=len(CALL) - 18)))
    assert message.stop_reason == "max_tokens"
    (block,) = message.content
    assert isinstance(block, ToolUseBlock) and block.name == "get_weather" and block.input == {"city": "Par"}


def test_tool_results_go_back_through_the_template_tool_role() -> None:
    backend = ScriptedBackend(lambda prompt: "It is 18C.", template=QWEN_LIKE)
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "18C"}],
                },
                {"type": "text", "text": "And now?"},
            ],
        },
    ]
    message = asyncio.run(_service(backend).create(_request(messages=history, system="Be brief.")))
    assert message.content == [TextBlock(text="It is 18C.")] and message.stop_reason == "end_turn"
    prompt = backend.prompt_text()
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n<tools>\n")
    tool_json = json.loads(prompt.split("<tools>\n")[1].split("\n")[0])
    assert tool_json == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": WEATHER["input_schema"],
        },
    }
    assert "<|im_start|>assistant\nChecking.\n" + CALL + "<|im_end|>" in prompt
    assert (
        "<|im_start|>user\n<tool_response>\n18C\n</tool_response><|im_end|>\n<|im_start|>user\nAnd now?"
        in prompt
    )


def test_without_template_tool_support_calls_and_results_are_text() -> None:
    backend = ScriptedBackend(lambda prompt: "ok")
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}],
        },
    ]
    text = backend.tokenizer.decode(render_prompt(_request(messages=history), backend).tokens)
    assert "To call a tool, answer with a JSON object inside <tool_call></tool_call> tags" in text
    assert f"<|im_start|>assistant\n{CALL}<|im_end|>" in text
    assert "<|im_start|>user\n<tool_response>\nError: boom\n</tool_response><|im_end|>" in text


def test_non_standard_roles_are_user_context() -> None:
    backend = ScriptedBackend(lambda prompt: "ok")
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [
            {"role": "ctx", "content": "Repository: pensieve"},
            {"role": "msg", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "Hi"},
        ],
    }
    with pytest.raises(InvalidRequestError, match="role"):
        decode_messages_request(json.dumps(body).encode())
    request = decode_messages_request(json.dumps(body).encode(), roles=ACCEPTED_ROLES)
    text = backend.tokenizer.decode(render_prompt(request, backend).tokens)
    assert text.endswith(
        "<|im_start|>user\nRepository: pensieve\n\na\nb\n\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_count_tokens_equals_usage_with_system_and_tools() -> None:
    backend = ScriptedBackend(lambda prompt: "ok", template=QWEN_LIKE)
    service = _service(backend)
    system = [
        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "B"},
    ]
    request = _request(system=system)
    message = asyncio.run(service.create(request))
    counted = asyncio.run(service.count_tokens(request)).input_tokens
    assert message.usage.input_tokens == counted == len(backend.requests[-1].prompt_tokens)
    assert counted > asyncio.run(service.count_tokens(_request(tools=None))).input_tokens


THOUGHT = "The user wants weather. I will call get_weather."


def _reasoner(prompt: str) -> str:
    if prompt.endswith("</think>\n\n"):
        return CALL
    return THOUGHT + "</think>\n\nignored"


def test_thinking_then_tool_use_on_a_reasoning_template() -> None:
    backend = ScriptedBackend(_reasoner, template=QWEN3_LIKE)
    service = _service(backend)
    request = _request(thinking={"type": "enabled", "budget_tokens": 1024})
    events = _stream(service, request)
    blocks = _fold(events)
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"]
    assert blocks[0]["thinking"] == THOUGHT
    assert ThinkingSigner(KEY).verify(THOUGHT, blocks[0]["signature"])
    assert not ThinkingSigner(b"other" * 8).verify(THOUGHT, blocks[0]["signature"])
    kinds = [type(e.delta).__name__ for e in events if isinstance(e, ContentBlockDeltaEvent) and e.index == 0]
    assert kinds[-1] == "SignatureBlockDelta" and set(kinds[:-1]) == {"ThinkingBlockDelta"}
    first, second = backend.requests[-2:]
    assert backend.tokenizer.decode(first.prompt_tokens).endswith("<|im_start|>assistant\n<think>\n")
    assert first.stop_sequences == ("</think>",) and first.max_tokens == 1024 and first.constraint is None
    assert backend.tokenizer.decode(second.prompt_tokens).endswith(f"<think>\n{THOUGHT}</think>\n\n")
    assert second.constraint is not None
    message = asyncio.run(service.create(request))
    assert message.stop_reason == "tool_use"
    assert (
        isinstance(message.content[0], ThinkingBlock)
        and message.content[0].signature == blocks[0]["signature"]
    )
    assert message.usage.output_tokens == len(THOUGHT) + len("</think>") + len(CALL) + 1


def test_the_budget_closes_the_think_section() -> None:
    long_thought = "hmm " * 600

    def respond(prompt: str) -> str:
        return "Paris is sunny." if prompt.endswith("</think>\n\n") else long_thought + "</think>"

    backend = ScriptedBackend(respond, template=QWEN3_LIKE)
    message = asyncio.run(
        _service(backend).create(_request(thinking={"type": "enabled", "budget_tokens": 1024}))
    )
    thinking, text = message.content
    assert isinstance(thinking, ThinkingBlock) and thinking.thinking == long_thought[:1024]
    assert text == TextBlock(text="Paris is sunny.") and message.stop_reason == "end_turn"
    assert backend.prompt_text().endswith(long_thought[:1024] + "\n</think>\n\n")
    assert message.usage.output_tokens == 1024 + len("Paris is sunny.") + 1


def test_omitted_thinking_keeps_the_signature_but_not_the_text() -> None:
    backend = ScriptedBackend(
        lambda p: "4" if p.endswith("</think>\n\n") else "2+2</think>", template=QWEN3_LIKE
    )
    request = _request(tools=None, thinking={"type": "enabled", "budget_tokens": 1024, "display": "omitted"})
    events = _stream(_service(backend), request)
    assert not any(
        isinstance(e, ContentBlockDeltaEvent) and isinstance(e.delta, ThinkingBlockDelta) for e in events
    )
    thinking, text = _fold(events)
    assert thinking["thinking"] == "" and ThinkingSigner(KEY).verify("2+2", thinking["signature"])
    assert text == {"type": "text", "text": "4"}


def test_thinking_is_skipped_on_models_that_do_not_think() -> None:
    backend = ScriptedBackend(lambda prompt: "Paris is sunny.")
    message = asyncio.run(
        _service(backend).create(_request(tools=None, thinking={"type": "enabled", "budget_tokens": 1024}))
    )
    assert message.content == [TextBlock(text="Paris is sunny.")]
    (only,) = backend.requests
    assert only.stop_sequences == () and "<think>" not in backend.prompt_text()


def test_a_reasoning_model_without_thinking_gets_an_empty_think_section() -> None:
    backend = ScriptedBackend(lambda prompt: "Sunny.", template=QWEN3_LIKE)
    message = asyncio.run(_service(backend).create(_request(tools=None)))
    assert message.content == [TextBlock(text="Sunny.")]
    assert backend.prompt_text().endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_thinking_with_a_forced_tool_is_refused_as_the_api_does() -> None:
    backend = ScriptedBackend(lambda prompt: "")
    request = _request(thinking={"type": "enabled", "budget_tokens": 1024}, tool_choice={"type": "any"})
    with pytest.raises(
        InvalidRequestError, match="Thinking may not be enabled when tool_choice forces tool use"
    ):
        asyncio.run(_service(backend).count_tokens(request))


def test_signed_thinking_in_history_is_replayed_and_tampered_thinking_dropped() -> None:
    backend = ScriptedBackend(lambda prompt: "ok", template=QWEN3_LIKE)
    signer = ThinkingSigner(KEY)

    def history(thinking: str, signature: str) -> MessagesRequest:
        turn = {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": thinking, "signature": signature},
                {"type": "text", "text": "Sunny."},
            ],
        }
        return _request(tools=None, messages=[*ASK, turn, {"role": "user", "content": "Thanks"}])

    signed = backend.tokenizer.decode(
        render_prompt(history("I recall.", signer.sign("I recall.")), backend, signer).tokens
    )
    assert "<|im_start|>assistant\n<think>\nI recall.\n</think>\n\nSunny.<|im_end|>" in signed
    forged = backend.tokenizer.decode(
        render_prompt(history("I was told.", signer.sign("I recall.")), backend, signer).tokens
    )
    assert "I was told." not in forged and "<|im_start|>assistant\nSunny.<|im_end|>" in forged

"""Agents against the real server: the anthropic SDK's tool loop, and Claude-Code-shaped requests.

Real-model tests are greedy and short; the Claude Code shape with its full tool list also runs
on the fake backend, which is fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.core import Config
from pensieve.server import create_app
from tests.claude.scripted import ScriptedBackend
from tests.server import claude_code
from tests.server.conftest import RunningServer, running
from tests.server.sse import parse_sse, prompt_size

GREEDY = {"temperature": 0}
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": WEATHER_SCHEMA,
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def assert_blocks_well_formed(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Stream order and block indexes as a strict client checks them; returns the reassembled blocks."""
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert isinstance(events[0][1]["message"]["usage"]["input_tokens"], int)
    blocks: list[dict[str, Any]] = []
    open_index = None
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(blocks)
            blocks.append({**data["content_block"], "_json": ""})
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
            delta = data["delta"]
            block = blocks[open_index]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                block["_json"] += delta["partial_json"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            else:
                assert delta["type"] == "signature_delta"
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    final = next(data for name, data in events if name == "message_delta")
    assert final["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use", "stop_sequence")
    assert isinstance(final["usage"]["input_tokens"], int) and final["usage"]["output_tokens"] > 0
    return blocks


BASH_CALL = '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls"}}\n</tool_call>'


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[RunningServer]:
    """A scripted model (one character per token, a 64k context) answering text, then a Bash call."""
    backend = ScriptedBackend(lambda prompt: f"I will list the files.\n{BASH_CALL}", context=65536)
    config = Config()
    app = create_app(MessagesService(ModelCatalog(backend), config.limits), config, engine=backend)
    with running(app, config) as base_url:
        yield RunningServer(base_url, app, backend)


def test_claude_code_shaped_requests_on_a_scripted_model(scripted_server: RunningServer) -> None:
    tools = claude_code.TOOLS + [
        {
            "name": f"mcp__srv__tool{i}",
            "description": "An MCP tool.",
            "input_schema": {"type": "object"},
            "defer_loading": i % 2 == 0,
        }
        for i in range(13)
    ]
    body = claude_code.body(tools=tools)
    body["messages"].insert(0, {"role": "ctx", "content": "Earlier context."})
    body["messages"].insert(1, {"role": "msg", "content": [{"type": "text", "text": "A note."}]})
    with httpx.Client(base_url=scripted_server.base_url, timeout=30) as http:
        assert http.head("/").status_code == 200
        assert http.get("/").status_code == 200
        with http.stream("POST", claude_code.PATH, json=body, headers=claude_code.HEADERS) as response:
            assert response.status_code == 200, response.read()
            events = parse_sse(response.iter_lines())
        blocks = assert_blocks_well_formed(events)
        assert [(b["type"], b.get("name")) for b in blocks] == [("text", None), ("tool_use", "Bash")]
        assert json.loads(blocks[1]["_json"]) == {"command": "ls"}
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
        prompt = scripted_server.backend.prompt_text()
        assert "Earlier context.\n\nA note." in prompt and '"mcp__srv__tool1"' in prompt
        assert '"mcp__srv__tool0"' not in prompt and '"WebFetch"' not in prompt  # deferred
        counted_body = {k: v for k, v in body.items() if k not in ("max_tokens", "stream")}
        counted = http.post(
            "/v1/messages/count_tokens?beta=true", json=counted_body, headers=claude_code.HEADERS
        )
        assert counted.status_code == 200
        # message_start's usage: the whole prompt, split by the prefix cache
        assert counted.json()["input_tokens"] == prompt_size(events[0][1]["message"]["usage"])
        fewer = {**counted_body, "tools": tools[:3]}
        no_system = {k: v for k, v in counted_body.items() if k != "system"}
        for smaller in (fewer, no_system):
            size = http.post("/v1/messages/count_tokens", json=smaller, headers=claude_code.HEADERS).json()
            assert size["input_tokens"] < counted.json()["input_tokens"]


@pytest.fixture
def client(real_server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=real_server.base_url, api_key="test-api-key-12345", max_retries=0) as c:
        yield c


@pytest.mark.real_model
def test_forced_tool_loop_with_the_sdk(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=40,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=ASK,
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER_SCHEMA)
    history = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny"}],
        },
    ]
    final = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=24,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=history,
        extra_body=GREEDY,
    )
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert [block.type for block in final.content] == ["text"] and final.content[0].text.strip()
    counted = client.messages.count_tokens(
        model="claude-sonnet-4-5", tools=[WEATHER], tool_choice={"type": "none"}, messages=history
    )
    without_result = client.messages.count_tokens(
        model="claude-sonnet-4-5", tools=[WEATHER], tool_choice={"type": "none"}, messages=history[:2]
    )
    assert prompt_size(final.usage) == counted.input_tokens > without_result.input_tokens


@pytest.mark.real_model
def test_streamed_tool_use_equals_the_non_streamed_one(client: anthropic.Anthropic) -> None:
    arguments: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 40,
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
        "messages": ASK,
        "extra_body": GREEDY,
    }
    plain = client.messages.create(**arguments)
    with client.messages.stream(**arguments) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    assert [e.type for e in events if e.type == "input_json"]  # the SDK saw input_json_delta pieces
    assert streamed.stop_reason == plain.stop_reason == "tool_use"

    def shape(message: anthropic.types.Message) -> list[dict[str, Any]]:
        return [{k: v for k, v in block.model_dump().items() if k != "id"} for block in message.content]

    assert shape(streamed) == shape(plain)
    assert streamed.content[-1].input == plain.content[-1].input and plain.content[-1].input["city"]


@pytest.mark.real_model
def test_claude_code_replay_succeeds_end_to_end(real_server: RunningServer) -> None:
    # The --bare shape: a short system text and three tools, so the prompt prefills quickly on a CPU.
    body = claude_code.body(tools=[claude_code.TOOLS[0], claude_code.TOOLS[3], claude_code.TOOLS[9]])
    # Claude Code's max_tokens 32000 and thinking budget are accepted (test_limits, thinking tests);
    # here the answer stays short for a CPU.
    body["max_tokens"] = 32
    del body["thinking"]
    with httpx.Client(base_url=real_server.base_url, timeout=600) as http:
        with http.stream("POST", claude_code.PATH, json=body, headers=claude_code.HEADERS) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(response.iter_lines())
        blocks = assert_blocks_well_formed(events)
        assert blocks, "the answer has no content"
        stop_reason = next(data["delta"]["stop_reason"] for name, data in events if name == "message_delta")
        for block in blocks:
            if block["type"] == "tool_use":
                assert block["name"] in ("Bash", "Read")
                if stop_reason == "tool_use":  # complete calls carry valid JSON input
                    json.loads(block["_json"])
        counted_body = {k: v for k, v in body.items() if k not in ("max_tokens", "stream")}
        counted = http.post(
            "/v1/messages/count_tokens?beta=true", json=counted_body, headers=claude_code.HEADERS
        )
        # message_start's usage: the whole prompt, split by the prefix cache
        assert counted.json()["input_tokens"] == prompt_size(events[0][1]["message"]["usage"])


@pytest.mark.real_model
def test_a_claude_code_prompt_beyond_the_context_is_a_clear_400(real_server: RunningServer) -> None:
    body = claude_code.body(system_text="Follow the project rules. " * 1800)
    with httpx.Client(base_url=real_server.base_url, timeout=60) as http:
        response = http.post(claude_code.PATH, json=body, headers=claude_code.HEADERS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ") and error["message"].endswith(
        " tokens > 8191 maximum"
    )
    assert int(error["message"].split()[4]) > 8192

"""End to end on the real SmolLM2 model: the anthropic SDK and the seed's curl requests.

Outputs stay short (<= 32 tokens) and greedy (temperature 0) so answers are deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.server.conftest import RunningServer
from tests.server.sse import assert_well_ordered, parse_sse, prompt_size, text_of

pytestmark = pytest.mark.real_model

GREEDY = {"temperature": 0}
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(real_server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=real_server.base_url, api_key="test-api-key-12345", max_retries=0) as c:
        yield c


def test_create_answers_the_question(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=20, messages=FRANCE, extra_body=GREEDY
    )
    assert message.id.startswith("msg_")
    assert message.model == "claude-3-5-haiku-latest"
    assert message.role == "assistant"
    assert "Paris" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert 0 < message.usage.output_tokens <= 20


def test_stream_text_equals_the_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=20, messages=FRANCE, extra_body=GREEDY
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == final.content[0].text
    assert "Paris" in final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_count_tokens_equals_usage_with_system_and_turns(client: anthropic.Anthropic) -> None:
    messages = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
    ]
    system = [
        {"type": "text", "text": "You are a helpful assistant.", "cache_control": {"type": "ephemeral"}}
    ]
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=messages, system=system)
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=12, messages=messages, system=system, extra_body=GREEDY
    )
    assert counted.input_tokens == prompt_size(message.usage)
    assert "Ada" in message.content[0].text
    alone = client.messages.count_tokens(model="claude-sonnet-4-5", messages=messages[2:])
    assert alone.input_tokens < counted.input_tokens


def test_a_repeated_prompt_is_read_from_the_prefix_cache(client: anthropic.Anthropic) -> None:
    system = "You are a geography tutor. Answer in one short sentence. " * 8
    question = [{"role": "user", "content": "What is the capital of Spain?"}]

    def ask() -> anthropic.types.Message:
        return client.messages.create(
            model="claude-sonnet-4-5", max_tokens=12, system=system, messages=question, extra_body=GREEDY
        )

    first, second = ask(), ask()
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", system=system, messages=question)
    assert prompt_size(first.usage) == prompt_size(second.usage) == counted.input_tokens
    assert second.usage.cache_read_input_tokens == counted.input_tokens - 1  # all but the token read to answer
    assert second.usage.cache_creation_input_tokens == 0
    assert second.content[0].text == first.content[0].text  # reuse never changes the answer


def test_a_stream_reports_the_prefix_cache_in_message_start(client: anthropic.Anthropic) -> None:
    """Clients such as Claude Code read a stream's input and cache tokens from message_start."""
    system = "You are a history tutor. Answer in one short sentence. " * 8
    question = [{"role": "user", "content": "Who built the pyramids?"}]
    asked = {"model": "claude-sonnet-4-5", "max_tokens": 4, "system": system, "messages": question}
    client.messages.create(**asked, extra_body=GREEDY)  # reads the prompt into the prefix cache
    events = list(client.messages.create(**asked, stream=True, extra_body=GREEDY))
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", system=system, messages=question)
    start, final = events[0], next(e for e in events if e.type == "message_delta")
    assert start.type == "message_start"
    assert start.message.usage.cache_read_input_tokens == counted.input_tokens - 1
    assert prompt_size(start.message.usage) == counted.input_tokens
    assert final.usage.cache_read_input_tokens == start.message.usage.cache_read_input_tokens


def test_system_prompt_reaches_the_model(client: anthropic.Anthropic) -> None:
    short = "Answer with a single word."
    longer = short + " Never explain. Never add punctuation."
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=16, system=short, messages=FRANCE, extra_body=GREEDY
    )
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", system=short, messages=FRANCE)
    counted_longer = client.messages.count_tokens(model="claude-sonnet-4-5", system=longer, messages=FRANCE)
    assert prompt_size(message.usage) == counted.input_tokens < counted_longer.input_tokens
    assert "Paris" in message.content[0].text


def test_max_tokens_stops_with_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=3, messages=FRANCE, extra_body=GREEDY
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=20,
        messages=FRANCE,
        stop_sequences=["France"],
        extra_body=GREEDY,
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "France"
    assert "France" not in message.content[0].text
    assert message.content[0].text.startswith("The capital of")


def test_models_list_names_the_loaded_model(client: anthropic.Anthropic, real_server: RunningServer) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [real_server.backend.info.id]
    assert client.models.retrieve(real_server.backend.info.id).display_name


def test_sdk_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="gpt-4", max_tokens=5, messages=FRANCE)
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long: \\d+ tokens > 8191 maximum"):
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hello " * 9000}]
        )
    bad = anthropic.Anthropic(base_url=str(client.base_url), api_key="wrong", max_retries=0)
    with bad, pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=FRANCE)


def test_seed_curl_requests(real_server: RunningServer) -> None:
    body = {
        "model": "claude-3-sonnet-20240229",
        "max_tokens": 10,
        "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello Pensieve"}]}],
    }
    with httpx.Client(base_url=real_server.base_url, timeout=120) as http:
        plain = http.post("/v1/messages", json=body, headers={"Authorization": "Bearer test-api-key-12345"})
        assert plain.status_code == 200
        message = plain.json()
        assert message["type"] == "message" and message["content"][0]["type"] == "text"
        assert message["usage"]["input_tokens"] > 0
        headers = {"Authorization": "Bearer sk-ant-api-test123", "x-stream": "true"}
        with http.stream("POST", "/v1/messages", json=body, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(response.iter_lines())
        assert_well_ordered(events)
        assert text_of(events) == message["content"][0]["text"]
        health = http.get("/health").json()
        assert health["status"] == "healthy"
        assert health["device"]["backend"] == "cpu"
        assert health["model"] == real_server.backend.info.id


def test_disconnect_mid_stream_cancels_the_generation(real_server: RunningServer) -> None:
    backend = real_server.backend
    backend.closed_early.clear()
    finished_before = backend.finished_streams
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "stream": True,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
    }
    with httpx.Client(base_url=real_server.base_url, timeout=120) as http:
        headers = {"x-api-key": "test-api-key-12345"}
        with http.stream("POST", "/v1/messages", json=body, headers=headers) as response:
            for line in response.iter_lines():
                if line.startswith("event: content_block_delta"):
                    break
    assert backend.closed_early.wait(timeout=10), "the engine's event stream was not closed"
    deadline = time.monotonic() + 10
    while backend.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.running == 0
    assert backend.finished_streams == finished_before

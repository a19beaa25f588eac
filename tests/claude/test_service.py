"""Anthropic semantics on the real default model: names, prompts, token counts, messages, streams."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import msgspec
import pytest

from pensieve.api import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    CountTokensRequest,
    MessageDeltaEvent,
    MessagesRequest,
    MessageStartEvent,
    MessageStopEvent,
    PingEvent,
)
from pensieve.claude import MessagesService, ModelCatalog, render_prompt
from pensieve.core import InvalidRequestError, LimitSettings, NotFoundError, SamplingSettings
from pensieve.engine import Engine, LocalModel
from tests.server.sse import prompt_size

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def engine(default_model: LocalModel) -> Iterator[Engine]:
    engine = Engine(default_model)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def service(engine: Engine) -> MessagesService:
    return MessagesService(ModelCatalog(engine, aliases=["local-smol"]), LimitSettings(max_tools=2))


def _request(**fields: object) -> MessagesRequest:
    body = {"model": "claude-3-sonnet-20240229", "max_tokens": 16, "temperature": 0, **fields}
    return msgspec.convert(body, MessagesRequest)


FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_names_resolve_to_the_loaded_model(service: MessagesService, engine: Engine) -> None:
    catalog = service.catalog
    assert asyncio.run(catalog.resolve("claude-sonnet-4-5")) is engine
    assert asyncio.run(catalog.resolve("local-smol")) is engine
    assert asyncio.run(catalog.resolve(engine.info.id)) is engine
    with pytest.raises(NotFoundError, match="model: gpt-4"):
        asyncio.run(catalog.resolve("gpt-4"))


def test_prompt_is_the_chat_template_with_system_and_merged_turns(engine: Engine) -> None:
    request = msgspec.convert(
        {
            "model": "claude-x",
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
                {"role": "user", "content": "again"},
            ],
        },
        CountTokensRequest,
    )
    expected = (
        "<|im_start|>system\nBe brief.\n\nBe kind.<|im_end|>\n"
        "<|im_start|>user\nHi\nthere\n\nagain<|im_end|>\n<|im_start|>assistant\n"
    )
    assert engine.tokenizer.decode(list(render_prompt(request, engine).tokens)) == expected


def test_final_assistant_message_is_a_prefill(engine: Engine) -> None:
    request = msgspec.convert(
        {"model": "claude-x", "messages": [*FRANCE, {"role": "assistant", "content": "The capital is"}]},
        CountTokensRequest,
    )
    text = engine.tokenizer.decode(list(render_prompt(request, engine).tokens))
    assert text.endswith("<|im_start|>assistant\nThe capital is")


def test_images_are_refused_with_the_block_named(service: MessagesService) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    request = _request(messages=[{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}])
    with pytest.raises(InvalidRequestError, match=r"messages\.0\.content\.1: this model does not accept image input"):
        asyncio.run(service.count_tokens(request))


def test_tool_limit_is_enforced(service: MessagesService) -> None:
    tools = [{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(3)]
    with pytest.raises(InvalidRequestError, match="tools: at most 2"):
        asyncio.run(service.count_tokens(_request(messages=FRANCE, tools=tools)))


def test_create_answers_and_counts_like_count_tokens(service: MessagesService) -> None:
    request = _request(messages=FRANCE)
    message = asyncio.run(service.create(request))
    assert message.model == "claude-3-sonnet-20240229"
    assert message.stop_reason == "end_turn"
    assert "Paris" in message.content[0].text  # type: ignore[union-attr]
    assert prompt_size(message.usage) == asyncio.run(service.count_tokens(request)).input_tokens
    assert 0 < message.usage.output_tokens <= 16


def test_stream_events_follow_the_anthropic_order(service: MessagesService) -> None:
    request = _request(messages=FRANCE, max_tokens=4)

    async def collect() -> list[object]:
        return [event async for event in await service.stream(request)]

    events = asyncio.run(collect())
    assert isinstance(events[0], MessageStartEvent)
    assert prompt_size(events[0].message.usage) == asyncio.run(service.count_tokens(request)).input_tokens
    assert isinstance(events[1], PingEvent)
    assert isinstance(events[2], ContentBlockStartEvent) and events[2].index == 0
    deltas = [e for e in events if isinstance(e, ContentBlockDeltaEvent)]
    assert deltas and all(d.index == 0 for d in deltas)
    assert isinstance(events[-3], ContentBlockStopEvent)
    final = events[-2]
    assert isinstance(final, MessageDeltaEvent)
    assert final.delta.stop_reason == "max_tokens" and final.usage.output_tokens == 4
    assert isinstance(events[-1], MessageStopEvent)


def test_models_list_pages_names(service: MessagesService, engine: Engine) -> None:
    everything = service.list_models()
    assert [m.id for m in everything.data] == [engine.info.id, "local-smol"]
    first = service.list_models(limit=1)
    assert first.has_more and first.last_id == engine.info.id
    second = service.list_models(limit=1, after_id=first.last_id)
    assert [m.id for m in second.data] == ["local-smol"] and not second.has_more
    before = service.list_models(limit=5, before_id="local-smol")
    assert [m.id for m in before.data] == [engine.info.id]
    assert service.get_model("local-smol").id == "local-smol"
    with pytest.raises(NotFoundError):
        service.get_model("nope")


def test_requests_without_sampling_use_the_configured_defaults(
    service: MessagesService, engine: Engine
) -> None:
    """Greedy text, once asked for (temperature 0), once reached through the defaults alone."""
    greedy = asyncio.run(service.create(_request(messages=FRANCE))).content
    cool = MessagesService(ModelCatalog(engine), sampling=SamplingSettings(temperature=0.0))
    narrow = MessagesService(ModelCatalog(engine), sampling=SamplingSettings(top_k=1))
    no_sampling = msgspec.convert(
        {"model": "claude-3-sonnet-20240229", "max_tokens": 16, "messages": FRANCE}, MessagesRequest
    )
    assert asyncio.run(cool.create(no_sampling)).content == greedy
    hot_but_top_1 = msgspec.structs.replace(no_sampling, temperature=1.0)
    assert asyncio.run(narrow.create(hot_but_top_1)).content == greedy

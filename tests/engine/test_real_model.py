"""The engine on the real default model: answers, limits, stop sequences, async serving."""

from __future__ import annotations

import asyncio

import pytest

from pensieve.core import (
    EngineSettings,
    GenerationFinished,
    GenerationRequest,
    OverloadedError,
    PromptTooLongError,
    SamplingParams,
    TextDelta,
)
from pensieve.engine import Engine, LocalModel

pytestmark = pytest.mark.real_model

GREEDY = SamplingParams(temperature=0.0)
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _request(model: LocalModel, messages: list[dict[str, str]], **kwargs: object) -> GenerationRequest:
    prompt = model.chat_template.render(messages)
    return GenerationRequest(prompt_tokens=tuple(model.tokenizer.encode(prompt)), sampling=GREEDY, **kwargs)  # type: ignore[arg-type]


def test_greedy_answer_names_paris(default_model: LocalModel) -> None:
    answer = default_model.chat(FRANCE, max_tokens=20)
    assert "Paris" in answer.text
    assert answer.finished.stop_reason == "end_turn"
    assert answer.finished.prompt_tokens == len(default_model.tokenizer.encode(default_model.chat_template.render(FRANCE)))


def test_max_tokens_stops_with_max_tokens(default_model: LocalModel) -> None:
    answer = default_model.complete(_request(default_model, FRANCE, max_tokens=3))
    assert answer.finished.stop_reason == "max_tokens"
    assert answer.finished.completion_tokens == 3
    assert answer.text


def test_stop_sequence_cuts_the_answer_before_it(default_model: LocalModel) -> None:
    full = default_model.complete(_request(default_model, FRANCE, max_tokens=20)).text
    assert "Paris" in full
    cut = default_model.complete(_request(default_model, FRANCE, max_tokens=20, stop_sequences=("Paris",)))
    assert cut.finished.stop_reason == "stop_sequence"
    assert cut.finished.stop_sequence == "Paris"
    assert cut.text == full[: full.index("Paris")]


def test_prompt_longer_than_context_is_refused(default_model: LocalModel) -> None:
    context = default_model.info.context_length
    request = GenerationRequest(prompt_tokens=(1,) * (context + 10), max_tokens=5)
    with pytest.raises(PromptTooLongError, match=f"prompt is too long: {context + 10} tokens > {context - 1} maximum"):
        default_model.complete(request)


def test_max_tokens_is_clamped_to_the_room_the_context_leaves(default_model: LocalModel) -> None:
    context = default_model.info.context_length
    base = _request(default_model, FRANCE, max_tokens=1)
    filler = (198,) * (context - len(base.prompt_tokens) - 2)  # newlines before the chat prompt
    request = GenerationRequest(prompt_tokens=filler + base.prompt_tokens, max_tokens=32_000, sampling=GREEDY)
    assert default_model.room_for(request) == 2


def test_seeded_sampling_is_reproducible(default_model: LocalModel) -> None:
    sampling = SamplingParams(temperature=1.0, top_p=0.9, top_k=40, seed=1234)
    request = _request(default_model, FRANCE, max_tokens=8)
    request = GenerationRequest(prompt_tokens=request.prompt_tokens, max_tokens=8, sampling=sampling)
    assert default_model.complete(request).text == default_model.complete(request).text


async def _collect(engine: Engine, request: GenerationRequest) -> tuple[str, GenerationFinished]:
    parts: list[str] = []
    async for event in engine.stream(request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, GenerationFinished):
            return "".join(parts), event
    raise AssertionError("stream ended without GenerationFinished")


def test_engine_serves_concurrent_callers_with_their_own_answers(default_model: LocalModel) -> None:
    engine = Engine(default_model)
    try:
        questions = [FRANCE, [{"role": "user", "content": "Say hello."}]]
        requests = [_request(default_model, q, max_tokens=12) for q in questions]
        alone = [default_model.complete(r).text for r in requests]

        async def both() -> list[tuple[str, GenerationFinished]]:
            return await asyncio.gather(*(_collect(engine, r) for r in requests))

        together = asyncio.run(both())
        assert [text for text, _ in together] == alone
    finally:
        engine.close()


def test_closing_a_stream_cancels_its_generation(default_model: LocalModel) -> None:
    engine = Engine(default_model)
    try:

        async def read_one_then_leave() -> None:
            events = engine.stream(_request(default_model, FRANCE, max_tokens=30))
            async for _event in events:
                break
            await events.aclose()
            for _ in range(200):
                if engine.running == 0:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the cancelled request kept running")

        asyncio.run(read_one_then_leave())
    finally:
        engine.close()


def test_full_queue_is_overloaded(default_model: LocalModel) -> None:
    engine = Engine(default_model, max_waiting=1, settings=EngineSettings(max_running=1))
    try:

        async def flood() -> None:
            long_request = _request(default_model, FRANCE, max_tokens=30)
            first = engine.stream(long_request)
            while engine.running == 0:
                await asyncio.sleep(0.01)
            second = engine.stream(long_request)  # waits: the one batch slot is taken
            with pytest.raises(OverloadedError):
                engine.stream(long_request)
            for events in (first, second):
                await events.aclose()

        asyncio.run(flood())
    finally:
        engine.close()

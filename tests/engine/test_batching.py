"""Continuous batching and the prefix cache on the real default model.

The scheduler is driven directly (synchronously, on the test thread) where a test needs to see
each step; the async ``Engine`` where the point is many callers at once.
"""

from __future__ import annotations

import asyncio

import pytest

from pensieve.core import (
    EngineSettings,
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    GenerationStarted,
    SamplingParams,
    TextDelta,
)
from pensieve.engine import BatchScheduler, Engine, LocalModel

pytestmark = pytest.mark.real_model

GREEDY = SamplingParams(temperature=0.0)
SYSTEM = (
    "You are Pensieve, a careful assistant running on the user's own machine. Answer briefly and "
    "truthfully, in plain sentences, and say so when you do not know something. "
) * 4


def _request(
    model: LocalModel, question: str, *, system: str | None = SYSTEM, max_tokens: int = 10, **kwargs: object
) -> GenerationRequest:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    prompt = model.chat_template.render(messages)
    return GenerationRequest(
        prompt_tokens=tuple(model.tokenizer.encode(prompt)),
        max_tokens=max_tokens,
        sampling=kwargs.pop("sampling", GREEDY),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def _run(scheduler: BatchScheduler, requests: dict[str, GenerationRequest]) -> dict[str, tuple[str, GenerationFinished]]:
    """Run ``requests`` together to the end: each one's text and its GenerationFinished, after
    checking that its events open with a GenerationStarted that splits the prompt the same way."""
    events_of: dict[str, list[GenerationEvent]] = {key: [] for key in requests}
    for key, request in requests.items():
        scheduler.add(key, request, request.max_tokens)
    while scheduler.busy:
        for key, events, _done in scheduler.step():
            events_of[str(key)].extend(events)
    answers = {}
    for key, (started, *deltas, finished) in events_of.items():
        assert isinstance(started, GenerationStarted) and isinstance(finished, GenerationFinished)
        assert (started.prompt_tokens, started.cache_read_tokens, started.cache_write_tokens) == (
            finished.prompt_tokens,
            finished.cache_read_tokens,
            finished.cache_write_tokens,
        )
        assert all(isinstance(delta, TextDelta) for delta in deltas)
        answers[key] = ("".join(delta.text for delta in deltas if isinstance(delta, TextDelta)), finished)
    return answers


def test_batched_greedy_answers_equal_each_request_alone(default_model: LocalModel) -> None:
    questions = ["What is the capital of France?", "Say hello.", "Name a color.", "What is 2 + 2?"]
    requests = {q: _request(default_model, q, system=None, max_tokens=12) for q in questions}
    alone = {q: default_model.complete(r).text for q, r in requests.items()}
    scheduler = default_model.scheduler(max_running=4)
    together = _run(scheduler, requests)
    assert {q: text for q, (text, _) in together.items()} == alone
    assert all(finished.completion_tokens >= 1 for _, finished in together.values())


def _first_token_steps(
    model: LocalModel, requests: dict[str, GenerationRequest], prefill_chunk_tokens: int
) -> dict[str, int]:
    """The scheduler step on which each request first produced something, all added at once."""
    scheduler = model.scheduler(max_running=len(requests), prefill_chunk_tokens=prefill_chunk_tokens)
    for key, request in requests.items():
        scheduler.add(key, request, request.max_tokens)
    first_step: dict[str, int] = {}
    step = 0
    while scheduler.busy:
        step += 1
        for key, _events, _done in scheduler.step():
            first_step.setdefault(str(key), step)
    return first_step


def test_requests_arriving_together_are_prefilled_together_in_a_shared_chunk(
    default_model: LocalModel,
) -> None:
    """Four prompts share each step's 128-token chunk (32 tokens each): all four start answering
    on the same step, the one a single prompt of their length reaches with 32-token chunks."""
    questions = ["What is the capital of France?", "Say hello.", "Name a color.", "What is 2 + 2?"]
    requests = {q: _request(default_model, q, max_tokens=2) for q in questions}
    assert all(len(r.prompt_tokens) > 128 for r in requests.values())  # the system prompt: over one chunk
    longest = max(requests, key=lambda q: len(requests[q].prompt_tokens))
    alone = _first_token_steps(default_model, {longest: requests[longest]}, prefill_chunk_tokens=32)
    together = _first_token_steps(default_model, requests, prefill_chunk_tokens=128)
    assert together == {q: alone[longest] for q in questions}


def test_seeded_sampling_does_not_depend_on_the_batch(default_model: LocalModel) -> None:
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=7)
    request = _request(default_model, "Tell me a fact.", system=None, max_tokens=8, sampling=seeded)
    alone = default_model.complete(request).text
    neighbour = _request(default_model, "Say hello.", system=None, max_tokens=8)
    together = _run(default_model.scheduler(max_running=2), {"seeded": request, "other": neighbour})
    assert together["seeded"][0] == alone


def test_a_prefix_cache_hit_reads_the_shared_prefix_and_keeps_the_output(default_model: LocalModel) -> None:
    first = _request(default_model, "What is the capital of France?")
    second = _request(default_model, "What is the capital of Italy?")
    uncached = {
        "first": default_model.complete(first).text,
        "second": default_model.complete(second).text,
    }
    scheduler = default_model.scheduler(max_running=2, prefix_cache_bytes=256 * 1024 * 1024)
    cold = _run(scheduler, {"first": first})["first"]
    assert cold[1].cache_read_tokens == 0
    assert cold[1].cache_write_tokens == len(first.prompt_tokens) - 1
    warm = _run(scheduler, {"second": second})["second"]
    shared = next(i for i, (a, b) in enumerate(zip(first.prompt_tokens, second.prompt_tokens)) if a != b)
    assert warm[1].cache_read_tokens == shared  # the system prompt and the turn's opening
    assert warm[1].cache_write_tokens == len(second.prompt_tokens) - 1 - shared
    again = _run(scheduler, {"first": first})["first"]
    assert again[1].cache_read_tokens == len(first.prompt_tokens) - 1
    assert (cold[0], warm[0], again[0]) == (uncached["first"], uncached["second"], uncached["first"])


def test_prompts_resumed_from_different_prefixes_and_prefilled_together_keep_their_outputs(
    default_model: LocalModel,
) -> None:
    """One prompt resumes after the whole cached system prompt, another after only the template's
    opening; both are prefilled in one batch and answer as they do uncached."""
    primer = _request(default_model, "What is the capital of France?")
    long_hit = _request(default_model, "What is the capital of Italy?")
    short_hit = _request(default_model, "Name a color.", system=None)
    uncached = {
        "long": default_model.complete(long_hit).text,
        "short": default_model.complete(short_hit).text,
    }
    scheduler = default_model.scheduler(max_running=2, prefix_cache_bytes=256 * 1024 * 1024)
    _run(scheduler, {"primer": primer})
    together = _run(scheduler, {"long": long_hit, "short": short_hit})
    assert together["long"][1].cache_read_tokens > together["short"][1].cache_read_tokens
    assert {key: text for key, (text, _) in together.items()} == uncached


def test_the_next_turn_reuses_the_previous_answer(default_model: LocalModel) -> None:
    scheduler = default_model.scheduler(prefix_cache_bytes=256 * 1024 * 1024)
    turn = _request(default_model, "What is the capital of France?", max_tokens=12)
    text, finished = _run(scheduler, {"turn": turn})["turn"]
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And of Spain?"},
    ]
    tokens = tuple(default_model.tokenizer.encode(default_model.chat_template.render(messages)))
    follow_up = GenerationRequest(prompt_tokens=tokens, max_tokens=4, sampling=GREEDY)
    _, next_finished = _run(scheduler, {"next": follow_up})["next"]
    assert next_finished.cache_read_tokens > len(turn.prompt_tokens)  # the prompt and part of the answer


def test_the_prefix_cache_stays_under_its_budget(default_model: LocalModel) -> None:
    probe = default_model.scheduler(prefix_cache_bytes=1 << 40)
    _run(probe, {"one": _request(default_model, "Hello?", max_tokens=2)})
    one_entry = probe.prefix_cache_bytes
    assert one_entry > 0
    budget = int(one_entry * 2.5)
    scheduler = default_model.scheduler(prefix_cache_bytes=budget)
    for question in ["Hello?", "Why is the sky blue?", "Name a fruit.", "Count to three.", "Hi!"]:
        _run(scheduler, {question: _request(default_model, question, system=None, max_tokens=2)})
        assert 0 < scheduler.prefix_cache_bytes <= budget
    assert scheduler.prefix_cache_entries >= 1


def test_cancelling_frees_the_batch_slot_at_once(default_model: LocalModel) -> None:
    scheduler = default_model.scheduler(max_running=2)
    scheduler.add("leaving", _request(default_model, "Tell me a story.", system=None, max_tokens=30), 30)
    scheduler.add("staying", _request(default_model, "Tell me a joke.", system=None, max_tokens=30), 30)
    produced: set[str] = set()
    while produced != {"leaving", "staying"}:
        produced |= {str(key) for key, events, _ in scheduler.step() if events}
    assert scheduler.running == 2
    scheduler.cancel("leaving")
    assert scheduler.running == 1
    assert {str(key) for key, _, _ in scheduler.step()} <= {"staying"}
    scheduler.cancel("staying")
    assert not scheduler.busy


def test_a_short_request_finishes_while_a_long_one_runs(default_model: LocalModel) -> None:
    engine = Engine(default_model, settings=EngineSettings(max_running=2))
    try:

        async def race() -> list[str]:
            order: list[str] = []

            async def run(name: str, request: GenerationRequest) -> None:
                async for event in engine.stream(request):
                    if isinstance(event, GenerationFinished):
                        order.append(name)

            long = asyncio.create_task(run("long", _request(default_model, "Tell me a long story.", max_tokens=32)))
            while engine.running == 0:
                await asyncio.sleep(0.01)
            await run("short", _request(default_model, "Say hi.", max_tokens=3))
            await long
            return order

        assert asyncio.run(race()) == ["short", "long"]
    finally:
        engine.close()


def test_disconnecting_mid_stream_frees_the_slot(default_model: LocalModel) -> None:
    engine = Engine(default_model, settings=EngineSettings(max_running=2))
    try:

        async def leave_early() -> None:
            events = engine.stream(_request(default_model, "Tell me a long story.", max_tokens=32))
            async for _event in events:
                break
            assert engine.running == 1
            await events.aclose()
            for _ in range(100):
                if engine.running == 0:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the slot of the closed stream was not freed")

        asyncio.run(leave_early())
    finally:
        engine.close()

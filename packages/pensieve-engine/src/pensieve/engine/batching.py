"""Continuous batching with a prefix cache, on mlx-lm's ``BatchGenerator`` and ``LRUPromptCache``.

``BatchScheduler`` decodes every running request as one batch: requests join and leave between
steps, and newcomers' prompts are prefilled together, in chunks between decode steps, so a long
prompt delays running streams by one chunk at a time rather than by its whole length. Before a
prompt is prefilled, the longest already-computed prefix of it (a system prompt, tools, earlier
turns) is taken from the prefix cache; prompts and finished answers go back into it, bounded in
bytes with least-recently-used eviction.

The scheduler is synchronous and owns MLX state: create it and call it on one thread only
(``pensieve.engine.Engine`` runs it on its generation thread).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import BatchGenerator, GenerationBatch, StopSequences
from mlx_lm.models.cache import LRUPromptCache, trim_prompt_cache
from mlx_lm.sample_utils import apply_top_k, apply_top_p, make_sampler

from pensieve.core.generation import (
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    GenerationStarted,
    SamplingParams,
    StopReason,
    TextDelta,
)
from pensieve.engine.text import IncrementalDecoder, StopSequenceMatcher

__all__ = ["BatchScheduler", "Sampler"]

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]
Key = Hashable

# All requests of one scheduler share one model, so the prefix cache needs a single model key.
_MODEL = "model"

# The fewest prompt tokens per sequence in one prefill step when several prompts share the
# step's chunk: thinner slices would spend the step on per-call overhead instead of prompt.
_MIN_PREFILL_SLICE = 32


def make_request_sampler(sampling: SamplingParams) -> Sampler | None:
    """The sampler of one request; None for greedy (the batch shares one argmax then).

    A seeded request draws from its own key, so its tokens do not depend on what else is in
    the batch; unseeded ones use MLX's global generator, as mlx-lm does.
    """
    if sampling.greedy:
        return None
    if sampling.seed is None:
        return make_sampler(temp=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    key = mx.random.key(sampling.seed)
    inverse_temperature = 1.0 / sampling.temperature

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, draw = mx.random.split(key)
        if 0 < sampling.top_p < 1.0:
            logprobs = apply_top_p(logprobs, sampling.top_p)
        if sampling.top_k > 0:
            logprobs = apply_top_k(logprobs, sampling.top_k)
        return mx.random.categorical(logprobs * inverse_temperature, key=draw)

    return sample


class _ShiftedLogitsBatch(GenerationBatch):
    """mlx-lm's decode batch, handing the samplers logits shifted by their maximum instead of
    log-probabilities.

    mlx-lm normalizes every step's logits with a logsumexp whose exp MLX's CPU backend computes
    one value at a time: 4.8 ms of a batch-8 step over SmolLM2's 49,152-token vocabulary, ~10%.
    No sampler Pensieve uses needs the normalization: argmax, temperature, top-k, top-p and the
    seeded draw all depend only on differences between logits, and the shift keeps exp from
    overflowing. The per-token log-probabilities mlx-lm reports are never read here.

    This is mlx-lm's ``GenerationBatch._step`` with that one line changed; it must follow mlx-lm's
    (the package pins mlx-lm's minor version, and the scheduler tests compare batched answers
    token for token with single runs).
    """

    def _step(self) -> tuple[list[int], list[mx.array]]:
        self._current_tokens = self._next_tokens
        self._current_logprobs = self._next_logprobs
        inputs = self._current_tokens
        logits = self.model(inputs[:, None], cache=self.prompt_cache)[:, -1, :]
        token_context = []
        if any(self.logits_processors):
            processed = []
            for e in range(len(self.uids)):
                row = logits[e : e + 1]
                processors = self.logits_processors[e] or ()
                if processors:
                    context = self._token_context[e].update_and_fetch(inputs[e : e + 1])
                    token_context.append(context)
                    for processor in processors:
                        row = processor(context, row)
                processed.append(row)
            logits = mx.concatenate(processed, axis=0)
        shifted = logits - mx.max(logits, axis=-1, keepdims=True)
        samplers = [self.fallback_sampler if s is None else s for s in (self.samplers or [None] * len(self.uids))]
        if all(s is samplers[0] for s in samplers):
            sampled = samplers[0](shifted)
        else:
            sampled = mx.concatenate([s(shifted[e : e + 1]) for e, s in enumerate(samplers)], axis=0)
        self._next_tokens = sampled
        self._next_logprobs = list(shifted)
        mx.async_eval(self._next_tokens, self._next_logprobs, token_context)
        mx.eval(inputs, self._current_logprobs)
        tokens = inputs.tolist()
        for sequence, token in zip(self.tokens, tokens):
            sequence.append(token)
        return tokens, self._current_logprobs


class _Answer:
    """One request's text: tokens in, typed events out (its GenerationStarted, deltas, then one
    GenerationFinished), both ends reporting the same split of the prompt by the prefix cache."""

    def __init__(
        self,
        request: GenerationRequest,
        decode: Callable[[Sequence[int]], str],
        *,
        cache_read_tokens: int,
        cache_write_tokens: int,
    ) -> None:
        self.request = request
        self._decoder = IncrementalDecoder(decode)
        self._stops = StopSequenceMatcher(request.stop_sequences)
        self._generated = 0
        self._cache_read = cache_read_tokens
        self._cache_write = cache_write_tokens

    def started(self) -> GenerationStarted:
        return GenerationStarted(
            len(self.request.prompt_tokens),
            cache_read_tokens=self._cache_read,
            cache_write_tokens=self._cache_write,
        )

    def token(self, token: int, finish: str | None) -> tuple[list[GenerationEvent], bool]:
        """Events for the next token, and whether the answer is complete.

        ``finish`` is mlx-lm's verdict: "stop" (an end-of-sequence token), "length" (the token
        budget is spent) or None.
        """
        self._generated += 1
        if finish == "stop":
            return self._finish("end_turn", None), True
        text, matched = self._stops.feed(self._decoder.add(token))
        events: list[GenerationEvent] = [TextDelta(text)] if text else []
        if matched is not None:
            return events + self._finish("stop_sequence", matched), True
        if finish is not None:
            return events + self._finish("max_tokens", None), True
        return events, False

    def _finish(self, reason: StopReason, matched: str | None) -> list[GenerationEvent]:
        events: list[GenerationEvent] = []
        if matched is None:
            text, matched = self._stops.feed(self._decoder.flush())
            tail = text + ("" if matched else self._stops.flush())
            if tail:
                events.append(TextDelta(tail))
            if matched is not None:
                reason = "stop_sequence"
        events.append(
            GenerationFinished(
                stop_reason=reason,
                stop_sequence=matched,
                prompt_tokens=len(self.request.prompt_tokens),
                completion_tokens=self._generated,
                cache_read_tokens=self._cache_read,
                cache_write_tokens=self._cache_write,
            )
        )
        return events


class BatchScheduler:
    """Runs many generation requests as one continuously batched decode.

    ``add`` queues a request (it starts when fewer than ``max_running`` run), ``step`` advances
    every running request by one token (and prefills at most one chunk of newcomers' prompts),
    ``cancel`` drops a request and frees its batch slot and KV memory at once.

    Newcomers' prompts are prefilled as one batch that shares the chunk: each of n prompts
    advances by ``prefill_chunk_tokens / n`` tokens a step (at least ``_MIN_PREFILL_SLICE``), so
    the wait of running streams stays about one chunk however many requests arrive together,
    and the prompts are read as one wide matrix product rather than one after another (on
    a 2-core CPU, 8 prompts x 32 tokens prefill at 239 tok/s, one prompt of 32 at 135).
    """

    def __init__(
        self,
        module: nn.Module,
        decode: Callable[[Sequence[int]], str],
        eos_token_ids: frozenset[int],
        *,
        logits_processors: Callable[[GenerationRequest], list[LogitsProcessor] | None],
        max_running: int = 8,
        prefill_chunk_tokens: int = 256,
        prefix_cache_bytes: int = 0,
    ) -> None:
        self._decode = decode
        self._processors = logits_processors
        self._max_running = max_running
        self._prefill_chunk_tokens = prefill_chunk_tokens
        self._stream = mx.default_stream(mx.default_device())
        self._generator = BatchGenerator(
            module,
            completion_batch_size=max_running,
            prefill_batch_size=max_running,
            prefill_step_size=prefill_chunk_tokens,
            stream=self._stream,
        )
        # Decode steps run in one batch object that later batches merge into (mlx-lm's extend).
        self._generator._generation_batch = _ShiftedLogitsBatch.empty(module, self._generator.sampler)
        self._end_of_sequence = StopSequences([[token] for token in sorted(eos_token_ids)])
        self._cache = LRUPromptCache(max_size=1 << 30, max_bytes=prefix_cache_bytes) if prefix_cache_bytes else None
        self._waiting: deque[tuple[Key, GenerationRequest, int]] = deque()
        self._running: dict[int, tuple[Key, _Answer]] = {}
        self._prefilling: set[int] = set()
        self._uids: dict[Key, int] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    @property
    def prefix_cache_bytes(self) -> int:
        """Bytes of KV state the prefix cache holds now."""
        return self._cache.nbytes if self._cache is not None else 0

    @property
    def prefix_cache_entries(self) -> int:
        return len(self._cache) if self._cache is not None else 0

    def add(self, key: Key, request: GenerationRequest, max_tokens: int) -> None:
        """Queue ``request``; it may produce at most ``max_tokens`` tokens (already clamped to the context)."""
        self._waiting.append((key, request, max_tokens))

    def cancel(self, key: Key) -> None:
        """Forget a request, waiting or running; its slot and KV memory are freed now."""
        uid = self._uids.pop(key, None)
        if uid is None:
            self._waiting = deque(item for item in self._waiting if item[0] != key)
            return
        del self._running[uid]
        self._prefilling.discard(uid)
        self._generator.remove([uid])

    def step(self) -> list[tuple[Key, list[GenerationEvent], bool]]:
        """Advance the batch once: ``(key, events, finished)`` for each request that produced
        something. A request's first events, on the step that admits it, start with its
        GenerationStarted."""
        events_of: dict[Key, list[GenerationEvent]] = {key: [started] for key, started in self._admit()}
        if not self._running:
            return []
        # mlx-lm reads its per-sequence prefill step afresh on every call.
        self._generator.prefill_step_size = max(
            _MIN_PREFILL_SLICE, self._prefill_chunk_tokens // max(1, len(self._prefilling))
        )
        prompt_progress, generated = self._generator.next()
        self._prefilling.difference_update(p.uid for p in prompt_progress if p.end_of_prompt)
        self._cache_prompts(prompt_progress)
        finished: set[Key] = set()
        stopped: list[int] = []
        for response in generated:
            entry = self._running.get(response.uid)
            if entry is None:
                continue
            key, answer = entry
            events, done = answer.token(response.token, response.finish_reason)
            if events or done:
                events_of.setdefault(key, []).extend(events)
            if done:
                finished.add(key)
                self._release(response.uid, key)
                if response.finish_reason is None:
                    stopped.append(response.uid)  # ended by a stop sequence: still in the batch
                else:
                    self._remember(response.all_tokens, response.prompt_cache)
        if stopped:
            caches = self._generator.remove(stopped, return_prompt_caches=self._cache is not None)
            for cache, tokens in caches.values():
                self._remember(tokens, cache)
        return [(key, events, key in finished) for key, events in events_of.items()]

    def close(self) -> None:
        self._generator.close()

    def _admit(self) -> list[tuple[Key, GenerationStarted]]:
        """Give waiting requests the free batch slots; each admitted one's GenerationStarted."""
        started: list[tuple[Key, GenerationStarted]] = []
        while self._waiting and len(self._running) < self._max_running:
            key, request, max_tokens = self._waiting.popleft()
            prompt = list(request.prompt_tokens)
            cache, rest = self._reuse(prompt)
            cached = len(prompt) - len(rest)
            written = max(0, len(prompt) - 1 - cached) if self._cache is not None else 0
            (uid,) = self._generator.insert(
                [rest],
                max_tokens=[max_tokens],
                caches=[cache] if cache is not None else None,
                all_tokens=[prompt[:cached]],
                samplers=[make_request_sampler(request.sampling)],
                logits_processors=[self._processors(request) or []],
                stop_sequences=[self._end_of_sequence],
            )
            self._uids[key] = uid
            self._prefilling.add(uid)
            answer = _Answer(request, self._decode, cache_read_tokens=cached, cache_write_tokens=written)
            self._running[uid] = (key, answer)
            started.append((key, answer.started()))
        return started

    def _reuse(self, prompt: list[int]) -> tuple[list[Any] | None, list[int]]:
        """The cached KV state of the longest known prefix of ``prompt``, and the tokens after it."""
        if self._cache is None:
            return None, prompt
        cache, rest = self._cache.fetch_nearest_cache(_MODEL, prompt)
        if cache is not None and not rest:
            # The whole prompt is cached; the model still has to read its last token to answer.
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def _cache_prompts(self, progress: list[Any]) -> None:
        """Keep the KV state of each prompt that just finished prefilling (all but its last token)."""
        if self._cache is None:
            return
        finished = [p.uid for p in progress if p.end_of_segment and not p.end_of_prompt]
        for cache, tokens in self._generator.extract_cache(finished).values():
            self._cache.insert_cache(_MODEL, list(tokens), _compacted(cache), cache_type="user")

    def _remember(self, tokens: list[int] | None, cache: list[Any] | None) -> None:
        if self._cache is not None and tokens and cache:
            self._cache.insert_cache(_MODEL, list(tokens), _compacted(cache), cache_type="assistant")

    def _release(self, uid: int, key: Key) -> None:
        del self._running[uid]
        self._uids.pop(key, None)


def _compacted(cache: list[Any]) -> list[Any]:
    """A sequence's KV state as a prefix-cache entry must hold it: computed, standing alone.

    The batch hands out lazy exact-size copies of its slices; left unevaluated, each entry would
    keep the whole batch buffer it was cut from alive, far more memory than its ``nbytes`` says.
    """
    mx.eval([layer.state for layer in cache])
    return cache

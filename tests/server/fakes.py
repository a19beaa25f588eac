"""A scripted GenerationBackend: fast, deterministic, and observable (cancellations, failures).

It answers through the real ``pensieve.claude.MessagesService``, so only the model is fake.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pensieve.core import (
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    GenerationStarted,
    ModelInfo,
    PromptTooLongError,
    TextDelta,
)

CONTEXT = 512


def fake_model_info(model_id: str, display_name: str, context_length: int) -> ModelInfo:
    """What a fake backend reports about its model: no file, no parameters."""
    return ModelInfo(
        id=model_id,
        display_name=display_name,
        architecture="fake",
        quantization="none",
        context_length=context_length,
        parameter_count=0,
        file_path=f"/nonexistent/{model_id}.gguf",
        file_size=0,
        created_at="2025-01-01T00:00:00Z",
    )


class CharTokenizer:
    """One token per character; id 0 ends a turn."""

    eos_token_ids = frozenset({0})
    vocab_size = 0x110000

    def encode(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in token_ids)


class TagTemplate:
    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


class FakeBackend:
    """Answers ``words`` one word (one token) per event, ``delay`` seconds apart.

    ``fail_on_call`` raises when a request is admitted; ``fail_after`` raises after that many
    words; ``poison`` = (text, error) raises after the first word of requests whose prompt holds
    ``text`` (others carry on). ``cancelled`` is set when a stream closes before its
    GenerationFinished.
    """

    def __init__(self) -> None:
        self.info = fake_model_info("fake-model", "Fake Model", CONTEXT)
        self.tokenizer = CharTokenizer()
        self.chat_template = TagTemplate()
        self.alive = True
        self.queue_depth = 0
        self.reset()

    def reset(self) -> None:
        self.words = ["Hello", " from", " the", " fake", " model."]
        self.delay = 0.0
        self.fail_on_call: Exception | None = None
        self.fail_after: tuple[int, Exception] | None = None
        self.poison: tuple[str, Exception] | None = None
        self.alive = True
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.finished = 0

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if len(request.prompt_tokens) >= CONTEXT:
            raise PromptTooLongError(len(request.prompt_tokens), CONTEXT - 1)
        if self.fail_on_call is not None:
            raise self.fail_on_call
        return self._events(request)

    async def _events(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.started.set()
        done = False
        poisoned = self.poison is not None and self.poison[0] in self.tokenizer.decode(request.prompt_tokens)
        try:
            yield GenerationStarted(len(request.prompt_tokens))
            count = 0
            for count, word in enumerate(self.words[: request.max_tokens], start=1):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.fail_after is not None and count > self.fail_after[0]:
                    raise self.fail_after[1]
                if poisoned and count > 1 and self.poison is not None:
                    raise self.poison[1]
                yield TextDelta(word)
            reason = "max_tokens" if request.max_tokens < len(self.words) else "end_turn"
            done = True
            self.finished += 1
            yield GenerationFinished(
                stop_reason=reason,
                stop_sequence=None,
                prompt_tokens=len(request.prompt_tokens),
                completion_tokens=count,
            )
        finally:
            if not done:
                self.cancelled.set()

"""What the engine is asked (a request of token ids) and what it answers (a stream of events)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "GenerationEvent",
    "GenerationFinished",
    "GenerationRequest",
    "GenerationStarted",
    "GrammarConstraint",
    "SamplingParams",
    "StopReason",
    "TextDelta",
]

StopReason = Literal["end_turn", "max_tokens", "stop_sequence"]


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """How the next token is drawn. ``temperature == 0`` is greedy; ``top_k == 0`` and ``top_p == 1`` are off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class GrammarConstraint(msgspec.Struct, frozen=True, kw_only=True):
    """Answer text that must follow a grammar, enforced token by token while decoding.

    ``grammar`` is an llguidance Lark grammar (``%json {…}`` embeds a JSON schema). Without a
    ``trigger`` the whole answer follows it. With one (a Python regular expression over the answer
    text, searched as tokens arrive), decoding is free until the trigger matches; the text after
    the match then follows the grammar, so a tool call the model starts on its own is still valid.
    """

    grammar: str
    trigger: str | None = None


class GenerationRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A prompt of token ids and the limits of its answer."""

    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop_sequences: tuple[str, ...] = ()
    constraint: GrammarConstraint | None = None


class GenerationStarted(msgspec.Struct, frozen=True, tag="started"):
    """The first event of every generation: the request has a batch slot, and this is how its
    prompt will be read. Of the ``prompt_tokens``, ``cache_read_tokens`` come from the prefix cache
    and ``cache_write_tokens`` will be computed and added to it; an answer's opening usage
    (``message_start``) reports them before the first token."""

    prompt_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class TextDelta(msgspec.Struct, frozen=True, tag="text_delta"):
    """The next piece of answer text: always whole UTF-8 characters, never part of a stop sequence."""

    text: str


class GenerationFinished(msgspec.Struct, frozen=True, tag="finished"):
    """The last event of every generation: why it stopped and the token counts.

    Of the ``prompt_tokens``, ``cache_read_tokens`` were taken from the prefix cache (not
    computed again) and ``cache_write_tokens`` were computed and added to it.
    """

    stop_reason: StopReason
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


GenerationEvent = GenerationStarted | TextDelta | GenerationFinished

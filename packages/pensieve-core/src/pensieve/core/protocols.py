"""The interfaces upper layers program against, so each layer can be used and tested alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from pensieve.core.generation import GenerationEvent, GenerationRequest

__all__ = ["ChatTemplate", "GenerationBackend", "ModelInfo", "TextModel", "Tokenizer"]


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What is known about a loaded model without running it."""

    id: str
    display_name: str
    architecture: str
    quantization: str
    context_length: int
    parameter_count: int
    file_path: str
    file_size: int
    created_at: str  # RFC 3339, from the file's modification time


@runtime_checkable
class Tokenizer(Protocol):
    """Text ↔ token ids for one model, with its end-of-turn tokens."""

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token text such as ``<|im_end|>`` becomes its special id."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str: ...


@runtime_checkable
class ChatTemplate(Protocol):
    """Renders a conversation into the prompt text the model was trained on."""

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str: ...


@runtime_checkable
class TextModel(Protocol):
    """A loaded model answering one request at a time on the caller's thread (library use)."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def chat_template(self) -> ChatTemplate: ...

    def generate(self, request: GenerationRequest) -> Iterator[GenerationEvent]: ...


@runtime_checkable
class GenerationBackend(Protocol):
    """A loaded model serving many callers from async code.

    ``stream`` admits the request when called — raising request errors such as PromptTooLongError
    or OverloadedError before any event — and returns an iterator of its events: one
    GenerationStarted once the request has a batch slot, text deltas, then one GenerationFinished.
    Closing that iterator early (a client went away) cancels the request's generation.
    """

    @property
    def info(self) -> ModelInfo: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def chat_template(self) -> ChatTemplate: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...

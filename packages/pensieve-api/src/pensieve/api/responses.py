"""Response bodies: a ``Message``, a token count and the model listing.

``Usage`` always carries all four token counts as integers: clients read ``input_tokens``
unconditionally and some add the cache fields without checking for ``null``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "CountTokensResponse",
    "Message",
    "MessageStopReason",
    "ModelList",
    "ModelObject",
    "RedactedThinkingBlock",
    "ResponseContentBlock",
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
    "Usage",
]

MessageStopReason = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts; in a ``message_delta`` event they are cumulative for the whole message."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt, as Anthropic splits it: uncached, newly cached and read from the cache."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


class _ResponseBlock(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class TextBlock(_ResponseBlock, frozen=True, tag="text"):
    text: str


class ToolUseBlock(_ResponseBlock, frozen=True, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


class ThinkingBlock(_ResponseBlock, frozen=True, tag="thinking"):
    thinking: str
    signature: str


class RedactedThinkingBlock(_ResponseBlock, frozen=True, tag="redacted_thinking"):
    data: str


ResponseContentBlock = TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock


class Message(msgspec.Struct, frozen=True, kw_only=True, tag="message", tag_field="type"):
    """An assistant answer; ``model`` echoes the name the client asked for."""

    id: str
    model: str
    content: list[ResponseContentBlock]
    stop_reason: MessageStopReason | None
    stop_sequence: str | None
    usage: Usage
    role: Literal["assistant"] = "assistant"


class CountTokensResponse(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int


class ModelObject(msgspec.Struct, frozen=True, kw_only=True, tag="model", tag_field="type"):
    """One entry of ``GET /v1/models``; ``created_at`` is an RFC 3339 timestamp.

    ``max_input_tokens`` and ``max_tokens`` tell clients the context window and the largest
    answer; a loaded model is always ``active``.
    """

    id: str
    display_name: str
    created_at: str
    max_input_tokens: int | None = None
    max_tokens: int | None = None
    lifecycle: Literal["active"] = "active"


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[ModelObject]
    has_more: bool
    first_id: str | None
    last_id: str | None

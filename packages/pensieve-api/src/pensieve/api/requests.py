"""Request bodies of ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Top-level fields this server has no use for (``cache_control``, ``context_management``,
``service_tier``, ``container``, ``inference_geo``, ``speed``, ``diagnostics``, ``mcp_servers``…)
are ignored rather than rejected: clients such as Claude Code send them on every request.
Constraints the schema can express (``max_tokens >= 1``, ``temperature`` in 0..1) live here;
rules that relate several fields live in :mod:`pensieve.api.validation`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from pensieve.api.content import CacheControl, ContentBlockParam, TextBlockParam

__all__ = [
    "CountTokensRequest",
    "MessageParam",
    "MessagesRequest",
    "Metadata",
    "OutputConfig",
    "ThinkingAdaptive",
    "ThinkingBetweenTools",
    "ThinkingConfig",
    "ThinkingDisabled",
    "ThinkingEnabled",
    "Tool",
    "ToolChoice",
    "ToolChoiceAny",
    "ToolChoiceAuto",
    "ToolChoiceNone",
    "ToolChoiceTool",
]

ThinkingDisplay = Literal["summarized", "omitted"]


class MessageParam(msgspec.Struct, frozen=True, kw_only=True):
    """One turn of the conversation; a string ``content`` is shorthand for one text block.

    ``role`` is a plain string so that roles outside the standard set reach
    :func:`pensieve.api.validate_request`, which names the accepted ones.
    """

    role: str
    content: str | list[ContentBlockParam]


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """A tool the model may call. ``type`` is absent or ``"custom"`` for client tools.

    Hosted server tools (``web_search_20250305``…) carry another ``type`` and no
    ``input_schema``; validation rejects them since nothing here can run them, so in a
    validated request every tool has an ``input_schema`` whose ``type`` is ``"object"``.
    """

    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    cache_control: CacheControl | None = None
    # Claude Code marks tools it only wants loaded after a tool search.
    defer_loading: bool = False
    strict: bool | None = None


class ToolChoiceAuto(msgspec.Struct, frozen=True, kw_only=True, tag="auto", tag_field="type"):
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(msgspec.Struct, frozen=True, kw_only=True, tag="any", tag_field="type"):
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(msgspec.Struct, frozen=True, kw_only=True, tag="tool", tag_field="type"):
    name: str
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(msgspec.Struct, frozen=True, kw_only=True, tag="none", tag_field="type"):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class ThinkingEnabled(msgspec.Struct, frozen=True, kw_only=True, tag="enabled", tag_field="type"):
    """Extended thinking with a token budget (at least 1024, and below ``max_tokens``)."""

    budget_tokens: Annotated[int, msgspec.Meta(ge=1024)]
    display: ThinkingDisplay | None = None


class ThinkingAdaptive(msgspec.Struct, frozen=True, kw_only=True, tag="adaptive", tag_field="type"):
    """The model decides whether and how much to think."""

    display: ThinkingDisplay | None = None


class ThinkingBetweenTools(msgspec.Struct, frozen=True, kw_only=True, tag="between_tools", tag_field="type"):
    """Thinking only between tool calls."""


class ThinkingDisabled(msgspec.Struct, frozen=True, kw_only=True, tag="disabled", tag_field="type"):
    pass


ThinkingConfig = ThinkingEnabled | ThinkingAdaptive | ThinkingBetweenTools | ThinkingDisabled


class Metadata(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str | None = None


class OutputConfig(msgspec.Struct, frozen=True, kw_only=True):
    """``effort`` is advisory; ``format`` (a JSON schema for structured output) must be honoured or refused."""

    effort: str | None = None
    format: dict[str, Any] | None = None


class CountTokensRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that makes up a prompt: the body of ``/v1/messages/count_tokens``.

    :class:`MessagesRequest` extends it, so one function rendering a ``CountTokensRequest``
    counts exactly the tokens the same request would report as ``usage.input_tokens``.
    """

    model: str
    messages: list[MessageParam]
    system: str | list[TextBlockParam] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(CountTokensRequest, frozen=True, kw_only=True):
    """The body of ``POST /v1/messages``.

    Sampling fields left out are ``None``: the caller picks the defaults (the API's is
    temperature 1.0). ``max_tokens`` is not capped here; the model's context bounds it later.
    """

    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0)] | None = None
    stream: bool = False
    metadata: Metadata | None = None

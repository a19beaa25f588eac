"""Rules that relate several fields of a request, which a schema cannot express.

Every message names the field it concerns with the API's dotted path (``tools.2.name: …``).
The decoders in :mod:`pensieve.api.codec` run these after the schema checks.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from pensieve.api.content import TextBlockParam, ToolResultBlockParam, ToolUseBlockParam
from pensieve.api.requests import (
    CountTokensRequest,
    MessageParam,
    MessagesRequest,
    ThinkingEnabled,
    Tool,
    ToolChoiceAny,
    ToolChoiceTool,
)
from pensieve.core.errors import InvalidRequestError

__all__ = ["MESSAGE_ROLES", "TOOL_NAME_PATTERN", "validate_request"]

MESSAGE_ROLES: tuple[str, ...] = ("user", "assistant", "system")
"""Roles the API defines for ``messages`` (``system`` takes text blocks only)."""

TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def validate_request(request: CountTokensRequest, *, roles: Collection[str] = MESSAGE_ROLES) -> None:
    """Raise InvalidRequestError for the first rule ``request`` breaks.

    ``roles`` is the set of accepted message roles; a caller that maps extra roles (some
    clients send ``ctx`` or ``msg``) passes its wider set.
    """
    if not request.messages:
        raise InvalidRequestError("messages: at least one message is required")
    for i, message in enumerate(request.messages):
        _check_message(f"messages.{i}", message, roles)
    tool_names = _check_tools(request.tools or [])
    _check_tool_choice(request, tool_names)
    if isinstance(request, MessagesRequest):
        _check_generation(request)


def _check_message(path: str, message: MessageParam, roles: Collection[str]) -> None:
    if message.role not in roles:
        accepted = ", ".join(repr(role) for role in roles)
        raise InvalidRequestError(f"{path}.role: Input should be one of {accepted}, got {message.role!r}")
    if isinstance(message.content, str):
        return
    for j, block in enumerate(message.content):
        where = f"{path}.content.{j}"
        if message.role == "system" and not isinstance(block, TextBlockParam):
            raise InvalidRequestError(f"{where}: system messages can only contain text blocks")
        if message.role == "user" and isinstance(block, ToolUseBlockParam):
            raise InvalidRequestError(f"{where}: tool_use blocks can only appear in assistant messages")
        if message.role == "assistant" and isinstance(block, ToolResultBlockParam):
            raise InvalidRequestError(f"{where}: tool_result blocks can only appear in user messages")


def _check_tools(tools: list[Tool]) -> set[str]:
    names: set[str] = set()
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        if tool.type not in (None, "custom"):
            raise InvalidRequestError(
                f"{path}.type: server tool {tool.type!r} is not supported; only custom tools "
                "(with an input_schema) can be used"
            )
        if not TOOL_NAME_PATTERN.match(tool.name):
            raise InvalidRequestError(
                f"{path}.name: String should match pattern {TOOL_NAME_PATTERN.pattern!r}, got {tool.name!r}"
            )
        if tool.name in names:
            raise InvalidRequestError(f"{path}.name: tool names must be unique; {tool.name!r} appears twice")
        names.add(tool.name)
        if tool.input_schema is None:
            raise InvalidRequestError(f"{path}.input_schema: Field required")
        if tool.input_schema.get("type") != "object":
            raise InvalidRequestError(
                f"{path}.input_schema.type: Input should be 'object', got {tool.input_schema.get('type')!r}"
            )
    return names


def _check_tool_choice(request: CountTokensRequest, tool_names: set[str]) -> None:
    choice = request.tool_choice
    # "auto" and "none" ask nothing a tool-less request cannot give, so they stay accepted.
    if isinstance(choice, (ToolChoiceAny, ToolChoiceTool)) and not tool_names:
        kind = type(choice).__struct_config__.tag
        raise InvalidRequestError(f"tool_choice.type: {kind!r} requires at least one tool in tools")
    if isinstance(choice, ToolChoiceTool) and choice.name not in tool_names:
        raise InvalidRequestError(f"tool_choice.name: no tool named {choice.name!r} in tools")


def _check_generation(request: MessagesRequest) -> None:
    thinking = request.thinking
    if isinstance(thinking, ThinkingEnabled) and thinking.budget_tokens >= request.max_tokens:
        raise InvalidRequestError(
            f"thinking.budget_tokens: must be less than max_tokens ({request.max_tokens}), "
            f"got {thinking.budget_tokens}"
        )
    for i, sequence in enumerate(request.stop_sequences or []):
        if not sequence:
            raise InvalidRequestError(f"stop_sequences.{i}: stop sequences must be non-empty strings")

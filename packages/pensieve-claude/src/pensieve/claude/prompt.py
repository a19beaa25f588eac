"""An Anthropic conversation (system, messages, tools) rendered into the model's prompt tokens.

The one function here serves both ``/v1/messages`` and ``/v1/messages/count_tokens``, so the
count a client is told always equals the ``usage.input_tokens`` it is billed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from pensieve.api import (
    CountTokensRequest,
    DocumentBlockParam,
    ImageBlockParam,
    PlainTextSource,
    ContentBlockSource,
    RedactedThinkingBlockParam,
    TextBlockParam,
    ThinkingBlockParam,
    Tool,
    ToolChoiceNone,
    ToolReferenceBlockParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)
from pensieve.core.errors import InvalidRequestError
from pensieve.core.protocols import GenerationBackend

__all__ = ["Prompt", "render_prompt"]


class Prompt(msgspec.Struct, frozen=True):
    """Prompt tokens, ending where the assistant's answer begins."""

    tokens: tuple[int, ...]


def render_prompt(request: CountTokensRequest, backend: GenerationBackend) -> Prompt:
    """Render ``request`` with ``backend``'s chat template and tokenize it.

    A final assistant message is a prefill: the answer continues it, so it goes after the
    generation prompt rather than through the template (which would close the turn).
    """
    turns = _turns(request)
    prefill = ""
    if turns and turns[-1]["role"] == "assistant":
        prefill = turns.pop()["content"]
    system = _system_text(request)
    if system:
        turns.insert(0, {"role": "system", "content": system})
    text = backend.chat_template.render(turns, add_generation_prompt=True) + prefill
    return Prompt(tuple(backend.tokenizer.encode(text)))


def _system_text(request: CountTokensRequest) -> str:
    parts: list[str] = []
    if isinstance(request.system, str):
        parts.append(request.system)
    elif request.system:
        parts.extend(block.text for block in request.system)
    tools = _prompt_tools(request)
    if tools:
        parts.append(_tool_instructions(tools))
    return "\n\n".join(part for part in parts if part)


def _prompt_tools(request: CountTokensRequest) -> list[Tool]:
    """Tools the model is told about: deferred ones wait for a tool search; ``none`` shows none."""
    if not request.tools or isinstance(request.tool_choice, ToolChoiceNone):
        return []
    return [tool for tool in request.tools if not tool.defer_loading]


def _tool_instructions(tools: Sequence[Tool]) -> str:
    listing = "\n".join(
        json.dumps({"name": t.name, "description": t.description or "", "input_schema": t.input_schema or {}})
        for t in tools
    )
    return (
        "You can call these tools:\n"
        f"<tools>\n{listing}\n</tools>\n"
        "To call a tool, answer with a JSON object inside <tool_call></tool_call> tags:\n"
        '<tool_call>\n{"name": "<tool name>", "arguments": {<input matching its input_schema>}}\n</tool_call>'
    )


def _turns(request: CountTokensRequest) -> list[dict[str, Any]]:
    """Messages as template turns; consecutive turns of one role merge, as the API does."""
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        if isinstance(message.content, str):
            text = message.content
        else:
            pieces = (_block_text(block, f"messages.{index}.content.{j}") for j, block in enumerate(message.content))
            text = "\n".join(piece for piece in pieces if piece)
        if turns and turns[-1]["role"] == message.role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": message.role, "content": text})
    return turns


def _block_text(block: Any, where: str) -> str:
    if isinstance(block, TextBlockParam):
        return block.text
    if isinstance(block, ToolUseBlockParam):
        call = json.dumps({"name": block.name, "arguments": block.input})
        return f"<tool_call>\n{call}\n</tool_call>"
    if isinstance(block, ToolResultBlockParam):
        return f"<tool_response>\n{_tool_result_text(block, where)}\n</tool_response>"
    if isinstance(block, DocumentBlockParam):
        return _document_text(block, where)
    if isinstance(block, (ThinkingBlockParam, RedactedThinkingBlockParam, ToolReferenceBlockParam)):
        return ""  # earlier reasoning and tool-search markers are not replayed to a local model
    if isinstance(block, ImageBlockParam):
        raise InvalidRequestError(f"{where}: this model does not accept image input")
    raise InvalidRequestError(f"{where}: content block type {type(block).__name__} is not supported")


def _tool_result_text(block: ToolResultBlockParam, where: str) -> str:
    if block.content is None:
        text = ""
    elif isinstance(block.content, str):
        text = block.content
    else:
        text = "\n".join(_block_text(part, f"{where}.content.{k}") for k, part in enumerate(block.content))
    return f"Error: {text}" if block.is_error else text


def _document_text(block: DocumentBlockParam, where: str) -> str:
    source = block.source
    if isinstance(source, PlainTextSource):
        body = source.data
    elif isinstance(source, ContentBlockSource):
        if isinstance(source.content, str):
            body = source.content
        else:
            body = "\n".join(_block_text(part, f"{where}.source.content.{k}") for k, part in enumerate(source.content))
    else:
        raise InvalidRequestError(f"{where}: only plain-text documents are supported by this model")
    title = f"{block.title}\n" if block.title else ""
    return f"<document>\n{title}{body}\n</document>"

"""An Anthropic conversation (system, messages, tools) rendered into the model's prompt tokens.

The one function here serves both ``/v1/messages`` and ``/v1/messages/count_tokens``, so the
count a client is told always equals the ``usage.input_tokens`` it is billed.

Tools reach the model through its chat template when the template has tool support in a format
we can parse (tools in the Hugging Face ``{"type": "function", …}`` form, calls as
``tool_calls``, results as ``tool`` messages); otherwise a generic tool prompt goes into the
system text and calls and results are written into the turns as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from pensieve.api import (
    MESSAGE_ROLES,
    ContentBlockSource,
    CountTokensRequest,
    DocumentBlockParam,
    ImageBlockParam,
    MessageParam,
    PlainTextSource,
    RedactedThinkingBlockParam,
    TextBlockParam,
    ThinkingAdaptive,
    ThinkingBlockParam,
    ThinkingEnabled,
    Tool,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolReferenceBlockParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)
from pensieve.claude.thinking import ThinkingSigner, is_reasoning_template, thinking_prefill
from pensieve.claude.tool_calls import ToolFormat, detect_tool_format, tool_call_grammar
from pensieve.core.errors import InvalidRequestError
from pensieve.core.generation import GrammarConstraint
from pensieve.core.protocols import GenerationBackend

__all__ = ["ACCEPTED_ROLES", "Prompt", "ToolPlan", "render_prompt"]

# Compatibility: newer Claude Code versions send turns with the non-standard roles ``ctx``
# (context it gathered) and ``msg``; both are read as user turns.
_ROLE_ALIASES = {"ctx": "user", "msg": "user"}
ACCEPTED_ROLES: tuple[str, ...] = (*MESSAGE_ROLES, *_ROLE_ALIASES)
"""Message roles this service accepts: the API's, plus the aliases some clients send."""

_TOOL_ROLE = re.compile(r"""['"]tool['"]""")


class ToolPlan(msgspec.Struct, frozen=True, kw_only=True):
    """How the answer's tool calls are written and constrained.

    ``forced``: the call opener is already in the prompt (tool_choice ``any``/``tool``), so the
    answer starts inside a call and the grammar applies from its first token.
    """

    format: ToolFormat
    names: tuple[str, ...]
    constraint: GrammarConstraint
    forced: bool


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    """Prompt tokens, ending where the assistant's answer begins, and how to read that answer.

    ``thinking``: the answer starts inside a ``<think>`` section.
    """

    tokens: tuple[int, ...]
    tools: ToolPlan | None = None
    thinking: bool = False


def render_prompt(
    request: CountTokensRequest, backend: GenerationBackend, signer: ThinkingSigner | None = None
) -> Prompt:
    """Render ``request`` with ``backend``'s chat template and tokenize it.

    A final assistant message is a prefill: the answer continues it, so it goes after the
    generation prompt rather than through the template (which would close the turn).
    ``signer`` checks thinking blocks sent back, which are replayed only when signed by it.
    """
    source: str = getattr(backend.chat_template, "source", "")
    tools = _prompt_tools(request)
    fmt = detect_tool_format(source)
    native = bool(tools) and fmt.native
    thinking = _thinking_requested(request)
    forced = isinstance(request.tool_choice, (ToolChoiceAny, ToolChoiceTool))
    if thinking and forced:
        raise InvalidRequestError(
            "Thinking may not be enabled when tool_choice forces tool use (use tool_choice auto or none)."
        )
    reader = _TurnReader(fmt if native else None, _TOOL_ROLE.search(source) is not None, source, signer)
    turns = reader.turns(request.messages)
    prefill = ""
    if turns and turns[-1]["role"] == "assistant" and set(turns[-1]) == {"role", "content"}:
        prefill = turns.pop()["content"]
    system = _system_text(request, [] if native else tools)
    if system:
        turns.insert(0, {"role": "system", "content": system})
    hf_tools = [_hf_tool(tool) for tool in tools] if native else None
    text = backend.chat_template.render(turns, tools=hf_tools, add_generation_prompt=True)
    reasoning = is_reasoning_template(source) and not prefill
    if reasoning:
        text += thinking_prefill(text, enabled=thinking)
    plan = _tool_plan(request, tools, fmt) if tools else None
    if plan is not None and plan.forced:
        prefill += plan.format.opener
    return Prompt(
        tokens=tuple(backend.tokenizer.encode(text + prefill)), tools=plan, thinking=reasoning and thinking
    )


def _thinking_requested(request: CountTokensRequest) -> bool:
    return isinstance(request.thinking, (ThinkingEnabled, ThinkingAdaptive))


def _prompt_tools(request: CountTokensRequest) -> list[Tool]:
    """Tools the model is told about: deferred ones wait for a tool search; ``none`` shows none.

    A tool named by tool_choice is always shown, deferred or not.
    """
    if not request.tools or isinstance(request.tool_choice, ToolChoiceNone):
        return []
    named = request.tool_choice.name if isinstance(request.tool_choice, ToolChoiceTool) else None
    return [tool for tool in request.tools if not tool.defer_loading or tool.name == named]


def _tool_plan(request: CountTokensRequest, tools: list[Tool], fmt: ToolFormat) -> ToolPlan:
    choice = request.tool_choice
    callable_tools = [t for t in tools if not isinstance(choice, ToolChoiceTool) or t.name == choice.name]
    parallel = not getattr(choice, "disable_parallel_tool_use", False)
    grammar = tool_call_grammar(
        fmt, [(t.name, t.input_schema or {"type": "object"}) for t in callable_tools], parallel=parallel
    )
    forced = isinstance(choice, (ToolChoiceAny, ToolChoiceTool))
    return ToolPlan(
        format=fmt,
        names=tuple(t.name for t in callable_tools),
        constraint=GrammarConstraint(grammar=grammar, trigger=None if forced else fmt.trigger),
        forced=forced,
    )


def _hf_tool(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description or "",
            "parameters": tool.input_schema or {"type": "object"},
        },
    }


def _system_text(request: CountTokensRequest, generic_tools: list[Tool]) -> str:
    parts: list[str] = []
    if isinstance(request.system, str):
        parts.append(request.system)
    elif request.system:
        parts.extend(block.text for block in request.system)
    if generic_tools:
        parts.append(_tool_instructions(generic_tools))
    return "\n\n".join(part for part in parts if part)


def _tool_instructions(tools: Sequence[Tool]) -> str:
    # "$schema" tells a small model nothing and costs prompt tokens; the grammar keeps the full schema.
    listing = "\n".join(
        json.dumps(
            {
                "name": t.name,
                "description": t.description or "",
                "input_schema": {k: v for k, v in (t.input_schema or {}).items() if k != "$schema"},
            }
        )
        for t in tools
    )
    return (
        "You can call these tools:\n"
        f"<tools>\n{listing}\n</tools>\n"
        "To call a tool, answer with a JSON object inside <tool_call></tool_call> tags:\n"
        '<tool_call>\n{"name": "<tool name>", "arguments": {<input matching its input_schema>}}\n</tool_call>\n'
        "Tool results come back inside <tool_response></tool_response> tags."
    )


def _generic_call(name: str, arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


class _TurnReader:
    """Messages as template turns.

    ``fmt`` is the template's own tool format (None: tools are written as text). Consecutive
    plain turns of one role merge, as the API does.
    """

    def __init__(
        self, fmt: ToolFormat | None, tool_role: bool, source: str, signer: ThinkingSigner | None
    ) -> None:
        self._native = fmt is not None
        self._tool_role = tool_role and fmt is not None
        self._reasoning = signer is not None and "reasoning_content" in source
        self._signer = signer
        self._names: dict[str, str] = {}  # tool_use id → tool name, for tool messages

    def turns(self, messages: Sequence[MessageParam]) -> list[dict[str, Any]]:
        turns: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            role = _ROLE_ALIASES.get(message.role, message.role)
            for turn in self._message_turns(role, message, f"messages.{index}"):
                last = turns[-1] if turns else None
                plain = set(turn) == {"role", "content"}
                if (
                    last is not None
                    and plain
                    and set(last) == {"role", "content"}
                    and last["role"] == turn["role"]
                ):
                    last["content"] = "\n\n".join(part for part in (last["content"], turn["content"]) if part)
                else:
                    turns.append(turn)
        return turns

    def _message_turns(self, role: str, message: MessageParam, where: str) -> list[dict[str, Any]]:
        if isinstance(message.content, str):
            return [{"role": role, "content": message.content}]
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        reasoning: list[str] = []
        for j, block in enumerate(message.content):
            at = f"{where}.content.{j}"
            if isinstance(block, ToolUseBlockParam):
                self._names[block.id] = block.name
                if self._native:
                    function = {"name": block.name, "arguments": block.input}
                    calls.append({"id": block.id, "type": "function", "function": function})
                else:
                    texts.append(_generic_call(block.name, block.input))
            elif isinstance(block, ToolResultBlockParam):
                content = _tool_result_text(block, at)
                if self._tool_role:
                    name = self._names.get(block.tool_use_id, "")
                    results.append(
                        {"role": "tool", "content": content, "tool_call_id": block.tool_use_id, "name": name}
                    )
                else:
                    texts.append(f"<tool_response>\n{content}\n</tool_response>")
            elif isinstance(block, ThinkingBlockParam):
                if (
                    self._reasoning
                    and self._signer is not None
                    and self._signer.verify(block.thinking, block.signature)
                ):
                    reasoning.append(block.thinking)
            else:
                piece = _block_text(block, at)
                if piece:
                    texts.append(piece)
        turns = list(results)
        text = "\n".join(texts)
        if text or not turns or calls:
            turn: dict[str, Any] = {"role": role, "content": text}
            if calls:
                turn["tool_calls"] = calls
            if reasoning:
                turn["reasoning_content"] = "\n".join(reasoning)
            turns.append(turn)
        return turns


def _block_text(block: Any, where: str) -> str:
    if isinstance(block, TextBlockParam):
        return block.text
    if isinstance(block, ToolUseBlockParam):
        return _generic_call(block.name, block.input)
    if isinstance(block, ToolResultBlockParam):
        return f"<tool_response>\n{_tool_result_text(block, where)}\n</tool_response>"
    if isinstance(block, DocumentBlockParam):
        return _document_text(block, where)
    if isinstance(block, (ThinkingBlockParam, RedactedThinkingBlockParam, ToolReferenceBlockParam)):
        return ""  # reasoning is replayed by the turn reader when signed; tool-search markers are not text
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
            body = "\n".join(
                _block_text(part, f"{where}.source.content.{k}") for k, part in enumerate(source.content)
            )
    else:
        raise InvalidRequestError(f"{where}: only plain-text documents are supported by this model")
    title = f"{block.title}\n" if block.title else ""
    return f"<document>\n{title}{body}\n</document>"

"""Requests shaped like Claude Code's (2.1.x, print mode): the body and the headers it sends.

Texts are shortened so the 135M model can answer on a CPU in reasonable time; the shape is the
observed one: ``?beta=true``, streaming, max_tokens 32000, thinking with ``display``,
``context_management``, three system blocks (two with cache_control), many tools (some deferred),
a user turn of several text blocks, ``metadata.user_id``, and the beta/app headers.
"""

from __future__ import annotations

from typing import Any

PATH = "/v1/messages?beta=true"

HEADERS = {
    "x-api-key": "test-api-key-12345",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": (
        "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
        "fine-grained-tool-streaming-2025-05-14,oauth-2025-04-20"
    ),
    "x-app": "cli",
    "anthropic-dangerous-direct-browser-access": "true",
    "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
    "x-stainless-lang": "js",
    "x-stainless-package-version": "0.60.0",
    "x-stainless-retry-count": "0",
    "x-stainless-timeout": "600",
}

_S = {"type": "string"}


def _tool(
    name: str, description: str, properties: dict[str, Any], required: list[str], defer: bool = False
) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": name,
        "description": description,
        "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }
    if defer:
        tool["defer_loading"] = True
    return tool


TOOLS = [
    _tool("Bash", "Run a shell command.", {"command": _S, "timeout": {"type": "number"}}, ["command"]),
    _tool("Glob", "Find files.", {"pattern": _S}, ["pattern"]),
    _tool(
        "Grep", "Search files.", {"pattern": _S, "output_mode": {"enum": ["content", "count"]}}, ["pattern"]
    ),
    _tool("Read", "Read a file.", {"file_path": _S, "limit": {"type": "number"}}, ["file_path"]),
    _tool(
        "Edit",
        "Edit a file.",
        {"file_path": _S, "old_string": _S, "new_string": _S},
        ["file_path", "old_string", "new_string"],
    ),
    _tool("Write", "Write a file.", {"file_path": _S, "content": _S}, ["file_path", "content"]),
    _tool(
        "TodoWrite",
        "Update todos.",
        {
            "todos": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "content": _S,
                        "status": {"enum": ["pending", "in_progress", "completed"]},
                    },
                    "required": ["content", "status"],
                },
            }
        },
        ["todos"],
    ),
    _tool("Task", "Start a sub-agent.", {"prompt": _S}, ["prompt"]),
    _tool("ExitPlanMode", "Leave plan mode.", {"plan": _S}, ["plan"]),
    _tool(
        "WebFetch",
        "Fetch a URL.",
        {"url": {"type": "string", "format": "uri"}, "prompt": _S},
        ["url", "prompt"],
        defer=True,
    ),
    _tool(
        "WebSearch", "Search the web.", {"query": {"type": "string", "minLength": 2}}, ["query"], defer=True
    ),
    _tool(
        "NotebookEdit",
        "Edit a notebook.",
        {"notebook_path": _S, "new_source": _S},
        ["notebook_path", "new_source"],
        defer=True,
    ),
]


def body(
    question: str = "Reply with one word: ready",
    *,
    system_text: str = "Be concise.",
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_0123abcd_account__session_00000000-0000-0000-0000-000000000000"},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332; cc_entrypoint=sdk-cli"},
            {
                "type": "text",
                "text": "You are Claude Code, a CLI for coding.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": system_text, "cache_control": {"type": "ephemeral"}},
        ],
        "tools": TOOLS if tools is None else tools,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "<system-reminder>\nThe working directory is /tmp/project.\n</system-reminder>",
                    },
                    {"type": "text", "text": question, "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
    }

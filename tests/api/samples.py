"""Request bodies shaped like what real clients send."""

from __future__ import annotations

from typing import Any

import msgspec

# The seed's curl example.
SEED_BODY: dict[str, Any] = {
    "model": "claude-3-sonnet-20240229",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
}

_SCHEMA = {
    "type": "object",
    "properties": {"file_path": {"type": "string"}},
    "required": ["file_path"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}

# What Claude Code sends on every request (print mode), trimmed to a few tools.
CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "stream": True,
    "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "omitted"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": "user_5f1c_account__session_0b6e"},
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332"},
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
        {
            "type": "text",
            "text": "You are an interactive CLI tool that helps users with software engineering tasks.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        },
    ],
    "tools": [
        {"name": "Read", "description": "Reads a file.", "input_schema": _SCHEMA},
        {
            "name": "mcp__github__create_issue",
            "description": "Create an issue.",
            "input_schema": {"type": "object", "properties": {}},
            "defer_loading": True,
        },
        {
            "name": "Bash",
            "description": "Runs a command.",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        },
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Context.</system-reminder>"},
                {"type": "text", "text": "What does main.py do?", "cache_control": {"type": "ephemeral"}},
            ],
        }
    ],
}

# A conversation with thinking, a tool call and its result, as an SDK agent loop sends it.
TOOL_HISTORY_BODY: dict[str, Any] = {
    "model": "claude-opus-4-1",
    "max_tokens": 2048,
    "temperature": 0.2,
    "top_p": 0.9,
    "top_k": 40,
    "stop_sequences": ["\n\nHuman:", "END"],
    "system": "You are a weather bot.",
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "tools": [
        {
            "type": "custom",
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        }
    ],
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "I should call the tool.",
                    "signature": "EqQBCkYIBxgCKkBsig",
                },
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": [{"type": "text", "text": "18°C, cloudy"}],
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "timeout", "is_error": True},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
}

# Images and documents in every source form.
MEDIA_BODY: dict[str, Any] = {
    "model": "claude-3-5-haiku-latest",
    "max_tokens": 100,
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
                    "title": "Report",
                    "context": "Q3 numbers",
                    "citations": {"enabled": True},
                },
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "Plain."},
                },
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                {
                    "type": "document",
                    "source": {"type": "content", "content": [{"type": "text", "text": "Chunk one."}]},
                },
                {"type": "text", "text": "Summarise these."},
            ],
        }
    ],
}


def body(value: dict[str, Any], **changes: Any) -> bytes:
    """``value`` with top-level ``changes`` applied (``None`` removes a key), as JSON bytes."""
    merged = {**value, **changes}
    return msgspec.json.encode({key: item for key, item in merged.items() if item is not None})

"""Reading server-sent events the way a strict client would."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def parse_sse(lines: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` pairs; asserts each frame's name equals its JSON ``type``."""
    events: list[tuple[str, dict[str, Any]]] = []
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
            assert name == data["type"], (name, data)
            events.append((name, data))
            name = None
    return events


def assert_well_ordered(events: list[tuple[str, dict[str, Any]]]) -> None:
    """message_start first (with usage), text block 0 opened/streamed/closed, message_delta, message_stop last."""
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start"
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0
    assert names[-2:] == ["message_delta", "message_stop"]
    middle = names[1:-2]
    if middle:
        assert middle[0] == "content_block_start" and middle[-1] == "content_block_stop"
        assert set(middle[1:-1]) == {"content_block_delta"}
    for name, data in events:
        if name.startswith("content_block"):
            assert data["index"] == 0
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["delta"]["stop_reason"] is not None
    assert delta["usage"]["output_tokens"] >= 0


def text_of(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")


def prompt_size(usage: Any) -> int:
    """The whole prompt a usage reports (an SDK object or the wire's JSON object): as Anthropic
    counts, cached parts are apart from input_tokens."""
    parts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(int(usage[part] if isinstance(usage, dict) else getattr(usage, part)) for part in parts)

"""Answer pieces (thinking, text, tool calls) as numbered content blocks and their stream events.

One writer serves both ``create`` and ``stream``: the stream events it returns and the content
it keeps are two views of the same blocks, so a streamed answer reassembles into exactly the
non-streamed one. Block indexes count up from 0 in the order blocks open, whatever their kind.
"""

from __future__ import annotations

from typing import Any

from pensieve.api import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJSONBlockDelta,
    ResponseContentBlock,
    SignatureBlockDelta,
    StreamEvent,
    TextBlock,
    TextBlockDelta,
    ThinkingBlock,
    ThinkingBlockDelta,
    ToolUseBlock,
    new_tool_use_id,
)
from pensieve.claude.thinking import ThinkingSigner

__all__ = ["BlockWriter"]


class BlockWriter:
    """Opens, fills and closes content blocks as answer pieces arrive.

    ``show_thinking`` False (``display: "omitted"``) keeps thinking text out of the answer; its
    block still carries the signature of the real text.
    """

    def __init__(self, signer: ThinkingSigner, *, show_thinking: bool = True) -> None:
        self._signer = signer
        self._show_thinking = show_thinking
        self._blocks: list[ResponseContentBlock] = []
        self._kind: str | None = None  # kind of the open block
        self._text: list[str] = []
        self._tool: tuple[str, str] | None = None  # (id, name)
        self._tool_input: dict[str, Any] = {}
        self.tool_calls = 0

    @property
    def content(self) -> list[ResponseContentBlock]:
        """The closed blocks so far (all of them once ``close`` has been called)."""
        return list(self._blocks)

    @property
    def _index(self) -> int:
        return len(self._blocks)

    def thinking(self, text: str) -> list[StreamEvent]:
        events = self._open("thinking", ThinkingBlock(thinking="", signature=""))
        self._text.append(text)
        if self._show_thinking and text:
            events.append(ContentBlockDeltaEvent(index=self._index, delta=ThinkingBlockDelta(thinking=text)))
        return events

    def text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        events = self._open("text", TextBlock(text=""))
        self._text.append(text)
        events.append(ContentBlockDeltaEvent(index=self._index, delta=TextBlockDelta(text=text)))
        return events

    def tool_start(self, name: str) -> list[StreamEvent]:
        events = self.close()
        self._tool = (new_tool_use_id(), name)
        self._kind = "tool_use"
        self._text = []
        events.append(
            ContentBlockStartEvent(
                index=self._index, content_block=ToolUseBlock(id=self._tool[0], name=name, input={})
            )
        )
        return events

    def tool_input(self, partial_json: str) -> list[StreamEvent]:
        self._text.append(partial_json)
        return [
            ContentBlockDeltaEvent(index=self._index, delta=InputJSONBlockDelta(partial_json=partial_json))
        ]

    def tool_end(self, tool_input: dict[str, Any]) -> list[StreamEvent]:
        self._tool_input = tool_input
        return self.close()

    def close(self) -> list[StreamEvent]:
        """Close the open block, if any (a thinking block gets its signature first)."""
        kind, text = self._kind, "".join(self._text)
        if kind is None:
            return []
        events: list[StreamEvent] = []
        if kind == "thinking":
            signature = self._signer.sign(text)
            events.append(
                ContentBlockDeltaEvent(index=self._index, delta=SignatureBlockDelta(signature=signature))
            )
            self._blocks.append(
                ThinkingBlock(thinking=text if self._show_thinking else "", signature=signature)
            )
        elif kind == "text":
            self._blocks.append(TextBlock(text=text))
        else:
            assert self._tool is not None
            self._blocks.append(ToolUseBlock(id=self._tool[0], name=self._tool[1], input=self._tool_input))
            self.tool_calls += 1
            self._tool, self._tool_input = None, {}
        events.append(ContentBlockStopEvent(index=self._index - 1))
        self._kind, self._text = None, []
        return events

    def _open(self, kind: str, empty: ResponseContentBlock) -> list[StreamEvent]:
        if self._kind == kind:
            return []
        events = self.close()
        self._kind = kind
        events.append(ContentBlockStartEvent(index=self._index, content_block=empty))
        return events

"""Turning a stream of token ids into a stream of text, safely.

Two small state machines: ``IncrementalDecoder`` emits only whole UTF-8 characters (a multi-byte
character split across tokens is held until complete), and ``StopSequenceMatcher`` finds stop
sequences across token boundaries, holding back text that could still become one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["IncrementalDecoder", "StopSequenceMatcher"]

_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Decodes token ids one at a time into text deltas.

    Decoding each token alone is wrong for byte-level BPE (a character can span tokens) and for
    SentencePiece (leading-space handling depends on context), so it decodes a short window of
    recent tokens and emits what that window adds beyond its already-emitted prefix.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        self._prefix_start = 0  # window start: tokens before this are fully emitted
        self._read_start = 0  # tokens before this are emitted as part of the window

    def add(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self._tokens.append(token_id)
        emitted = self._decode(self._tokens[self._prefix_start : self._read_start])
        current = self._decode(self._tokens[self._prefix_start :])
        if len(current) > len(emitted) and not current.endswith(_REPLACEMENT):
            self._prefix_start = self._read_start
            self._read_start = len(self._tokens)
            return current[len(emitted) :]
        return ""

    def flush(self) -> str:
        """Text still held at the end of generation (an incomplete character decodes as U+FFFD)."""
        emitted = self._decode(self._tokens[self._prefix_start : self._read_start])
        current = self._decode(self._tokens[self._prefix_start :])
        self._prefix_start = self._read_start = len(self._tokens)
        return current[len(emitted) :]


class StopSequenceMatcher:
    """Finds the first stop sequence in streamed text without ever emitting any part of it."""

    def __init__(self, stop_sequences: Sequence[str]) -> None:
        self._stops = tuple(s for s in stop_sequences if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """Add text; return ``(safe_text, matched_stop)``. After a match, the rest is dropped."""
        if not self._stops:
            return text, None
        buffer = self._held + text
        first: tuple[int, str] | None = None
        for stop in self._stops:
            at = buffer.find(stop)
            if at != -1 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self._held = ""
            return buffer[: first[0]], first[1]
        keep = self._longest_partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], None

    def flush(self) -> str:
        """Held text at the end of generation: it never became a stop sequence."""
        held, self._held = self._held, ""
        return held

    def _longest_partial_suffix(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest

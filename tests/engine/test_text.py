"""Incremental detokenization and stop-sequence matching, on a real byte-level tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve.engine import IncrementalDecoder, StopSequenceMatcher


def _byte_decode(ids: list[int] | tuple[int, ...]) -> str:
    """A byte-per-token tokenizer: the hardest case for UTF-8 safety."""
    return bytes(ids).decode("utf-8", errors="replace")


@pytest.mark.parametrize("text", ["plain ascii", "café", "日本語", "emoji 🙂 mixed é", ""])
def test_incremental_decoder_emits_whole_characters_only(text: str) -> None:
    decoder = IncrementalDecoder(_byte_decode)
    pieces = [decoder.add(byte) for byte in text.encode("utf-8")]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_incremental_decoder_flushes_an_incomplete_character_as_replacement() -> None:
    decoder = IncrementalDecoder(_byte_decode)
    assert decoder.add(0xE6) == ""  # first byte of a three-byte character
    assert decoder.flush() == "\ufffd"


def _run_matcher(stops: list[str], chunks: list[str]) -> tuple[str, str | None]:
    matcher = StopSequenceMatcher(stops)
    out: list[str] = []
    for chunk in chunks:
        text, matched = matcher.feed(chunk)
        out.append(text)
        if matched is not None:
            return "".join(out), matched
    out.append(matcher.flush())
    return "".join(out), None


def test_stop_sequence_split_across_chunks_is_found_and_never_emitted() -> None:
    assert _run_matcher(["STOP"], ["hello S", "T", "OP world"]) == ("hello ", "STOP")


def test_partial_stop_prefix_is_released_when_it_does_not_complete() -> None:
    assert _run_matcher(["STOP"], ["hello ST", "ART"]) == ("hello START", None)


def test_earliest_of_several_stop_sequences_wins() -> None:
    assert _run_matcher(["world", "lo w"], ["hello world"]) == ("hel", "lo w")


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="abcXY ", max_size=40),
    stop=st.text(alphabet="abcXY", min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_matcher_agrees_with_str_find_for_any_chunking(text: str, stop: str, cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    chunks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    at = text.find(stop)
    expected = (text, None) if at == -1 else (text[:at], stop)
    assert _run_matcher([stop], chunks) == expected

"""Grammar-constrained decoding with llguidance: a logits processor that masks disallowed tokens.

Only requests that carry a ``GrammarConstraint`` get a processor, so unconstrained decoding pays
nothing. The llguidance tokenizer is built once per model, on first use, from the GGUF vocabulary:
llguidance needs every token's raw bytes, which the GGUF token strings encode per tokenizer model.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import llguidance
import mlx.core as mx
import numpy as np

from pensieve.core.errors import InvalidRequestError
from pensieve.core.generation import GrammarConstraint

__all__ = ["ConstraintCompiler", "GrammarLogitsProcessor", "token_bytes"]

# tokenizer.ggml.token_type values
_UNKNOWN, _CONTROL, _BYTE = 2, 3, 6
_SPM_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
# A trigger is searched again only over the bytes that could still complete a new match.
_TRIGGER_LOOKBACK = 128


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE spells each byte as a printable character; this maps them back."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars)}


def token_bytes(metadata: Mapping[str, Any]) -> list[bytes]:
    """The raw bytes of every token of a GGUF vocabulary (special tokens as their text)."""
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    types: list[int] = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    model = metadata.get("tokenizer.ggml.model")
    table: list[bytes] = []
    if model == "gpt2":
        decoder = _gpt2_byte_decoder()
        for token, kind in zip(tokens, types):
            if kind in (_UNKNOWN, _CONTROL) or any(ch not in decoder for ch in token):
                table.append(token.encode())  # special and added tokens are stored as plain text
            else:
                table.append(bytes(decoder[ch] for ch in token))
    else:  # SentencePiece: "▁" is a space, byte tokens are spelled <0xNN>
        for token, kind in zip(tokens, types):
            byte = _SPM_BYTE.match(token) if kind == _BYTE else None
            if byte:
                table.append(bytes([int(byte.group(1), 16)]))
            elif kind in (_UNKNOWN, _CONTROL):
                table.append(token.encode())
            else:
                table.append(token.replace("▁", " ").encode())
    return table


class _Vocabulary:
    """What llguidance's ``TokenizerWrapper`` reads: token bytes, special ids and an encoder."""

    def __init__(
        self,
        tokens: list[bytes],
        special: list[int],
        eos: int,
        bos: int | None,
        encode: Callable[[str], list[int]],
    ) -> None:
        self.tokens = tokens
        self.special_token_ids = special
        self.eos_token_id = eos
        self.bos_token_id = bos
        self._encode = encode

    def __call__(self, text: str | bytes) -> list[int]:
        return self._encode(text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text)


class ConstraintCompiler:
    """Compiles grammar constraints for one model's vocabulary."""

    def __init__(
        self,
        metadata: Mapping[str, Any],
        encode: Callable[[str], list[int]],
        eos_token_ids: frozenset[int],
        bos_token_id: int | None,
        vocab_size: int,
    ) -> None:
        self._metadata = metadata
        self._encode = encode
        self._eos = sorted(eos_token_ids)
        self._bos = bos_token_id
        self._vocab_size = vocab_size
        self._lock = threading.Lock()
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._bytes: list[bytes] = []

    def _llg_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                table = token_bytes(self._metadata)
                table += [b""] * (self._vocab_size - len(table))
                types = self._metadata.get("tokenizer.ggml.token_type") or []
                special = [i for i, kind in enumerate(types) if kind in (_UNKNOWN, _CONTROL)]
                vocabulary = _Vocabulary(table, special, self._eos[0], self._bos, self._encode)
                wrapper = llguidance.TokenizerWrapper(vocabulary)
                self._tokenizer = llguidance.LLTokenizer(
                    wrapper, n_vocab=self._vocab_size, eos_token=self._eos
                )
                self._bytes = table
            return self._tokenizer

    def check(self, constraint: GrammarConstraint) -> None:
        """Raise InvalidRequestError when the grammar or its trigger cannot be compiled."""
        if constraint.trigger is not None:
            try:
                re.compile(constraint.trigger.encode())
            except re.error as exc:
                raise InvalidRequestError(
                    f"the constraint's trigger is not a valid regular expression: {exc}"
                ) from exc
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            constraint.grammar, self._llg_tokenizer()
        )
        if is_error:
            raise InvalidRequestError(f"cannot decode under this grammar: {messages[0]}")

    def processor(self, constraint: GrammarConstraint, prompt_length: int) -> GrammarLogitsProcessor:
        """A fresh processor for one request whose prompt has ``prompt_length`` tokens."""
        tokenizer = self._llg_tokenizer()
        return GrammarLogitsProcessor(tokenizer, self._bytes, constraint, prompt_length)


class GrammarLogitsProcessor:
    """An mlx-lm logits processor: tokens the grammar forbids get ``-inf``.

    mlx-lm calls it before each sampling step with every token so far (prompt included). Until
    the trigger matches it only watches the answer's bytes; from then on an ``LLMatcher`` follows
    the text after the match and supplies the mask. Should the text already past the trigger not
    fit the grammar, the request goes on unconstrained (the caller's parser sees malformed text).
    """

    def __init__(
        self,
        tokenizer: llguidance.LLTokenizer,
        table: Sequence[bytes],
        constraint: GrammarConstraint,
        prompt_length: int,
    ) -> None:
        self._tokenizer = tokenizer
        self._table = table
        self._grammar = constraint.grammar
        self._trigger = None if constraint.trigger is None else re.compile(constraint.trigger.encode())
        self._seen = prompt_length
        self._answer = bytearray()
        self._matcher: llguidance.LLMatcher | None = None
        self._failed = False
        self._mask = np.zeros(((tokenizer.vocab_size + 31) // 32,), dtype=np.int32)
        if self._trigger is None:
            self._matcher = llguidance.LLMatcher(tokenizer, self._grammar, log_level=0)

    @property
    def active(self) -> bool:
        """True while the grammar decides the next token."""
        return self._matcher is not None and not self._failed

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        new = tokens[self._seen :].tolist() if tokens.size > self._seen else []
        self._seen = tokens.size
        self.consume(new)
        if not self.active:
            return logits
        allowed = self._allowed(logits.shape[-1])
        return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))

    def consume(self, new_tokens: Sequence[int]) -> None:
        """Advance over tokens just generated."""
        for token in new_tokens:
            if self._failed:
                return
            if self._matcher is not None:
                if not self._matcher.consume_token(token):
                    self._failed = True
                continue
            start = max(0, len(self._answer) - _TRIGGER_LOOKBACK)
            self._answer += self._table[token] if token < len(self._table) else b""
            assert self._trigger is not None
            found = self._trigger.search(self._answer, start)
            if found:
                self._start(bytes(self._answer[found.end() :]))

    def _start(self, overshoot: bytes) -> None:
        """The trigger matched: the grammar takes over, beginning with the bytes past the match."""
        self._matcher = llguidance.LLMatcher(self._tokenizer, self._grammar, log_level=0)
        if overshoot:
            try:
                text = overshoot.decode("utf-8")
            except UnicodeDecodeError:
                self._failed = True
                return
            if not self._matcher.consume_tokens(self._tokenizer.greedy_tokenize(text)):
                self._failed = True

    def _allowed(self, vocab: int) -> mx.array:
        assert self._matcher is not None
        self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        if self._matcher.is_error():
            self._failed = True
            return mx.ones((vocab,), dtype=mx.bool_)
        bits = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[:vocab]
        if bits.shape[0] < vocab:
            bits = np.pad(bits, (0, vocab - bits.shape[0]))
        return mx.array(bits.astype(np.bool_))

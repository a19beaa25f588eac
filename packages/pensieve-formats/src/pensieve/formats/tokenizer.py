"""The model's tokenizer, rebuilt with HF ``tokenizers`` from the vocabulary stored in GGUF metadata.

Two GGUF tokenizer models are supported: ``gpt2`` (byte-level BPE from tokens and merges, with
the pre-tokenizer regex named by ``tokenizer.ggml.pre``) and ``llama`` (SentencePiece BPE: merges
derived from token scores, byte fallback, ``▁`` for spaces, as llama.cpp tokenizes it).
Control (3) and user-defined (4) tokens are special: their text in the input becomes their id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from pensieve.core.errors import ModelFileError, UnsupportedModelError

if TYPE_CHECKING:
    from pensieve.formats.spec import ModelSpec

__all__ = ["SPECIAL_TOKEN_TYPES", "SUPPORTED_TOKENIZER_MODELS", "GGUFTokenizer", "build_tokenizer"]

SUPPORTED_TOKENIZER_MODELS = ("gpt2", "llama")

# tokenizer.ggml.token_type values
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4
SPECIAL_TOKEN_TYPES = (_CONTROL, _USER_DEFINED)

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen 2 and 3: Llama 3's regex with one digit at a time, and ordinary BPE merges.
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
_SPLITS = {"llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}
# tokenizer.ggml.pre → pre-tokenizer family. GPT-2's own regex is ByteLevel's built-in one.
_PRE_TOKENIZERS = {
    "default": "gpt2",
    "gpt2": "gpt2",
    "gpt-2": "gpt2",
    "smollm": "digits+gpt2",
    "starcoder": "digits+gpt2",
    "refact": "digits+gpt2",
    "llama-bpe": "llama3",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "qwen2": "qwen2",
}


class GGUFTokenizer:
    """Text ↔ token ids for a GGUF model (implements ``pensieve.core.protocols.Tokenizer``).

    ``encode`` never adds BOS: callers (chat templates) decide, guided by ``add_bos`` and
    ``bos_token_id``.
    """

    def __init__(
        self,
        backend: Tokenizer,
        *,
        vocab_size: int,
        eos_token_ids: frozenset[int],
        bos_token_id: int | None,
        add_bos: bool,
    ) -> None:
        self._backend = backend
        self._vocab_size = vocab_size
        self._eos_token_ids = eos_token_ids
        self._bos_token_id = bos_token_id
        self._add_bos = add_bos

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``, for tools that want it (mlx-lm, transformers)."""
        return self._backend

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos_token_ids

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def bos_token_id(self) -> int | None:
        return self._bos_token_id

    @property
    def add_bos(self) -> bool:
        """Whether the model expects BOS at the start of a prompt (``tokenizer.ggml.add_bos_token``)."""
        return self._add_bos

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token text such as ``<|im_end|>`` becomes its special id."""
        ids: list[int] = self._backend.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``, special tokens included as their text."""
        text: str = self._backend.decode(list(token_ids), skip_special_tokens=False)
        return text


def build_tokenizer(metadata: Mapping[str, Any], spec: ModelSpec, source: str) -> GGUFTokenizer:
    """The tokenizer described by ``tokenizer.ggml.*`` metadata."""
    model = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelFileError(f"{source}: the vocabulary (tokenizer.ggml.tokens) is missing")
    types = metadata.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    if not all(isinstance(token, str) for token in tokens) or not isinstance(types, list):
        raise ModelFileError(f"{source}: tokenizer.ggml.tokens must be strings with a token_type array")
    if len(types) != len(tokens):
        raise ModelFileError(f"{source}: {len(types)} token types for {len(tokens)} tokens")
    if model == "gpt2":
        backend = _byte_level_bpe(metadata, tokens, source)
        add_bos_default = False
    elif model == "llama":
        backend = _sentencepiece_bpe(metadata, tokens, types, source)
        add_bos_default = True
    else:
        raise UnsupportedModelError(
            f"{source}: tokenizer model {model!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_TOKENIZER_MODELS)})"
        )
    backend.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False)
            for token, kind in zip(tokens, types)
            if kind in SPECIAL_TOKEN_TYPES
        ]
    )
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", add_bos_default)
    return GGUFTokenizer(
        backend,
        vocab_size=spec.vocab_size,
        eos_token_ids=spec.eos_token_ids,
        bos_token_id=spec.bos_token_id,
        add_bos=bool(add_bos),
    )


def _vocab(tokens: Sequence[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for token_id, token in enumerate(tokens):
        vocab.setdefault(token, token_id)  # a repeated token keeps its first id
    return vocab


def _byte_level_bpe(metadata: Mapping[str, Any], tokens: Sequence[str], source: str) -> Tokenizer:
    pre = metadata.get("tokenizer.ggml.pre") or "default"
    family = _PRE_TOKENIZERS.get(pre)
    if family is None:
        raise UnsupportedModelError(
            f"{source}: pre-tokenizer {pre!r} is not supported "
            f"(supported: {', '.join(sorted(_PRE_TOKENIZERS))})"
        )
    merges: list[tuple[str, str]] = []
    for merge in metadata.get("tokenizer.ggml.merges") or []:
        left, _, right = merge.partition(" ") if isinstance(merge, str) else ("", "", "")
        if not left or not right:
            raise ModelFileError(f"{source}: merge {merge!r} is not two tokens separated by a space")
        merges.append((left, right))
    try:
        backend = Tokenizer(models.BPE(_vocab(tokens), merges, ignore_merges=family == "llama3"))
    except Exception as exc:  # tokenizers raises plain Exception for an inconsistent vocabulary
        raise ModelFileError(f"{source}: the BPE vocabulary and merges are inconsistent: {exc}") from exc
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=family not in _SPLITS)
    if family == "gpt2":
        backend.pre_tokenizer = byte_level
    elif family == "digits+gpt2":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        split = pre_tokenizers.Split(Regex(_SPLITS[family]), behavior="isolated")
        backend.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(
    metadata: Mapping[str, Any], tokens: Sequence[str], types: Sequence[int], source: str
) -> Tokenizer:
    scores = metadata.get("tokenizer.ggml.scores")
    if (
        not isinstance(scores, list)
        or len(scores) != len(tokens)
        or not all(isinstance(score, (int, float)) for score in scores)
    ):
        raise ModelFileError(
            f"{source}: a SentencePiece vocabulary needs one score per token (tokenizer.ggml.scores)"
        )
    vocab = _vocab(tokens)
    # SentencePiece BPE merges the adjacent pair whose union has the highest score: list every
    # pair of normal pieces whose union is a normal piece, best union first.
    mergeable = {token for token, kind in zip(tokens, types) if kind in (_NORMAL, _USER_DEFINED)}
    ranked: list[tuple[float, int, str, str]] = []
    for token in mergeable:
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-float(scores[vocab[token]]), vocab[token], left, right))
    ranked.sort()
    unknown = next((token for token, kind in zip(tokens, types) if kind == _UNKNOWN), None)
    try:
        model = models.BPE(
            vocab,
            [(left, right) for _, _, left, right in ranked],
            unk_token=unknown,
            byte_fallback=True,
            fuse_unk=True,
        )
    except Exception as exc:  # tokenizers raises plain Exception for an inconsistent vocabulary
        raise ModelFileError(f"{source}: the SentencePiece vocabulary is inconsistent: {exc}") from exc
    backend = Tokenizer(model)
    prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    # As in llama.cpp, "▁" is prepended to every stretch of text between special tokens, even one
    # already starting with a space (Metaspace would skip those).
    spaces = normalizers.Replace(" ", "▁")
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), spaces]) if prefix else spaces
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend

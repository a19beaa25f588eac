"""What a GGUF file's metadata says about the model: dimensions, RoPE, vocabulary, end tokens.

Where a file leaves a number out, the value is the one llama.cpp assumes for that architecture
(Gemma 2's soft-capping, Gemma 3's sliding-window pattern and local RoPE base), so a file means
here what it means there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from gguf import GGMLQuantizationType, LlamaFileType

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats.chat_template import fallback_template
from pensieve.formats.tokenizer import SPECIAL_TOKEN_TYPES

__all__ = ["SUPPORTED_ARCHITECTURES", "ModelSpec", "build_spec"]

# Mistral GGUFs use llama's tensor layout and keys, under their own prefix.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")

# End-of-turn markers of common chat formats; one that the template uses and the vocabulary
# holds as a special token also ends generation (ChatML, Llama 3, Gemma, Phi-3).
_END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>")
_ROPE_SCALING_TYPES = ("linear", "yarn")


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers an engine needs to build the model, read from GGUF metadata."""

    architecture: str
    name: str | None
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    # mlx-lm's ``rope_scaling`` dict (``type``, ``factor``, ``original_max_position_embeddings``).
    rope_scaling: dict[str, Any] | None
    context_length: int
    rms_norm_eps: float
    # Features rotated by RoPE (``rope.dimension_count``); Phi-4-mini rotates only part of a head.
    rope_dimensions: int
    # Sliding-window attention (Gemma 2 and 3): the window, and every ``pattern``-th layer (the last
    # of each group) attending globally; None when every layer attends to the whole context.
    sliding_window: int | None
    sliding_window_pattern: int | None
    # RoPE base of the sliding-window layers, when it differs from ``rope_theta`` (Gemma 3).
    rope_local_theta: float | None
    # Gemma 2's soft caps: ``cap * tanh(x / cap)`` on attention scores and on the output logits.
    attn_logit_softcapping: float | None
    final_logit_softcapping: float | None
    vocab_size: int
    bos_token_id: int | None
    eos_token_ids: frozenset[int]
    tie_word_embeddings: bool
    quantization: str
    parameter_count: int


class _Metadata:
    """Typed access to metadata values, naming the key and the file in every complaint."""

    def __init__(self, values: Mapping[str, Any], source: str) -> None:
        self.values = values
        self.source = source

    def integer(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        value = self.values.get(key, default)
        if value is None:
            raise ModelFileError(f"{self.source}: metadata {key!r} is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ModelFileError(
                f"{self.source}: metadata {key!r} must be an integer >= {minimum}, not {value!r}"
            )
        return value

    def optional_integer(self, key: str) -> int | None:
        return self.integer(key, minimum=0) if key in self.values else None

    def number(self, key: str, default: float) -> float:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ModelFileError(f"{self.source}: metadata {key!r} must be a positive number, not {value!r}")
        return float(value)

    def text(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is not None and not isinstance(value, str):
            raise ModelFileError(
                f"{self.source}: metadata {key!r} must be a string, not {type(value).__name__}"
            )
        return value

    def array(self, key: str) -> Sequence[Any]:
        value = self.values.get(key, [])
        if not isinstance(value, list):
            raise ModelFileError(f"{self.source}: metadata {key!r} must be an array")
        return value


def build_spec(
    values: Mapping[str, Any],
    tensor_shapes: Mapping[str, tuple[int, ...]],
    tensor_types: Mapping[str, GGMLQuantizationType],
    source: str,
) -> ModelSpec:
    """The ModelSpec of a file from its metadata and tensor table (shapes in numpy order)."""
    meta = _Metadata(values, source)
    arch = meta.text("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{source}: architecture {arch!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    if meta.integer(f"{arch}.expert_count", 0, minimum=0) > 0:
        raise UnsupportedModelError(f"{source}: mixture-of-experts {arch} models are not supported")

    hidden = meta.integer(f"{arch}.embedding_length")
    num_heads = meta.integer(f"{arch}.attention.head_count")
    num_kv_heads = meta.integer(f"{arch}.attention.head_count_kv", num_heads)
    if num_heads % num_kv_heads:
        raise ModelFileError(
            f"{source}: {num_heads} attention heads cannot be shared by {num_kv_heads} KV heads"
        )
    if f"{arch}.attention.key_length" in values:
        head_dim = meta.integer(f"{arch}.attention.key_length")
    elif hidden % num_heads == 0:
        head_dim = hidden // num_heads
    else:
        raise ModelFileError(f"{source}: embedding length {hidden} is not a multiple of {num_heads} heads")

    tokens = meta.array("tokenizer.ggml.tokens")
    embedding = tensor_shapes.get("token_embd.weight")
    if f"{arch}.vocab_size" in values:
        vocab_size = meta.integer(f"{arch}.vocab_size")
    elif tokens:
        vocab_size = len(tokens)
    elif embedding is not None:
        vocab_size = embedding[0]
    else:
        raise ModelFileError(f"{source}: the vocabulary size is not recorded")

    rope_dimensions = meta.integer(f"{arch}.rope.dimension_count", head_dim)
    if rope_dimensions > head_dim or rope_dimensions % 2:
        raise ModelFileError(
            f"{source}: RoPE dimension count {rope_dimensions} does not fit {head_dim}-wide heads"
        )
    sliding = _sliding_window(meta, arch)
    bos_token_id = meta.optional_integer("tokenizer.ggml.bos_token_id")
    eos_token_ids = _eos_token_ids(meta, tokens)
    for token_id in (bos_token_id, *eos_token_ids):
        if token_id is not None and token_id >= vocab_size:
            raise ModelFileError(
                f"{source}: special token id {token_id} is outside the {vocab_size}-token vocabulary"
            )
    return ModelSpec(
        architecture=arch,
        name=meta.text("general.name"),
        hidden_size=hidden,
        num_layers=meta.integer(f"{arch}.block_count"),
        intermediate_size=meta.integer(f"{arch}.feed_forward_length"),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        rope_theta=meta.number(f"{arch}.rope.freq_base", 10000.0),
        rope_scaling=_rope_scaling(meta, arch),
        context_length=_usable_context(meta.integer(f"{arch}.context_length"), arch, sliding),
        rms_norm_eps=meta.number(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        rope_dimensions=rope_dimensions,
        sliding_window=sliding.window,
        sliding_window_pattern=sliding.pattern,
        rope_local_theta=sliding.rope_local_theta,
        attn_logit_softcapping=_gemma2_soft_cap(meta, arch, "attn_logit_softcapping", 50.0),
        final_logit_softcapping=_gemma2_soft_cap(meta, arch, "final_logit_softcapping", 30.0),
        vocab_size=vocab_size,
        bos_token_id=bos_token_id,
        eos_token_ids=eos_token_ids,
        tie_word_embeddings="output.weight" not in tensor_shapes,
        quantization=_quantization_name(meta, tensor_shapes, tensor_types),
        parameter_count=sum(_product(shape) for shape in tensor_shapes.values()),
    )


class _SlidingWindow(msgspec.Struct, frozen=True):
    window: int | None = None
    pattern: int | None = None
    rope_local_theta: float | None = None


def _sliding_window(meta: _Metadata, arch: str) -> _SlidingWindow:
    """llama.cpp's reading: Gemma 2 slides on every other layer (window 4096 unless recorded);
    Gemma 3 slides on five layers of six, with RoPE base 10000 there, when a window is recorded."""
    key = f"{arch}.attention.sliding_window"
    if arch == "gemma2":
        return _SlidingWindow(window=meta.integer(key, 4096), pattern=2)
    if arch == "gemma3" and meta.values.get(key):
        return _SlidingWindow(window=meta.integer(key), pattern=6, rope_local_theta=10000.0)
    return _SlidingWindow()


def _gemma2_soft_cap(meta: _Metadata, arch: str, name: str, default: float) -> float | None:
    # llama.cpp soft-caps only Gemma 2 (Gemma 3 dropped attention capping, and its sliding-window
    # graph skips the final cap).
    return meta.number(f"{arch}.{name}", default) if arch == "gemma2" else None


def _usable_context(context: int, arch: str, sliding: _SlidingWindow) -> int:
    # Pensieve's Gemma 2 (mlx-lm's) attends globally on every layer, which equals Gemma 2's
    # sliding-window attention only while the whole context fits in the window.
    if arch == "gemma2" and sliding.window is not None:
        return min(context, sliding.window)
    return context


def _rope_scaling(meta: _Metadata, arch: str) -> dict[str, Any] | None:
    kind = meta.text(f"{arch}.rope.scaling.type")
    if kind is None or kind == "none":
        return None
    if kind not in _ROPE_SCALING_TYPES:
        raise UnsupportedModelError(
            f"{meta.source}: RoPE scaling {kind!r} is not supported "
            f"(supported: {', '.join(_ROPE_SCALING_TYPES)})"
        )
    scaling: dict[str, Any] = {"type": kind, "factor": meta.number(f"{arch}.rope.scaling.factor", 1.0)}
    original = f"{arch}.rope.scaling.original_context_length"
    if original in meta.values:
        scaling["original_max_position_embeddings"] = meta.integer(original)
    return scaling


def _eos_token_ids(meta: _Metadata, tokens: Sequence[Any]) -> frozenset[int]:
    ids = {
        value
        for key in (
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        )
        if (value := meta.optional_integer(key)) is not None
    }
    template = meta.text("tokenizer.chat_template") or fallback_template(tokens)
    types = meta.array("tokenizer.ggml.token_type")
    markers = {marker for marker in _END_OF_TURN_MARKERS if marker in template}
    if markers:
        for token_id, token in enumerate(tokens):
            if token in markers and token_id < len(types) and types[token_id] in SPECIAL_TOKEN_TYPES:
                ids.add(token_id)
    if not ids:
        raise ModelFileError(
            f"{meta.source}: no end-of-sequence token is recorded (tokenizer.ggml.eos_token_id)"
        )
    return frozenset(ids)


def _quantization_name(
    meta: _Metadata,
    tensor_shapes: Mapping[str, tuple[int, ...]],
    tensor_types: Mapping[str, GGMLQuantizationType],
) -> str:
    file_type = meta.values.get("general.file_type")
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            name = "GUESSED"
        if name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    # No usable file type: name the type holding the most matrix parameters.
    elements: Counter[str] = Counter()
    for tensor, shape in tensor_shapes.items():
        if len(shape) >= 2:
            elements[tensor_types[tensor].name] += _product(shape)
    return elements.most_common(1)[0][0] if elements else "F32"


def _product(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total

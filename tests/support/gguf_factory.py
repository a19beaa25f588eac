"""Tiny synthetic llama GGUF files for tests, and ways to damage them.

``write_llama_gguf`` writes a two-layer llama (hidden 256 so K-quant rows fit their 256-wide
super-blocks) with a byte-level BPE vocabulary of 300 tokens trained on a few sentences, ChatML
special tokens and template. Weights are random with a fixed seed, stored as GGUF stores them
(Q/K in llama.cpp's permuted order is just "whatever is in the file" for a random model).
``gguf.quants.quantize`` cannot write K-quants, so K-quant tensors are random valid blocks whose
fp16 scale fields are set to finite values of a sensible size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "CHATML_TEMPLATE",
    "K_QUANTS",
    "MIXED_TYPES",
    "SPECIAL_TOKENS",
    "TinyLlamaConfig",
    "kquant_blocks",
    "overwrite_bytes",
    "reference_bpe_tokenizer",
    "set_metadata_length",
    "set_tensor_offset",
    "set_tensor_type_id",
    "tiny_bpe_vocab",
    "tiny_spm_vocab",
    "truncate_file",
    "write_llama_gguf",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
K_QUANTS = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
_QUANTIZABLE = (Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)  # by gguf.quants.quantize

# Every supported tensor type at least once, on tensors whose row length fits it.
MIXED_TYPES: dict[str, Q] = {
    "token_embd.weight": Q.Q8_0,
    "output.weight": Q.Q6_K,
    "blk.0.attn_q.weight": Q.Q4_0,
    "blk.0.attn_k.weight": Q.Q4_1,
    "blk.0.attn_v.weight": Q.Q8_0,
    "blk.0.attn_output.weight": Q.F16,
    "blk.0.ffn_gate.weight": Q.Q4_K,
    "blk.0.ffn_up.weight": Q.Q5_K,
    "blk.0.ffn_down.weight": Q.Q6_K,
    "blk.1.attn_q.weight": Q.Q2_K,
    "blk.1.attn_k.weight": Q.Q3_K,
    "blk.1.attn_v.weight": Q.BF16,
    "blk.1.attn_output.weight": Q.Q5_0,
    "blk.1.ffn_gate.weight": Q.Q5_1,
    "blk.1.ffn_up.weight": Q.F32,
    "blk.1.ffn_down.weight": Q.Q4_K,
}

_CORPUS = (
    "the quick brown fox jumps over the lazy dog. " * 3,
    "What is the capital of France? Paris is the capital of France.",
    "hello world, héllo wörld, 日本語のテキスト, emoji 😀 and numbers 12345.",
    "def main():\n    return 42\n",
)

# Per-type size of the fp16 super-block scales, chosen so dequantized weights stay around ±0.1.
_KQUANT_SCALES: dict[Q, tuple[float, float]] = {
    Q.Q2_K: (0.1 / 45, 0.05 / 15),
    Q.Q3_K: (0.1 / 128, 0.0),
    Q.Q4_K: (0.1 / 945, 0.05 / 63),
    Q.Q5_K: (0.1 / 1953, 0.05 / 63),
    Q.Q6_K: (0.1 / 4096, 0.0),
}
# Byte offsets of the fp16 fields (d, dmin) inside each K-quant block.
_KQUANT_FIELDS: dict[Q, tuple[int, ...]] = {
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}


@dataclass(frozen=True)
class TinyLlamaConfig:
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    context_length: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    head_dim: int | None = None  # None: hidden_size // num_heads, and no key_length metadata


@cache
def _trained_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS), trainer=trainer)
    return tokenizer


def tiny_bpe_vocab() -> tuple[list[str], list[str]]:
    """Tokens (by id) and merges (``"a b"``) of the tiny byte-level BPE."""
    model = json.loads(_trained_bpe().to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def reference_bpe_tokenizer() -> Tokenizer:
    """The HF tokenizer the tiny vocabulary came from, with ChatML specials, for comparisons."""
    return Tokenizer.from_str(_trained_bpe().to_str())


# Merged SentencePiece pieces and their scores (higher merges first), then single characters.
_SPM_PIECES = (
    ("▁t", -1.0),
    ("he", -2.0),
    ("▁the", -3.0),
    ("ll", -4.0),
    ("▁he", -5.0),
    ("llo", -6.0),
    ("▁hello", -7.0),
    ("or", -8.0),
    ("▁w", -9.0),
    ("▁wor", -10.0),
    ("ld", -11.0),
    ("▁world", -12.0),
)
_SPM_CHARS = "▁abcdefghijklmnopqrstuvwxyz.,!?"


def tiny_spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """A small SentencePiece (llama) vocabulary: tokens, scores and token types.

    ``<unk>``, ``<s>``, ``</s>``, then the 256 byte tokens, the merged pieces and single characters;
    anything else (capitals, CJK) falls back to bytes.
    """
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    for piece, score in _SPM_PIECES:
        tokens.append(piece)
        scores.append(score)
        types.append(1)
    for index, char in enumerate(_SPM_CHARS):
        tokens.append(char)
        scores.append(-100.0 - index)
        types.append(1)
    return tokens, scores, types


def kquant_blocks(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random but valid K-quant data for a ``rows x cols`` tensor (uint8, GGUF byte layout)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset, base in zip(_KQUANT_FIELDS[qtype], _KQUANT_SCALES[qtype]):
        values = (base * rng.uniform(0.5, 1.5, size=n_blocks)).astype(np.float16)
        blocks[:, offset : offset + 2] = values.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(rows, cols // block_size * type_size)


def _tensor_data(name: str, shape: tuple[int, ...], qtype: Q, rng: np.random.Generator) -> np.ndarray:
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if qtype in K_QUANTS:
        return kquant_blocks(qtype, shape[0], shape[1], rng)
    values: np.ndarray = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    if qtype == Q.F32:
        return values
    if qtype in _QUANTIZABLE:
        quantized: np.ndarray = gguf.quants.quantize(values, qtype)
        return quantized
    # Types Pensieve refuses (IQ*, TQ*): any bytes of the right size will do.
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return rng.integers(0, 256, size=(*shape[:-1], shape[-1] // block_size * type_size), dtype=np.uint8)


def _tensor_shapes(config: TinyLlamaConfig, vocab_size: int, tied: bool) -> dict[str, tuple[int, ...]]:
    hidden, ffn = config.hidden_size, config.intermediate_size
    head_dim = config.head_dim or hidden // config.num_heads
    q, kv = config.num_heads * head_dim, config.num_kv_heads * head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab_size, hidden),
        "output_norm.weight": (hidden,),
    }
    if not tied:
        shapes["output.weight"] = (vocab_size, hidden)
    for i in range(config.num_layers):
        shapes.update(
            {
                f"blk.{i}.attn_norm.weight": (hidden,),
                f"blk.{i}.attn_q.weight": (q, hidden),
                f"blk.{i}.attn_k.weight": (kv, hidden),
                f"blk.{i}.attn_v.weight": (kv, hidden),
                f"blk.{i}.attn_output.weight": (hidden, q),
                f"blk.{i}.ffn_norm.weight": (hidden,),
                f"blk.{i}.ffn_gate.weight": (ffn, hidden),
                f"blk.{i}.ffn_up.weight": (ffn, hidden),
                f"blk.{i}.ffn_down.weight": (hidden, ffn),
            }
        )
    return shapes


def write_llama_gguf(
    path: str | Path,
    *,
    config: TinyLlamaConfig = TinyLlamaConfig(),
    tensor_types: Mapping[str, Q] | None = None,
    default_type: Q = Q.F32,
    tied: bool = False,
    architecture: str = "llama",
    chat_template: str | None = CHATML_TEMPLATE,
    tokenizer_pre: str | None = "default",
    tokenizer_model: str = "gpt2",
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, tuple[tuple[int, ...], Q]] | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny llama GGUF and return its path.

    ``tensor_types`` maps GGUF tensor names to their type (others get ``default_type``; norms are
    always F32). ``tokenizer_model`` "llama" swaps in the SentencePiece vocabulary of
    ``tiny_spm_vocab`` (BOS ``<s>``, EOS ``</s>``). ``metadata`` adds or overrides keys (str, bool,
    int → uint32, float → float32, lists); a value of None removes a key. ``extra_tensors`` adds
    tensors by name: (shape, type).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    types = dict(tensor_types or {})
    arch = architecture
    if tokenizer_model == "llama":
        tokens, scores, token_types = tiny_spm_vocab()
        vocabulary: dict[str, Any] = {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": token_types,
            "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0,
        }
    else:
        tokens, merges = tiny_bpe_vocab()
        vocabulary = {
            "tokenizer.ggml.model": tokenizer_model,
            "tokenizer.ggml.pre": tokenizer_pre,
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3 if t in SPECIAL_TOKENS else 1 for t in tokens],
            "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": tokens.index("<|im_start|>"),
            "tokenizer.ggml.eos_token_id": tokens.index("<|im_end|>"),
            "tokenizer.ggml.add_bos_token": False,
        }
    values: dict[str, Any] = {
        "general.name": "tiny-llama",
        f"{arch}.context_length": config.context_length,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.block_count": config.num_layers,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": config.num_heads,
        f"{arch}.attention.head_count_kv": config.num_kv_heads,
        f"{arch}.rope.freq_base": config.rope_theta,
        f"{arch}.attention.layer_norm_rms_epsilon": config.rms_norm_eps,
        f"{arch}.rope.dimension_count": config.head_dim or config.hidden_size // config.num_heads,
        f"{arch}.attention.key_length": config.head_dim,
        f"{arch}.attention.value_length": config.head_dim,
        **vocabulary,
        "tokenizer.chat_template": chat_template,
    }
    values.update(metadata or {})

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in values.items():
        if value is not None:
            _add_value(writer, key, value)
    shapes = _tensor_shapes(config, len(values.get("tokenizer.ggml.tokens") or tokens), tied)
    for name, shape in shapes.items():
        qtype = Q.F32 if len(shape) == 1 else types.get(name, default_type)
        _add_tensor(writer, name, _tensor_data(name, shape, qtype, rng), qtype)
    for name, (shape, qtype) in (extra_tensors or {}).items():
        _add_tensor(writer, name, _tensor_data(name, shape, qtype, rng), qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: Q) -> None:
    if qtype in (Q.F32, Q.F16):
        writer.add_tensor(name, data)
    else:
        writer.add_tensor(name, data, raw_dtype=qtype)


def _add_value(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def truncate_file(path: Path, size: int) -> None:
    """Cut ``path`` down to its first ``size`` bytes."""
    with path.open("r+b") as handle:
        handle.truncate(size)


def overwrite_bytes(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def set_tensor_offset(path: Path, tensor_name: str, offset: int) -> None:
    """Rewrite the data offset recorded for ``tensor_name`` in the header."""
    reader = gguf.GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == tensor_name)
    tensor.field.parts[5][0] = offset
    reader.data.flush()


def set_tensor_type_id(path: Path, tensor_name: str, type_id: int) -> None:
    """Rewrite the GGML type id recorded for ``tensor_name`` in the header."""
    reader = gguf.GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == tensor_name)
    tensor.field.parts[4][0] = type_id
    reader.data.flush()


def set_metadata_length(path: Path, key: str, length: int) -> None:
    """Rewrite the length of a string value or the item count of an array value of ``key``."""
    reader = gguf.GGUFReader(path, "r+")
    field = reader.fields[key]
    index = 4 if field.types[0] == gguf.GGUFValueType.ARRAY else 3
    field.parts[index][0] = length
    reader.data.flush()

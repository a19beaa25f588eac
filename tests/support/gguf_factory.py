"""Tiny synthetic GGUF files for tests, and ways to damage them.

``write_tiny_gguf`` writes a two-layer model of any supported architecture (llama by default;
hidden 256 so K-quant rows fit their 256-wide super-blocks) in the tensor layout and metadata keys
llama.cpp's converter writes for it, with a byte-level BPE vocabulary of 300 tokens trained on a
few sentences, ChatML special tokens and template (or a SentencePiece vocabulary, llama- or
Gemma-style). ``write_llama_gguf`` is the same writer under its older name.
Weights are random with a fixed seed, stored as GGUF stores them
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
    "GEMMA_TEMPLATE",
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
    "tiny_gemma_vocab",
    "tiny_spm_vocab",
    "truncate_file",
    "write_llama_gguf",
    "write_tiny_gguf",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
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
    return _sentencepiece_vocab(["<unk>", "<s>", "</s>"], [2, 3, 3], _SPM_PIECES)


def _sentencepiece_vocab(
    specials: list[str], special_types: list[int], pieces: tuple[tuple[str, float], ...]
) -> tuple[list[str], list[float], list[int]]:
    """Special tokens, the 256 byte tokens, merged ``pieces`` and single characters (least likely)."""
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)]
    types = special_types + [6] * 256
    scores = [0.0] * len(tokens)
    for piece, score in pieces:
        tokens.append(piece)
        scores.append(score)
        types.append(1)
    for index, char in enumerate(_SPM_CHARS):
        tokens.append(char)
        scores.append(-100.0 - index)
        types.append(1)
    return tokens, scores, types


_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
_GEMMA_PIECES = (
    ("he", -1.0),
    ("ll", -2.0),
    ("llo", -3.0),
    ("hello", -4.0),
    ("▁w", -5.0),
    ("or", -6.0),
    ("▁wor", -7.0),
    ("ld", -8.0),
    ("▁world", -9.0),
    ("us", -10.0),
    ("er", -11.0),
    ("user", -12.0),
    ("mo", -13.0),
    ("de", -14.0),
    ("del", -15.0),
    ("model", -16.0),
)


def tiny_gemma_vocab() -> tuple[list[str], list[float], list[int]]:
    """A small Gemma-style SentencePiece vocabulary: tokens, scores and token types.

    ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, then the turn markers ``<start_of_turn>``
    and ``<end_of_turn>`` (control tokens), the 256 byte tokens, merged pieces and characters.
    Gemma files set ``add_space_prefix`` to false, so only spaces inside the text become ``▁``.
    """
    return _sentencepiece_vocab(list(_GEMMA_SPECIALS), [3, 3, 3, 2, 3, 3], _GEMMA_PIECES)


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


# GGUF block tensors of each architecture, as llama.cpp's converter names them.
_LLAMA_BLOCK = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)
_GEMMA2_BLOCK = (*_LLAMA_BLOCK, "post_attention_norm", "post_ffw_norm")
_BLOCKS: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA_BLOCK,
    "mistral": _LLAMA_BLOCK,
    "qwen2": _LLAMA_BLOCK,
    "qwen3": (*_LLAMA_BLOCK, "attn_q_norm", "attn_k_norm"),
    "gemma2": _GEMMA2_BLOCK,
    "gemma3": (*_GEMMA2_BLOCK, "attn_q_norm", "attn_k_norm"),
    "phi3": ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"),
}


def _tensor_shapes(
    config: TinyLlamaConfig, architecture: str, vocab_size: int, tied: bool
) -> dict[str, tuple[int, ...]]:
    hidden, ffn = config.hidden_size, config.intermediate_size
    head_dim = config.head_dim or hidden // config.num_heads
    q, kv = config.num_heads * head_dim, config.num_kv_heads * head_dim
    block = _BLOCKS.get(architecture, _LLAMA_BLOCK)  # unknown architectures: llama's tensors
    kinds: dict[str, tuple[int, ...]] = {
        "attn_q": (q, hidden),
        "attn_k": (kv, hidden),
        "attn_v": (kv, hidden),
        "attn_qkv": (q + 2 * kv, hidden),
        "attn_q_norm": (head_dim,),
        "attn_k_norm": (head_dim,),
        "attn_output": (hidden, q),
        "ffn_gate": (ffn, hidden),
        "ffn_up": (ffn if "ffn_gate" in block else 2 * ffn, hidden),
        "ffn_down": (hidden, ffn),
    }
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab_size, hidden),
        "output_norm.weight": (hidden,),
    }
    if not tied:
        shapes["output.weight"] = (vocab_size, hidden)
    for i in range(config.num_layers):
        for kind in block:
            shapes[f"blk.{i}.{kind}.weight"] = kinds.get(kind, (hidden,))
            if architecture == "qwen2" and kind in ("attn_q", "attn_k", "attn_v"):
                shapes[f"blk.{i}.{kind}.bias"] = kinds[kind][:1]
    return shapes


def _vocabulary(tokenizer_model: str, tokenizer_pre: str | None) -> dict[str, Any]:
    if tokenizer_model in ("llama", "gemma"):
        tokens, scores, token_types = tiny_spm_vocab() if tokenizer_model == "llama" else tiny_gemma_vocab()
        vocabulary: dict[str, Any] = {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": token_types,
        }
        if tokenizer_model == "llama":
            ids = {"bos_token_id": 1, "eos_token_id": 2, "unknown_token_id": 0}
            return vocabulary | {f"tokenizer.ggml.{key}": value for key, value in ids.items()}
        ids = {"bos_token_id": 2, "eos_token_id": 1, "unknown_token_id": 3, "padding_token_id": 0}
        return (
            vocabulary
            | {f"tokenizer.ggml.{key}": value for key, value in ids.items()}
            | {"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_space_prefix": False}
        )
    tokens, merges = tiny_bpe_vocab()
    return {
        "tokenizer.ggml.model": tokenizer_model,
        "tokenizer.ggml.pre": tokenizer_pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if t in SPECIAL_TOKENS else 1 for t in tokens],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": tokens.index("<|im_start|>"),
        "tokenizer.ggml.eos_token_id": tokens.index("<|im_end|>"),
        "tokenizer.ggml.add_bos_token": False,
    }


def write_tiny_gguf(
    path: str | Path,
    *,
    architecture: str = "llama",
    config: TinyLlamaConfig = TinyLlamaConfig(),
    tensor_types: Mapping[str, Q] | None = None,
    default_type: Q = Q.F32,
    tied: bool = False,
    chat_template: str | None = CHATML_TEMPLATE,
    tokenizer_pre: str | None = "default",
    tokenizer_model: str = "gpt2",
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, tuple[tuple[int, ...], Q]] | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny GGUF model of ``architecture`` and return its path.

    ``tensor_types`` maps GGUF tensor names to their type (others get ``default_type``; norms and
    biases are always F32). Gemma 2 files are always tied, as llama.cpp writes them; their norms
    hold 1 + w, which the random values around 1 stand for. ``tokenizer_model`` "llama" swaps in
    the SentencePiece vocabulary of ``tiny_spm_vocab`` (BOS ``<s>``, EOS ``</s>``), "gemma" that of
    ``tiny_gemma_vocab`` (BOS ``<bos>``, EOS ``<eos>``; pair it with ``GEMMA_TEMPLATE``).
    ``metadata`` adds or overrides keys (str, bool, int → uint32, float → float32, lists); a
    value of None removes a key. ``extra_tensors`` adds tensors by name: (shape, type).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    types = dict(tensor_types or {})
    arch = architecture
    vocabulary = _vocabulary(tokenizer_model, tokenizer_pre)
    head_dim = config.head_dim or config.hidden_size // config.num_heads
    values: dict[str, Any] = {
        "general.name": f"tiny-{arch}",
        f"{arch}.context_length": config.context_length,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.block_count": config.num_layers,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": config.num_heads,
        f"{arch}.attention.head_count_kv": config.num_kv_heads,
        f"{arch}.rope.freq_base": config.rope_theta,
        f"{arch}.attention.layer_norm_rms_epsilon": config.rms_norm_eps,
        f"{arch}.rope.dimension_count": head_dim,
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
    vocab_size = len(values.get("tokenizer.ggml.tokens") or vocabulary["tokenizer.ggml.tokens"])
    shapes = _tensor_shapes(config, arch, vocab_size, tied or arch == "gemma2")
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


write_llama_gguf = write_tiny_gguf


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

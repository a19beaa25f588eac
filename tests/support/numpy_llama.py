"""A plain-numpy forward pass of a llama GGUF file: the reference other implementations are held to.

Independent of Pensieve's own code: the file is read with ``gguf.GGUFReader``, every tensor is
dequantized with ``gguf.quants.dequantize``, and the arithmetic runs in float64. RoPE follows
GGUF's convention: llama.cpp stores Q/K permuted so that rotating adjacent pairs (x[2i], x[2i+1])
— mlx-lm's ``rope_traditional=True`` — is the right rotation on the stored weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gguf
import numpy as np

__all__ = ["reference_logits"]


def _load(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(path)
    metadata = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    weights = {}
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        weights[tensor.name] = np.asarray(values, dtype=np.float64).reshape(shape)
    return metadata, weights


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    normed: np.ndarray = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight
    return normed


def _rope(x: np.ndarray, positions: np.ndarray, dims: int, base: float) -> np.ndarray:
    """Rotate adjacent pairs of the first ``dims`` features of ``x`` (tokens, heads, head_dim)."""
    rotated = x.copy()
    inv_freq = base ** (-np.arange(0, dims, 2, dtype=np.float64) / dims)
    angles = positions[:, None] * inv_freq[None, :]  # (tokens, dims/2)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    even, odd = x[..., 0:dims:2], x[..., 1:dims:2]
    rotated[..., 0:dims:2] = even * cos - odd * sin
    rotated[..., 1:dims:2] = even * sin + odd * cos
    return rotated


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def reference_logits(gguf_path: str | os.PathLike[str], token_ids: Sequence[int]) -> np.ndarray:
    """Logits (float64, shape ``(len(token_ids), vocab)``) of a llama-family GGUF model for ``token_ids``."""
    meta, w = _load(gguf_path)
    arch = meta["general.architecture"]
    n_layers = meta[f"{arch}.block_count"]
    n_heads = meta[f"{arch}.attention.head_count"]
    n_kv = meta.get(f"{arch}.attention.head_count_kv", n_heads)
    hidden = meta[f"{arch}.embedding_length"]
    head_dim = meta.get(f"{arch}.attention.key_length", hidden // n_heads)
    rope_dims = meta.get(f"{arch}.rope.dimension_count", head_dim)
    base = meta.get(f"{arch}.rope.freq_base", 10000.0)
    eps = meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise NotImplementedError(f"reference RoPE scaling {scaling!r}")
    factor = meta.get(f"{arch}.rope.scaling.factor", 1.0) if scaling == "linear" else 1.0

    tokens = np.asarray(token_ids, dtype=np.int64)
    n = len(tokens)
    positions = np.arange(n, dtype=np.float64) / factor
    causal = np.triu(np.full((n, n), -np.inf), k=1)
    x = w["token_embd.weight"][tokens]
    for i in range(n_layers):
        p = f"blk.{i}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(n, n_heads, head_dim)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n, n_kv, head_dim)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, n_kv, head_dim)
        q, k = _rope(q, positions, rope_dims, base), _rope(k, positions, rope_dims, base)
        group = n_heads // n_kv
        heads = []
        for head in range(n_heads):
            kv = head // group
            scores = q[:, head] @ k[:, kv].T / np.sqrt(head_dim) + causal
            heads.append(_softmax(scores) @ v[:, kv])
        x = x + np.concatenate(heads, axis=-1) @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + (gate * 0.5 * (1.0 + np.tanh(gate / 2)) * up) @ w[p + "ffn_down.weight"].T
    x = _rms_norm(x, w["output_norm.weight"], eps)
    output = w.get("output.weight", w["token_embd.weight"])
    logits: np.ndarray = x @ output.T
    return logits

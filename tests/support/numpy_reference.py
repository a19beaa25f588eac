"""A plain-numpy forward pass of a GGUF file, following llama.cpp: the reference the engine is held to.

Independent of Pensieve's own code: the file is read with ``gguf.GGUFReader``, every tensor is
dequantized with ``gguf.quants.dequantize`` and used exactly as stored (Gemma's norms hold 1 + w,
as llama.cpp applies them), and the arithmetic runs in float64. Architectures:

- llama, mistral: RoPE rotates adjacent pairs (x[2i], x[2i+1]): llama.cpp stores Q/K permuted
  for it ("NORM" RoPE).
- qwen2 (Q/K/V biases), qwen3 (per-head Q/K RMS norms), phi3 (fused QKV and gate|up matrices,
  partial RoPE): RoPE rotates the two halves (x[i], x[i + d/2]) ("NEOX" RoPE).
- gemma2, gemma3: NEOX RoPE, embeddings scaled by sqrt(hidden), norms after attention and FFN as
  well as before, GELU (tanh) gate, sliding-window attention on some layers; gemma2 soft-caps
  attention scores and logits, gemma3 has Q/K norms and RoPE base 10000 on its sliding layers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

__all__ = ["reference_greedy", "reference_logits"]

_NEOX = ("qwen2", "qwen3", "phi3", "gemma2", "gemma3")
_GEMMA = ("gemma2", "gemma3")


def _load(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(path)
    metadata = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    weights = {}
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        weights[tensor.name] = np.asarray(values, dtype=np.float64).reshape(shape)
    return metadata, weights


@dataclass(frozen=True)
class _Hparams:
    arch: str
    n_layers: int
    n_heads: int
    n_kv: int
    hidden: int
    head_dim: int
    rope_dims: int
    base: float
    eps: float
    linear_factor: float
    window: int | None  # sliding window of the sliding layers
    pattern: int  # every pattern-th layer (the last of each group) is global
    attn_softcap: float | None
    final_softcap: float | None

    @classmethod
    def read(cls, meta: dict[str, Any]) -> _Hparams:
        arch = meta["general.architecture"]
        n_heads = meta[f"{arch}.attention.head_count"]
        hidden = meta[f"{arch}.embedding_length"]
        head_dim = meta.get(f"{arch}.attention.key_length", hidden // n_heads)
        scaling = meta.get(f"{arch}.rope.scaling.type", "none")
        if scaling not in ("none", "linear"):
            raise NotImplementedError(f"reference RoPE scaling {scaling!r}")
        window = meta.get(f"{arch}.attention.sliding_window")
        if arch == "gemma2":
            window = window or 4096
        return cls(
            arch=arch,
            n_layers=meta[f"{arch}.block_count"],
            n_heads=n_heads,
            n_kv=meta.get(f"{arch}.attention.head_count_kv", n_heads),
            hidden=hidden,
            head_dim=head_dim,
            rope_dims=meta.get(f"{arch}.rope.dimension_count", head_dim),
            base=meta.get(f"{arch}.rope.freq_base", 10000.0),
            eps=meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
            linear_factor=meta.get(f"{arch}.rope.scaling.factor", 1.0) if scaling == "linear" else 1.0,
            window=window if arch in _GEMMA else None,
            pattern={"gemma2": 2, "gemma3": 6}.get(arch, 1),
            attn_softcap=meta.get(f"{arch}.attn_logit_softcapping", 50.0) if arch == "gemma2" else None,
            final_softcap=meta.get(f"{arch}.final_logit_softcapping", 30.0) if arch == "gemma2" else None,
        )

    def is_sliding(self, layer: int) -> bool:
        return self.window is not None and layer % self.pattern < self.pattern - 1


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    normed: np.ndarray = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight
    return normed


def _rope(x: np.ndarray, positions: np.ndarray, dims: int, base: float, neox: bool) -> np.ndarray:
    """Rotate the first ``dims`` features of ``x`` (tokens, heads, head_dim) by position."""
    rotated = x.copy()
    inv_freq = base ** (-np.arange(0, dims, 2, dtype=np.float64) / dims)
    angles = positions[:, None] * inv_freq[None, :]  # (tokens, dims/2)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    if neox:
        first, second = slice(0, dims // 2), slice(dims // 2, dims)
    else:
        first, second = slice(0, dims, 2), slice(1, dims, 2)
    a, b = x[..., first], x[..., second]
    rotated[..., first] = a * cos - b * sin
    rotated[..., second] = a * sin + b * cos
    return rotated


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def _silu(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = x / (1.0 + np.exp(-x))
    return result


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return result


def _qkv(h: np.ndarray, w: dict[str, np.ndarray], p: str, hp: _Hparams) -> tuple[np.ndarray, ...]:
    n = len(h)
    q_rows, kv_rows = hp.n_heads * hp.head_dim, hp.n_kv * hp.head_dim
    if p + "attn_qkv.weight" in w:
        fused = h @ w[p + "attn_qkv.weight"].T
        q, k, v = fused[:, :q_rows], fused[:, q_rows : q_rows + kv_rows], fused[:, q_rows + kv_rows :]
    else:
        q, k, v = (h @ w[p + f"attn_{name}.weight"].T for name in "qkv")
        if p + "attn_q.bias" in w:
            q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
    q = q.reshape(n, hp.n_heads, hp.head_dim)
    k = k.reshape(n, hp.n_kv, hp.head_dim)
    v = v.reshape(n, hp.n_kv, hp.head_dim)
    if p + "attn_q_norm.weight" in w:
        q = _rms_norm(q, w[p + "attn_q_norm.weight"], hp.eps)
        k = _rms_norm(k, w[p + "attn_k_norm.weight"], hp.eps)
    return q, k, v


def _attention(h: np.ndarray, w: dict[str, np.ndarray], layer: int, hp: _Hparams) -> np.ndarray:
    p = f"blk.{layer}."
    n = len(h)
    q, k, v = _qkv(h, w, p, hp)
    sliding = hp.is_sliding(layer)
    base, factor = hp.base, hp.linear_factor
    if sliding and hp.arch == "gemma3":
        base, factor = 10000.0, 1.0
    positions = np.arange(n, dtype=np.float64) / factor
    neox = hp.arch in _NEOX
    q = _rope(q, positions, hp.rope_dims, base, neox)
    k = _rope(k, positions, hp.rope_dims, base, neox)
    scale = 1.0 / np.sqrt(hp.head_dim)
    distance = np.arange(n)[:, None] - np.arange(n)[None, :]
    masked = distance < 0
    if sliding:
        masked |= distance >= hp.window
    group = hp.n_heads // hp.n_kv
    heads = []
    for head in range(hp.n_heads):
        kv = head // group
        scores = q[:, head] @ k[:, kv].T * scale
        if hp.attn_softcap is not None:
            scores = hp.attn_softcap * np.tanh(scores / hp.attn_softcap)
        heads.append(_softmax(np.where(masked, -np.inf, scores)) @ v[:, kv])
    out: np.ndarray = np.concatenate(heads, axis=-1) @ w[p + "attn_output.weight"].T
    return out


def _feed_forward(h: np.ndarray, w: dict[str, np.ndarray], p: str, hp: _Hparams) -> np.ndarray:
    up = h @ w[p + "ffn_up.weight"].T
    if p + "ffn_gate.weight" in w:
        gate = h @ w[p + "ffn_gate.weight"].T
    else:  # phi3: gate rows, then up rows
        gate, up = np.split(up, 2, axis=-1)
    activated = _gelu_tanh(gate) if hp.arch in _GEMMA else _silu(gate)
    out: np.ndarray = (activated * up) @ w[p + "ffn_down.weight"].T
    return out


def reference_logits(gguf_path: str | os.PathLike[str], token_ids: Sequence[int]) -> np.ndarray:
    """Logits (float64, shape ``(len(token_ids), vocab)``) of a GGUF model for ``token_ids``."""
    meta, w = _load(gguf_path)
    return _forward(_Hparams.read(meta), w, token_ids)


def reference_greedy(gguf_path: str | os.PathLike[str], prompt: Sequence[int], count: int) -> list[int]:
    """The ``count`` tokens greedy decoding appends to ``prompt``, each by a full forward pass."""
    meta, w = _load(gguf_path)
    hp = _Hparams.read(meta)
    tokens = list(prompt)
    for _ in range(count):
        tokens.append(int(_forward(hp, w, tokens)[-1].argmax()))
    return tokens[len(prompt) :]


def _forward(hp: _Hparams, w: dict[str, np.ndarray], token_ids: Sequence[int]) -> np.ndarray:
    gemma = hp.arch in _GEMMA
    x = w["token_embd.weight"][np.asarray(token_ids, dtype=np.int64)]
    if gemma:
        x = x * np.sqrt(hp.hidden)
    for i in range(hp.n_layers):
        p = f"blk.{i}."
        attended = _attention(_rms_norm(x, w[p + "attn_norm.weight"], hp.eps), w, i, hp)
        if gemma:
            attended = _rms_norm(attended, w[p + "post_attention_norm.weight"], hp.eps)
        x = x + attended
        fed = _feed_forward(_rms_norm(x, w[p + "ffn_norm.weight"], hp.eps), w, p, hp)
        if gemma:
            fed = _rms_norm(fed, w[p + "post_ffw_norm.weight"], hp.eps)
        x = x + fed
    x = _rms_norm(x, w["output_norm.weight"], hp.eps)
    logits: np.ndarray = x @ w.get("output.weight", w["token_embd.weight"]).T
    if hp.final_softcap is not None:
        logits = hp.final_softcap * np.tanh(logits / hp.final_softcap)
    return logits

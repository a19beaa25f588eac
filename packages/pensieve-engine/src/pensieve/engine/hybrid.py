"""Pensieve's CPU kernels in an mlx-lm model: the hybrid weight layout, RoPE, attention and SwiGLU.

Hybrid layout: each quantized layer keeps its quantized weights, prepared for the kernel (MLX's
layout plus a packed copy for several rows), and a dense float32 copy. A decode step multiplies a
few rows per layer, where reading 4-bit weights through Pensieve's kernel beats float32 BLAS by
~1.6x at one row (the weights are ~5x fewer bytes) and more at eight; so do the short prompt
chunks of a batch of newcomers or of a prompt resumed from the prefix cache (the default model
reads 32-128 tokens in 0.64-0.8x BLAS's time); a long prompt chunk multiplies hundreds of rows,
where BLAS's blocked float32 matmul is faster. So each layer routes by row count
(docs/performance.md). All copies hold the same weights: the dense one is dequantized from the
very affine parameters the kernel reads.

RoPE, decode attention and SwiGLU: attention modules hold an ``nn.RoPE`` (replaced by
``KernelRoPE``: MLX's CPU path spends ~90 us per call on separate ops, ~5 ms of a decode step), and
mlx-lm's attention and MLP modules call ``scaled_dot_product_attention`` and ``swiglu``, functions
bound in their architecture's module. On the CPU MLX computes attention as separate matmul, mask
and softmax ops, whose per-op cost dominates a one-query step (0.4-0.5 ms per layer at batch 8,
~0.14 fused), and SwiGLU's sigmoid one exp at a time (8.3 ms of a batch-8 step, ~0.3 in the
kernel).
"""

from __future__ import annotations

import sys
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path
from mlx_lm.models import activations, base

from pensieve.device import CpuKernels

__all__ = ["KERNEL_MAX_ROWS", "KernelRoPE", "use_cpu_kernels"]

KERNEL_MAX_ROWS = 128
"""Matmuls of up to this many rows (a decode batch, a short prompt chunk) go to the kernel, larger
ones to BLAS: on the default model the crossover is between 128 and 192 rows."""


class _HybridWeights(nn.Module):
    """A quantized weight matrix with its dense float32 copy, multiplied by whichever is faster."""

    def __init__(self, layer: nn.QuantizedLinear | nn.QuantizedEmbedding, kernels: CpuKernels) -> None:
        super().__init__()
        self.group_size, self.bits = layer.group_size, layer.bits
        self.weight, self.scales, self.biases = layer["weight"], layer["scales"], layer["biases"]
        self.dense = mx.dequantize(
            self.weight, self.scales, self.biases, group_size=self.group_size, bits=self.bits
        ).astype(mx.float32)
        mx.eval(self.dense)  # one layer at a time: peak memory stays near the final size
        supported = kernels.supports(group_size=self.group_size, bits=self.bits)
        self._prepared = (
            kernels.prepare(self.weight, self.scales, self.biases, group_size=self.group_size, bits=self.bits)
            if supported
            else None
        )
        self.freeze()

    def _matmul(self, x: mx.array) -> mx.array:
        if self._prepared is not None and x.size // x.shape[-1] <= KERNEL_MAX_ROWS:
            return self._prepared.matmul(x)
        return x @ self.dense.T


class HybridLinear(_HybridWeights):
    def __init__(self, layer: nn.QuantizedLinear, kernels: CpuKernels) -> None:
        super().__init__(layer, kernels)
        if "bias" in layer:
            self.bias = layer["bias"]

    def __call__(self, x: mx.array) -> mx.array:
        y = self._matmul(x)
        return y + self["bias"] if "bias" in self else y


class HybridEmbedding(_HybridWeights):
    def __call__(self, tokens: mx.array) -> mx.array:
        return self.dense[tokens]

    def as_linear(self, x: mx.array) -> mx.array:
        """The tied output projection."""
        return self._matmul(x)


class KernelRoPE(nn.Module):
    """``nn.RoPE`` through the kernel: MLX's CPU path costs ~90 us per call of a decode step."""

    def __init__(self, rope: nn.RoPE, kernels: CpuKernels) -> None:
        super().__init__()
        self.dims, self.traditional, self.base, self.scale = rope.dims, rope.traditional, rope.base, rope.scale
        self._kernels = kernels

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        return self._kernels.rope(
            x, self.dims, traditional=self.traditional, base=self.base, scale=self.scale, offset=offset
        )


class _DecodeAttention:
    """mlx-lm's ``scaled_dot_product_attention`` with one-query float32 steps in the kernel."""

    def __init__(self, kernels: CpuKernels) -> None:
        self.kernels = kernels

    def __call__(
        self,
        queries: mx.array,
        keys: Any,
        values: Any,
        cache: Any,
        scale: float,
        mask: mx.array | str | None,
        sinks: mx.array | None = None,
    ) -> mx.array:
        one_query = queries.ndim == 4 and queries.shape[2] == 1 and queries.dtype == mx.float32
        if one_query and sinks is None and not hasattr(cache, "bits"):
            # A causal mask over a single (the newest) query position hides nothing.
            array_mask = mask if isinstance(mask, mx.array) else None
            return self.kernels.decode_attention(queries, keys, values, scale=scale, mask=array_mask)
        return base.scaled_dot_product_attention(
            queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks
        )


class _Swiglu:
    """mlx-lm's ``swiglu`` in the kernel (which hands what it does not take back to MLX)."""

    def __init__(self, kernels: CpuKernels) -> None:
        self.kernels = kernels

    def __call__(self, gate: mx.array, x: mx.array) -> mx.array:
        return self.kernels.swiglu(gate, x)


def _route_to_kernels(model: nn.Module, kernels: CpuKernels) -> None:
    """Point ``model``'s architecture module at the kernels for decode attention and SwiGLU.

    The bindings are the module's, so they hold for every model of that architecture in the
    process; what the kernels do not take (another dtype, a GPU stream, several query positions)
    still goes to MLX.
    """
    module = sys.modules[type(model).__module__]
    if getattr(module, "scaled_dot_product_attention", None) is base.scaled_dot_product_attention:
        module.scaled_dot_product_attention = _DecodeAttention(kernels)
    if getattr(module, "swiglu", None) is activations.swiglu:
        module.swiglu = _Swiglu(kernels)


def use_cpu_kernels(model: nn.Module, kernels: CpuKernels) -> nn.Module:
    """Turn ``model``'s affine-quantized layers into hybrid ones and its RoPE, decode attention
    and SwiGLU over to the kernels, in place; returns ``model``."""
    _route_to_kernels(model, kernels)

    def hybrid(_path: str, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.QuantizedLinear) and module.mode == "affine":
            return HybridLinear(module, kernels)
        if isinstance(module, nn.QuantizedEmbedding) and module.mode == "affine":
            return HybridEmbedding(module, kernels)
        if type(module) is nn.RoPE:  # scaled variants (Llama 3, YaRN, ...) keep mlx-lm's own
            return KernelRoPE(module, kernels)
        return module

    model.update_modules(tree_map_with_path(hybrid, model.leaf_modules(), is_leaf=nn.Module.is_module))
    return model

"""The hybrid weight layout: each quantized layer keeps its quantized weights and a dense copy.

A decode step multiplies a few rows per layer, where reading 4-bit weights through Pensieve's
AVX2 kernel beats float32 BLAS by ~1.6x (the weights are ~5x fewer bytes); a prompt chunk
multiplies hundreds of rows, where BLAS's blocked float32 matmul is 3-4x faster than the kernel.
So each layer routes by row count (docs/performance.md). Both copies hold the same weights: the
dense one is dequantized from the very affine parameters the kernel reads.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

from pensieve.device import CpuKernels

__all__ = ["KERNEL_MAX_ROWS", "use_cpu_kernels"]

KERNEL_MAX_ROWS = 16
"""Matmuls of up to this many rows (a decode batch) go to the kernel, larger ones to BLAS."""


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
        self._kernels = kernels
        supported = kernels.supports(group_size=self.group_size, bits=self.bits)
        self._kernel_rows = KERNEL_MAX_ROWS if supported else 0
        self.freeze()

    def _matmul(self, x: mx.array) -> mx.array:
        rows = x.size // x.shape[-1]
        if rows <= self._kernel_rows:
            return self._kernels.quantized_matmul(
                x, self.weight, self.scales, self.biases, group_size=self.group_size, bits=self.bits
            )
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


def use_cpu_kernels(model: nn.Module, kernels: CpuKernels) -> nn.Module:
    """Turn ``model``'s affine-quantized layers into hybrid ones, in place; returns ``model``."""

    def hybrid(_path: str, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.QuantizedLinear) and module.mode == "affine":
            return HybridLinear(module, kernels)
        if isinstance(module, nn.QuantizedEmbedding) and module.mode == "affine":
            return HybridEmbedding(module, kernels)
        return module

    model.update_modules(tree_map_with_path(hybrid, model.leaf_modules(), is_leaf=nn.Module.is_module))
    return model

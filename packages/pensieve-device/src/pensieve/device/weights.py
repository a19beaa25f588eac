"""Choosing how a quantized model's weights are held for compute, per backend.

Measured on the default model (docs/performance.md): on a GPU, MLX's quantized kernels read the
fewest bytes per token and are the fast path. On the CPU those kernels are scalar and
single-threaded, while float32 matmuls go to BLAS: with an optimized multi-threaded BLAS,
dequantized float32 weights decode ~2-3x and prefill ~20x faster, at ~5x the weight memory.
With mlx's reference BLAS float32 gains nothing, so the weights stay quantized.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pensieve.device.configure import DeviceInfo
from pensieve.device.memory import format_bytes

__all__ = ["DTYPE_BYTES", "WeightLayout", "compute_dtype", "plan_weights"]

LayoutKind = Literal["quantized", "dense"]
ComputeDtype = Literal["float32", "float16"]

DTYPE_BYTES: dict[ComputeDtype, int] = {"float32": 4, "float16": 2}


class WeightLayout(msgspec.Struct, frozen=True, kw_only=True):
    """How the weights are held: ``quantized`` (MLX's affine layout) or ``dense`` (dequantized).

    ``dtype`` is the compute dtype: every floating tensor, including quantization scales and
    biases, is held in it, so no matmul casts its operands on every call.
    """

    kind: LayoutKind
    dtype: ComputeDtype
    required_bytes: int
    """Memory the model needs in this layout (weights + KV cache + activations)."""
    reason: str


def compute_dtype(info: DeviceInfo, kind: LayoutKind) -> ComputeDtype:
    """The dtype a layout computes in on ``info``'s device, and so the dtype of its KV cache:
    float16 for quantized weights on a GPU (the dtype of GGUF scales), float32 otherwise."""
    return "float16" if kind == "quantized" and info.backend != "cpu" else "float32"


def plan_weights(
    info: DeviceInfo,
    *,
    quantized_bytes: int,
    dense_bytes: int,
    preference: Literal["auto", "quantized", "dense"] = "auto",
) -> WeightLayout:
    """The layout to load a model in on ``info``'s device.

    ``quantized_bytes`` and ``dense_bytes`` are the model's whole memory need in each layout
    (see ``estimate_model_bytes``, with KV elements of the layout's ``compute_dtype``).
    ``auto``: GPUs keep the weights quantized (float16 compute, the dtype of GGUF scales); the
    CPU dequantizes to float32 when an optimized BLAS is loaded and the float32 model fits the
    memory budget, else keeps them quantized (float32 compute).
    """
    gpu = info.backend != "cpu"
    quantized = WeightLayout(
        kind="quantized", dtype=compute_dtype(info, "quantized"), required_bytes=quantized_bytes, reason=""
    )
    dense = WeightLayout(
        kind="dense", dtype=compute_dtype(info, "dense"), required_bytes=dense_bytes, reason=""
    )
    if preference == "quantized":
        return msgspec.structs.replace(quantized, reason="quantized weights were requested")
    if preference == "dense":
        return msgspec.structs.replace(dense, reason="dense float32 weights were requested")
    if gpu:
        return msgspec.structs.replace(
            quantized, reason=f"MLX's quantized {info.backend} kernels read the fewest bytes per token"
        )
    if not info.blas_optimized:
        return msgspec.structs.replace(
            quantized,
            reason=f"no optimized BLAS is loaded ({info.blas}): float32 matmuls would not be faster",
        )
    if dense_bytes > info.memory_budget_bytes:
        return msgspec.structs.replace(
            quantized,
            reason=f"float32 weights would need {format_bytes(dense_bytes)}, over the memory budget "
            f"of {format_bytes(info.memory_budget_bytes)}",
        )
    return msgspec.structs.replace(
        dense, reason=f"float32 matmuls on {info.blas} beat MLX's quantized CPU kernels"
    )

"""Choosing how a quantized model's weights are held for compute, per backend.

Measured on the default model (docs/performance.md): on a GPU, MLX's quantized kernels read the
fewest bytes per token and are the fast path. On the CPU those kernels are scalar and
single-threaded, while float32 matmuls go to BLAS: with an optimized multi-threaded BLAS,
dequantized float32 weights decode ~2-3x and prefill ~20x faster, at ~5x the weight memory.
Pensieve's own AVX2 kernels (``pensieve.device.kernels``) read the quantized weights at another
~1.6x for decode, while BLAS stays ahead for prompts: the ``hybrid`` layout holds both.
With mlx's reference BLAS float32 gains nothing, so the weights stay quantized.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pensieve.device.configure import DeviceInfo
from pensieve.device.memory import format_bytes

__all__ = ["DTYPE_BYTES", "WeightLayout", "compute_dtype", "plan_weights"]

LayoutKind = Literal["quantized", "dense", "hybrid"]
ComputeDtype = Literal["float32", "float16"]

DTYPE_BYTES: dict[ComputeDtype, int] = {"float32": 4, "float16": 2}


class WeightLayout(msgspec.Struct, frozen=True, kw_only=True):
    """How the weights are held: ``quantized`` (MLX's affine layout), ``dense`` (dequantized), or
    ``hybrid`` (both: decode steps through Pensieve's CPU kernels, prompts through BLAS).

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
    hybrid_bytes: int | None = None,
    preference: Literal["auto", "quantized", "dense", "hybrid"] = "auto",
) -> WeightLayout:
    """The layout to load a model in on ``info``'s device.

    ``quantized_bytes``, ``dense_bytes`` and ``hybrid_bytes`` are the model's whole memory need
    in each layout (see ``estimate_model_bytes``, with KV elements of the layout's
    ``compute_dtype``); ``hybrid_bytes`` is None when Pensieve's CPU kernels are not available.
    ``auto``: GPUs keep the weights quantized (float16 compute, the dtype of GGUF scales). The
    CPU with an optimized BLAS holds the hybrid layout when the kernels are available and it fits
    the memory budget, else dense float32 when that fits; otherwise the weights stay quantized
    (float32 compute).
    """
    gpu = info.backend != "cpu"
    quantized = WeightLayout(
        kind="quantized", dtype=compute_dtype(info, "quantized"), required_bytes=quantized_bytes, reason=""
    )
    dense = WeightLayout(
        kind="dense", dtype=compute_dtype(info, "dense"), required_bytes=dense_bytes, reason=""
    )
    hybrid = WeightLayout(
        kind="hybrid", dtype=compute_dtype(info, "hybrid"), required_bytes=hybrid_bytes or 0, reason=""
    )
    if preference == "hybrid" and hybrid_bytes is not None:
        return msgspec.structs.replace(hybrid, reason="hybrid weights were requested")
    if preference == "hybrid":
        return msgspec.structs.replace(
            dense, reason="hybrid weights were requested, but Pensieve's CPU kernels are not available"
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
    if hybrid_bytes is not None and hybrid_bytes <= info.memory_budget_bytes:
        return msgspec.structs.replace(
            hybrid,
            reason=f"Pensieve's CPU kernels read the quantized weights for decode, {info.blas} "
            "multiplies dense float32 ones for prompts",
        )
    if dense_bytes > info.memory_budget_bytes:
        return msgspec.structs.replace(
            quantized,
            reason=f"float32 weights would need {format_bytes(dense_bytes)}, over the memory budget "
            f"of {format_bytes(info.memory_budget_bytes)}",
        )
    over_budget = (
        ""
        if hybrid_bytes is None
        else f"; with the quantized weights for Pensieve's CPU kernels it would need "
        f"{format_bytes(hybrid_bytes)}, over the budget"
    )
    return msgspec.structs.replace(
        dense, reason=f"float32 matmuls on {info.blas} beat MLX's quantized CPU kernels{over_budget}"
    )

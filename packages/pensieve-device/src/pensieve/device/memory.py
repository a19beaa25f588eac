"""Estimating a model's memory and checking it against the budget before loading it."""

from __future__ import annotations

from pensieve.core.errors import ModelTooLargeError
from pensieve.device.configure import DeviceInfo

__all__ = ["check_model_fits", "estimate_model_bytes", "format_bytes"]

_MIN_ACTIVATION_BYTES = 64 * 1024**2
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def estimate_model_bytes(
    weight_bytes: int,
    context_length: int,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    kv_bytes_per_element: int = 2,
    batch: int = 1,
) -> int:
    """Bytes a model needs to serve ``batch`` sequences of the full context::

        kv          = 2 * num_layers * num_kv_heads * head_dim * context_length * batch
                        * kv_bytes_per_element            (2: one K and one V entry)
        activations = max(64 MiB, (weight_bytes + kv) // 10)
        total       = weight_bytes + kv + activations

    The activation term is a rough allowance for a forward pass's intermediate tensors.
    """
    sizes = (weight_bytes, context_length, num_layers, num_kv_heads, head_dim, kv_bytes_per_element, batch)
    if min(sizes) < 0:
        raise ValueError(f"model sizes must not be negative: {sizes}")
    kv = 2 * num_layers * num_kv_heads * head_dim * context_length * batch * kv_bytes_per_element
    activations = max(_MIN_ACTIVATION_BYTES, (weight_bytes + kv) // 10)
    return weight_bytes + kv + activations


def check_model_fits(required_bytes: int, info: DeviceInfo, what: str) -> None:
    """Raise ``ModelTooLargeError`` if ``what`` (e.g. ``"model smollm2"``) exceeds the memory budget.

    Failing here, before loading, beats an allocation failure or heavy swapping halfway through.
    """
    if required_bytes > info.memory_budget_bytes:
        raise ModelTooLargeError(
            f"{what} needs {format_bytes(required_bytes)} but the memory budget is "
            f"{format_bytes(info.memory_budget_bytes)} on {info.name} ({info.backend}); "
            "raise device.memory_fraction or device.memory_limit_bytes",
            required_bytes=required_bytes,
            budget_bytes=info.memory_budget_bytes,
        )


def format_bytes(count: int) -> str:
    """Binary units with one decimal where it matters: ``512 MiB``, ``1.2 GiB``, ``900 B``."""
    value, unit = float(count), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f}".removesuffix(".0") + f" {_UNITS[unit]}"

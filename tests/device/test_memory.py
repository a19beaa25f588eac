"""Model size estimates and the check against the memory budget."""

from __future__ import annotations

import pytest

from pensieve.core.config import DeviceSettings
from pensieve.core.errors import ModelError, ModelTooLargeError
from pensieve.device import check_model_fits, estimate_model_bytes, format_bytes, plan_device

from .test_backend import CPU_BOX, GIB

MIB = 1024**2


def test_estimate_adds_weights_kv_cache_and_activations() -> None:
    # SmolLM2-135M's shape: 30 layers, 3 KV heads of 64, 8192 context, fp16 cache.
    kv = 2 * 30 * 3 * 64 * 8192 * 2
    assert kv == 180 * MIB
    assert estimate_model_bytes(100 * MIB, 8192, 30, 3, 64) == 100 * MIB + kv + 64 * MIB
    assert estimate_model_bytes(100 * MIB, 8192, 30, 3, 64, kv_bytes_per_element=4, batch=2) == (
        100 * MIB + 4 * kv + (100 * MIB + 4 * kv) // 10
    )


def test_activation_allowance_grows_with_the_model() -> None:
    assert estimate_model_bytes(10 * GIB, 0, 0, 0, 0) == 11 * GIB
    assert estimate_model_bytes(0, 0, 0, 0, 0) == 64 * MIB


def test_estimate_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match="negative"):
        estimate_model_bytes(MIB, -1, 30, 3, 64)


def test_model_that_fits_passes() -> None:
    info = plan_device(DeviceSettings(memory_limit_bytes=GIB), CPU_BOX)
    check_model_fits(GIB, info, "model smollm2")


def test_model_too_large_names_both_numbers_and_the_settings() -> None:
    info = plan_device(DeviceSettings(memory_limit_bytes=512 * MIB), CPU_BOX)
    required = int(1.2 * GIB)
    with pytest.raises(ModelTooLargeError) as caught:
        check_model_fits(required, info, "model big-one")
    error = caught.value
    assert isinstance(error, ModelError)
    assert (error.required_bytes, error.budget_bytes) == (required, 512 * MIB)
    assert error.message.startswith("model big-one needs 1.2 GiB but the memory budget is 512 MiB")
    assert error.message.endswith("raise device.memory_fraction or device.memory_limit_bytes")


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (900, "900 B"),
        (1536, "1.5 KiB"),
        (512 * MIB, "512 MiB"),
        (5 * 1024 * GIB, "5 TiB"),
        (2048 * 1024 * GIB, "2048 TiB"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text

"""configure_device applies its choice to MLX; plan_device computes it without touching MLX."""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx
import msgspec
import pytest

from pensieve.core.config import DeviceSettings
from pensieve.core.errors import ConfigError
from pensieve.device import DeviceInfo, configure_device, plan_device, probe_device

from .test_backend import CPU_BOX, CUDA_BOX, GIB, MAC


def _cache_limit() -> int:
    # MLX has no getter for the cache limit; the setter returns the previous value.
    previous = mx.set_cache_limit(0)
    mx.set_cache_limit(previous)
    return previous


@pytest.fixture
def restore_mlx() -> Iterator[None]:
    """MLX limits are process-wide: give later tests in this process back what they had."""
    device, memory, cache = mx.default_device(), mx.get_memory_limit(), _cache_limit()
    yield
    mx.set_default_device(device)
    mx.set_memory_limit(memory)
    mx.set_cache_limit(cache)


def test_budget_is_a_fraction_of_the_usable_memory() -> None:
    assert plan_device(DeviceSettings(memory_fraction=0.5), CPU_BOX).memory_budget_bytes == 4 * GIB
    # On Metal the usable memory is the recommended working set, not all of RAM.
    metal = plan_device(DeviceSettings(memory_fraction=0.5), MAC)
    assert (metal.backend, metal.name, metal.memory_budget_bytes, metal.total_memory_bytes) == (
        "metal",
        "Apple M2 Pro",
        11 * GIB,
        32 * GIB,
    )
    assert plan_device(DeviceSettings(memory_fraction=0.25), CUDA_BOX).memory_budget_bytes == 6 * GIB


def test_explicit_limits_win_over_the_fraction() -> None:
    settings = DeviceSettings(memory_fraction=0.1, memory_limit_bytes=3 * GIB, cache_limit_bytes=GIB)
    info = plan_device(settings, MAC)
    assert (info.memory_budget_bytes, info.cache_limit_bytes) == (3 * GIB, GIB)


def test_cache_limit_defaults_to_the_budget() -> None:
    info = plan_device(DeviceSettings(memory_fraction=0.5), CPU_BOX)
    assert info.cache_limit_bytes == info.memory_budget_bytes
    assert plan_device(DeviceSettings(cache_limit_bytes=0), CPU_BOX).cache_limit_bytes == 0


def test_cpu_preference_on_a_mac_budgets_system_memory() -> None:
    info = plan_device(DeviceSettings(device="cpu", memory_fraction=0.5), MAC)
    assert (info.backend, info.memory_budget_bytes, info.cpu_count) == ("cpu", 16 * GIB, 12)


def test_configure_applies_device_and_limits_to_mlx(restore_mlx: None) -> None:
    settings = DeviceSettings(device="cpu", memory_limit_bytes=700_000_000, cache_limit_bytes=50_000_000)
    info = configure_device(settings)
    assert info.backend == "cpu"
    assert info.mlx_version == mx.__version__
    assert mx.default_device() == mx.cpu
    assert mx.get_memory_limit() == 700_000_000
    assert _cache_limit() == 50_000_000


def test_configure_with_the_real_probe_uses_the_fraction(restore_mlx: None) -> None:
    report = probe_device()
    info = configure_device(DeviceSettings(memory_fraction=0.5), report)
    if info.backend == "cpu":
        assert info.total_memory_bytes == report.system_memory_bytes
        assert info.memory_budget_bytes == int(report.system_memory_bytes * 0.5)
    assert mx.get_memory_limit() == info.memory_budget_bytes
    assert _cache_limit() == info.memory_budget_bytes


def test_configure_translates_an_unusable_gpu_into_a_config_error(restore_mlx: None) -> None:
    if mx.metal.is_available():
        pytest.skip("this machine really has Metal")
    with pytest.raises(ConfigError) as caught:
        configure_device(DeviceSettings(), MAC)
    assert [p.key for p in caught.value.problems] == ["device.device"]
    assert "metal" in caught.value.message


def test_device_info_encodes_for_health() -> None:
    info = plan_device(DeviceSettings(), CPU_BOX)
    assert msgspec.json.decode(msgspec.json.encode(info)) == info.to_dict()
    assert msgspec.convert(info.to_dict(), DeviceInfo) == info
    assert set(info.to_dict()) == {
        "backend",
        "name",
        "total_memory_bytes",
        "memory_budget_bytes",
        "cache_limit_bytes",
        "mlx_version",
        "cpu_count",
        "blas",
        "blas_optimized",
        "weight_layout",
        "compute_dtype",
        "cpu_kernels",
    }

"""select_backend is pure: simulated machines stand in for hardware this runner lacks."""

from __future__ import annotations

import pytest

from pensieve.core.errors import ConfigError
from pensieve.device import DeviceReport, select_backend

GIB = 1024**3

MAC = DeviceReport(
    system="Darwin",
    machine="arm64",
    metal_available=True,
    cuda_available=False,
    cpu_name="Apple M2 Pro",
    cpu_count=12,
    system_memory_bytes=32 * GIB,
    gpu_name="Apple M2 Pro",
    gpu_memory_bytes=32 * GIB,
    gpu_working_set_bytes=22 * GIB,
)
CUDA_BOX = DeviceReport(
    system="Linux",
    machine="x86_64",
    metal_available=False,
    cuda_available=True,
    cpu_name="AMD EPYC",
    cpu_count=32,
    system_memory_bytes=128 * GIB,
    gpu_name="NVIDIA L4",
    gpu_memory_bytes=24 * GIB,
)
CPU_BOX = DeviceReport(
    system="Linux",
    machine="x86_64",
    metal_available=False,
    cuda_available=False,
    cpu_name="AMD EPYC",
    cpu_count=2,
    system_memory_bytes=8 * GIB,
)


@pytest.mark.parametrize(
    ("report", "preference", "expected"),
    [
        (MAC, "auto", "metal"),
        (MAC, "gpu", "metal"),
        (MAC, "cpu", "cpu"),
        (CUDA_BOX, "auto", "cuda"),
        (CUDA_BOX, "gpu", "cuda"),
        (CUDA_BOX, "cpu", "cpu"),
        (CPU_BOX, "auto", "cpu"),
        (CPU_BOX, "cpu", "cpu"),
    ],
)
def test_backend_choice(report: DeviceReport, preference: str, expected: str) -> None:
    assert select_backend(report, preference) == expected  # type: ignore[arg-type]


def test_apple_silicon_is_recognised() -> None:
    assert MAC.apple_silicon
    assert not CUDA_BOX.apple_silicon


def test_gpu_preference_without_gpu_is_a_config_error_on_device_device() -> None:
    with pytest.raises(ConfigError) as caught:
        select_backend(CPU_BOX, "gpu")
    [problem] = caught.value.problems
    assert problem.key == "device.device"
    assert "no GPU backend" in problem.message
    assert "device.device" in caught.value.message

"""What this machine offers to MLX: backends, device names and memory sizes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

import mlx.core as mx
import msgspec

from pensieve.core.errors import PensieveError
from pensieve.device.blas import load_blas

__all__ = ["DeviceReport", "probe_device"]


class DeviceReport(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the hardware; plain data, so choices made from it can be tested anywhere.

    GPU fields are ``None`` when there is no GPU backend or MLX does not report them.
    """

    system: str
    """``platform.system()``: ``"Darwin"``, ``"Linux"``, …"""
    machine: str
    """``platform.machine()``: ``"arm64"``, ``"x86_64"``, …"""
    metal_available: bool
    cuda_available: bool
    cpu_name: str
    cpu_count: int
    system_memory_bytes: int
    gpu_name: str | None = None
    gpu_memory_bytes: int | None = None
    """Total GPU memory (on Apple silicon: the unified memory, i.e. all of RAM)."""
    gpu_working_set_bytes: int | None = None
    """Metal's recommended maximum working set: what the GPU can use without paging."""
    blas: str = "reference"
    """The BLAS behind MLX's CPU matmuls (see ``pensieve.device.blas``)."""
    blas_optimized: bool = False

    @property
    def apple_silicon(self) -> bool:
        return self.system == "Darwin" and self.machine == "arm64"


def probe_device() -> DeviceReport:
    """Ask MLX and the operating system what this machine offers."""
    metal = _backend_available("metal")
    cuda = _backend_available("cuda")
    gpu = _device_info(mx.gpu) if metal or cuda else {}
    cpu = _device_info(mx.cpu)
    blas = load_blas()
    return DeviceReport(
        system=platform.system(),
        machine=platform.machine(),
        metal_available=metal,
        cuda_available=cuda,
        cpu_name=str(cpu.get("device_name") or platform.processor() or platform.machine()),
        cpu_count=_cpu_count(),
        system_memory_bytes=_system_memory_bytes(),
        gpu_name=_str_or_none(gpu.get("device_name")),
        gpu_memory_bytes=_int_or_none(gpu.get("memory_size", gpu.get("total_memory"))),
        gpu_working_set_bytes=_int_or_none(gpu.get("max_recommended_working_set_size")),
        blas=blas.name,
        blas_optimized=blas.optimized,
    )


def _backend_available(name: str) -> bool:
    # mx.cuda only exists in recent MLX releases; a build without a backend still answers False.
    module = getattr(mx, name, None)
    return bool(module is not None and module.is_available())


def _device_info(device: mx.DeviceType) -> dict[str, Any]:
    if hasattr(mx, "device_info"):
        return dict(mx.device_info(device))
    if device == mx.gpu and _backend_available("metal"):
        return dict(mx.metal.device_info())  # MLX before the backend-neutral device_info
    return {}


def _cpu_count() -> int:
    # Prefer the CPUs this process may run on (affinity, containers) over the machine's total.
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _system_memory_bytes() -> int:
    try:
        if sys.platform == "darwin":
            result = subprocess.run(
                ["/usr/sbin/sysctl", "-n", "hw.memsize"], capture_output=True, text=True, check=True
            )
            return int(result.stdout)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        raise PensieveError(f"cannot read the size of system memory: {exc}") from exc


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None

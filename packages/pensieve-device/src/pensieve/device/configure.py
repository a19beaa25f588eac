"""Turning device settings into a concrete MLX device and memory limits."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import mlx.core as mx
import msgspec

from pensieve.core.config import DeviceSettings
from pensieve.core.errors import ConfigError, ConfigProblem
from pensieve.device.backend import Backend, select_backend
from pensieve.device.probe import DeviceReport, probe_device

__all__ = ["DeviceInfo", "configure_device", "plan_device"]


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The device Pensieve runs on and the limits it applied; shown by /health and the start banner."""

    backend: Backend
    name: str
    total_memory_bytes: int
    memory_budget_bytes: int
    cache_limit_bytes: int
    mlx_version: str
    cpu_count: int
    blas: str
    """The BLAS behind MLX's CPU matmuls: ``mkl 2026.2.0``, ``openblas``, ``accelerate``, ``reference``…"""
    blas_optimized: bool
    weight_layout: str | None = None
    """``quantized``, ``dense`` or ``hybrid`` once a model is loaded (see ``plan_weights``)."""
    compute_dtype: str | None = None
    """``float32`` or ``float16`` once a model is loaded."""
    cpu_kernels: str | None = None
    """Pensieve's CPU kernels the loaded model runs on (``avx2 quantized matmul``), if any."""

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


def plan_device(settings: DeviceSettings, report: DeviceReport) -> DeviceInfo:
    """What ``configure_device`` would apply for this report, without touching MLX.

    The budget is ``settings.memory_limit_bytes`` when set, else ``memory_fraction`` of the
    memory the backend can use: Metal's recommended working set (the GPU pages beyond it), the
    CUDA device's memory, or system RAM on the CPU. The cache limit defaults to the budget,
    as MLX's own default cache limit equals its memory limit.
    """
    backend = select_backend(report, settings.device)
    if backend == "cpu":
        name, total, usable = report.cpu_name, report.system_memory_bytes, report.system_memory_bytes
    else:
        name = report.gpu_name or f"{backend} GPU"
        total = report.gpu_memory_bytes or report.system_memory_bytes
        usable = report.gpu_working_set_bytes or total
    budget = settings.memory_limit_bytes or int(usable * settings.memory_fraction)
    cache = budget if settings.cache_limit_bytes is None else settings.cache_limit_bytes
    return DeviceInfo(
        backend=backend,
        name=name,
        total_memory_bytes=total,
        memory_budget_bytes=budget,
        cache_limit_bytes=cache,
        mlx_version=version("mlx"),
        cpu_count=report.cpu_count,
        blas=report.blas,
        blas_optimized=report.blas_optimized,
    )


def configure_device(settings: DeviceSettings, report: DeviceReport | None = None) -> DeviceInfo:
    """Probe (unless ``report`` is given), choose the backend and apply it to MLX process-wide.

    Sets MLX's default device, memory limit and cache limit; returns what was applied.
    """
    info = plan_device(settings, report if report is not None else probe_device())
    try:
        mx.set_default_device(mx.cpu if info.backend == "cpu" else mx.gpu)
    except ValueError as exc:
        raise ConfigError(
            [ConfigProblem("device.device", f"MLX cannot use the {info.backend} backend: {exc}")]
        ) from exc
    mx.set_memory_limit(info.memory_budget_bytes)
    mx.set_cache_limit(info.cache_limit_bytes)
    return info

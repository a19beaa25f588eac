"""Choosing the MLX backend from a device report and the configured preference."""

from __future__ import annotations

from typing import Literal

from pensieve.core.errors import ConfigError, ConfigProblem
from pensieve.device.probe import DeviceReport

__all__ = ["Backend", "select_backend"]

Backend = Literal["metal", "cuda", "cpu"]


def select_backend(report: DeviceReport, preference: Literal["auto", "gpu", "cpu"] = "auto") -> Backend:
    """The backend to run on: Metal if available, else CUDA if available, else the CPU.

    ``"cpu"`` always gives the CPU; ``"gpu"`` insists on a GPU and raises ``ConfigError``
    (key ``device.device``) when the machine has none, rather than silently running slowly.
    """
    if preference == "cpu":
        return "cpu"
    if report.metal_available:
        return "metal"
    if report.cuda_available:
        return "cuda"
    if preference == "gpu":
        raise ConfigError(
            [
                ConfigProblem(
                    "device.device",
                    f"'gpu' was requested but MLX finds no GPU backend on this machine "
                    f"({report.system} {report.machine}: Metal unavailable, CUDA unavailable); "
                    "use 'auto' or 'cpu'",
                )
            ]
        )
    return "cpu"

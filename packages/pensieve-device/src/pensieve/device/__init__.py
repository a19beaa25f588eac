"""Pensieve device: which MLX backend runs the model, how much memory it may use, whether a model
fits, and Pensieve's own CPU kernels.

Importing this package loads an optimized BLAS for MLX's CPU backend (see ``pensieve.device.blas``);
import it before anything imports mlx.
"""

from pensieve.device.blas import BlasLibrary, load_blas  # isort: skip  (must run before mlx loads)

load_blas()

from pensieve.device.backend import Backend, select_backend
from pensieve.device.configure import DeviceInfo, configure_device, plan_device
from pensieve.device.kernels import CpuKernels, cpu_kernels, cpu_kernels_for
from pensieve.device.memory import check_model_fits, estimate_model_bytes, format_bytes
from pensieve.device.probe import DeviceReport, probe_device
from pensieve.device.weights import DTYPE_BYTES, WeightLayout, compute_dtype, plan_weights

__all__ = [
    "Backend",
    "BlasLibrary",
    "CpuKernels",
    "DTYPE_BYTES",
    "DeviceInfo",
    "DeviceReport",
    "WeightLayout",
    "check_model_fits",
    "compute_dtype",
    "configure_device",
    "cpu_kernels",
    "cpu_kernels_for",
    "estimate_model_bytes",
    "format_bytes",
    "load_blas",
    "plan_device",
    "plan_weights",
    "probe_device",
    "select_backend",
]

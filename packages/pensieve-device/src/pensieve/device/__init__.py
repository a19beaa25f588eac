"""Pensieve device: which MLX backend runs the model, how much memory it may use, and whether a model fits."""

from pensieve.device.backend import Backend, select_backend
from pensieve.device.configure import DeviceInfo, configure_device, plan_device
from pensieve.device.memory import check_model_fits, estimate_model_bytes, format_bytes
from pensieve.device.probe import DeviceReport, probe_device

__all__ = [
    "Backend",
    "DeviceInfo",
    "DeviceReport",
    "check_model_fits",
    "configure_device",
    "estimate_model_bytes",
    "format_bytes",
    "plan_device",
    "probe_device",
    "select_backend",
]

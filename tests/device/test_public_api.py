"""The package exports exactly its public names."""

from __future__ import annotations

from pensieve import device


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(device.__all__) == [
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

"""plan_weights is pure: simulated machines (a Metal Mac, a CUDA box, CPU boxes) pick their layouts."""

from __future__ import annotations

import msgspec
import pytest

from pensieve.core.config import DeviceSettings
from pensieve.device import (
    DTYPE_BYTES,
    DeviceInfo,
    DeviceReport,
    WeightLayout,
    compute_dtype,
    plan_device,
    plan_weights,
)

from .test_backend import CPU_BOX, CUDA_BOX, GIB, MAC

# The default model: ~0.35 GiB quantized, ~0.8 GiB as float32 (weights + 8k-token KV + activations).
QUANTIZED = 350 * 1024**2
DENSE = 800 * 1024**2


def _info(report: DeviceReport, **settings: object) -> DeviceInfo:
    return plan_device(DeviceSettings(**settings), report)  # type: ignore[arg-type]


def _plan(info: DeviceInfo, **kwargs: object) -> WeightLayout:
    return plan_weights(info, quantized_bytes=QUANTIZED, dense_bytes=DENSE, **kwargs)  # type: ignore[arg-type]


MKL_BOX = msgspec.structs.replace(CPU_BOX, blas="mkl 2026.2.0", blas_optimized=True)


def test_a_metal_mac_keeps_the_quantized_kernels() -> None:
    layout = _plan(_info(MAC))
    assert (layout.kind, layout.dtype, layout.required_bytes) == ("quantized", "float16", QUANTIZED)
    assert "metal" in layout.reason


def test_a_cuda_box_keeps_the_quantized_kernels() -> None:
    assert (_plan(_info(CUDA_BOX)).kind, _plan(_info(CUDA_BOX)).dtype) == ("quantized", "float16")


def test_a_mac_forced_onto_its_cpu_uses_accelerate_float32() -> None:
    mac = msgspec.structs.replace(MAC, blas="accelerate", blas_optimized=True)
    layout = _plan(_info(mac, device="cpu"))
    assert (layout.kind, layout.dtype) == ("dense", "float32")


def test_cpu_with_an_optimized_blas_dequantizes_to_float32() -> None:
    layout = _plan(_info(MKL_BOX))
    assert (layout.kind, layout.dtype, layout.required_bytes) == ("dense", "float32", DENSE)
    assert "mkl 2026.2.0" in layout.reason


def test_cpu_with_the_reference_blas_stays_quantized() -> None:
    layout = _plan(_info(CPU_BOX))
    assert (layout.kind, layout.dtype, layout.required_bytes) == ("quantized", "float32", QUANTIZED)
    assert "no optimized BLAS" in layout.reason


def test_float32_weights_over_the_budget_stay_quantized() -> None:
    info = _info(MKL_BOX, memory_limit_bytes=DENSE - 1)
    layout = _plan(info)
    assert (layout.kind, layout.dtype) == ("quantized", "float32")
    assert "over the memory budget" in layout.reason
    assert _plan(_info(MKL_BOX, memory_limit_bytes=DENSE)).kind == "dense"


@pytest.mark.parametrize(("preference", "kind"), [("quantized", "quantized"), ("dense", "dense")])
def test_an_explicit_preference_wins(preference: str, kind: str) -> None:
    for report in (MAC, MKL_BOX, CPU_BOX):
        layout = _plan(_info(report), preference=preference)
        assert layout.kind == kind
        assert layout.required_bytes == (DENSE if kind == "dense" else QUANTIZED)


def test_device_info_carries_the_blas_of_the_report() -> None:
    info = _info(MKL_BOX)
    assert (info.blas, info.blas_optimized) == ("mkl 2026.2.0", True)
    assert (info.weight_layout, info.compute_dtype) == (None, None)  # filled in once a model loads
    assert info.memory_budget_bytes == int(8 * GIB * 0.75)


def test_the_compute_dtype_and_so_the_kv_cache_dtype_of_each_layout() -> None:
    assert compute_dtype(_info(MAC), "quantized") == "float16"
    assert compute_dtype(_info(CUDA_BOX), "quantized") == "float16"
    assert compute_dtype(_info(MAC), "dense") == "float32"
    assert compute_dtype(_info(CPU_BOX), "quantized") == "float32"
    assert [DTYPE_BYTES[compute_dtype(_info(MKL_BOX), kind)] for kind in ("quantized", "dense")] == [4, 4]


HYBRID = DENSE + QUANTIZED


def test_cpu_with_kernels_and_an_optimized_blas_holds_both_layouts() -> None:
    layout = _plan(_info(MKL_BOX), hybrid_bytes=HYBRID)
    assert (layout.kind, layout.dtype, layout.required_bytes) == ("hybrid", "float32", HYBRID)
    assert "kernels" in layout.reason and "mkl 2026.2.0" in layout.reason


def test_hybrid_over_the_budget_falls_back_to_dense_and_says_why() -> None:
    layout = _plan(_info(MKL_BOX, memory_limit_bytes=HYBRID - 1), hybrid_bytes=HYBRID)
    assert (layout.kind, layout.required_bytes) == ("dense", DENSE)
    assert "over the budget" in layout.reason
    assert _plan(_info(MKL_BOX, memory_limit_bytes=HYBRID), hybrid_bytes=HYBRID).kind == "hybrid"


def test_kernels_never_change_a_gpu_or_reference_blas_choice() -> None:
    assert _plan(_info(MAC), hybrid_bytes=HYBRID).kind == "quantized"
    assert _plan(_info(CPU_BOX), hybrid_bytes=HYBRID).kind == "quantized"


def test_hybrid_requested_without_kernels_loads_dense() -> None:
    layout = _plan(_info(MKL_BOX), preference="hybrid")
    assert layout.kind == "dense"
    assert "not available" in layout.reason
    assert _plan(_info(MKL_BOX), preference="hybrid", hybrid_bytes=HYBRID).kind == "hybrid"

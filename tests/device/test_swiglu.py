"""pensieve.device.kernels: SwiGLU agrees with MLX's ``silu(gate) * x`` over shapes, layouts, extreme
gates and instruction sets, and hands what it does not take back to MLX. Uses the session's
kernel build (conftest.py)."""

from __future__ import annotations

import pytest

import pensieve.device  # noqa: F401  (loads the BLAS before mlx)
import mlx.core as mx  # isort: skip
import mlx.nn as nn  # isort: skip
from pensieve.device.kernels import CpuKernels
from tests.device.kernel_support import LOWER_SIMD, requires_kernels, simd_capped

pytestmark = requires_kernels

TOLERANCE = 1e-6  # relative to the largest output


def _reference(gate: mx.array, x: mx.array) -> mx.array:
    return nn.silu(gate) * x


def _assert_close(got: mx.array, want: mx.array) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    error = (mx.abs(got - want).max() / mx.abs(want).max()).item()
    assert error < TOLERANCE, f"relative error {error:.2e}"


def _pair(shape: tuple[int, ...]) -> tuple[mx.array, mx.array]:
    return mx.random.normal(shape, key=mx.random.key(1)) * 4, mx.random.normal(shape, key=mx.random.key(2))


@pytest.mark.parametrize("shape", [(1, 1, 1536), (8, 1, 1536), (3, 5), (2, 300, 1536)])
def test_matches_mlx(kernels: CpuKernels, shape: tuple[int, ...]) -> None:
    """(2, 300, 1536), a prompt chunk, is enough elements to split over the worker threads."""
    gate, x = _pair(shape)
    _assert_close(kernels.swiglu(gate, x), _reference(gate, x))


def test_strided_inputs(kernels: CpuKernels) -> None:
    gate, x = _pair((64, 48))
    for g, u in ((gate.T, x.T), (gate[::2, 1:], x[1::2, :-1])):
        _assert_close(kernels.swiglu(g, u), _reference(g, u))


def test_extreme_gates_stay_finite_and_close(kernels: CpuKernels) -> None:
    gate = mx.array([-1e4, -200.0, -90.0, -87.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 87.0, 88.0, 89.0, 200.0, 1e4])
    x = mx.full(gate.shape, 1.5)
    got = kernels.swiglu(gate, x)
    assert mx.all(mx.isfinite(got)).item()
    assert mx.allclose(got, _reference(gate, x), rtol=1e-6, atol=1e-30).item()


@pytest.mark.parametrize("level", LOWER_SIMD)
def test_each_instruction_set_matches_mlx(kernels: CpuKernels, level: str) -> None:
    gate, x = _pair((8, 1, 1539))  # not a multiple of eight: the vector loop's tail runs too
    with simd_capped(kernels, level):
        got = kernels.swiglu(gate, x)
        mx.eval(got)
    _assert_close(got, _reference(gate, x))


@pytest.mark.parametrize("case", ["float16", "broadcast"])
def test_what_it_does_not_take_goes_to_mlx(kernels: CpuKernels, case: str) -> None:
    gate, x = _pair((4, 16))
    if case == "float16":
        gate, x = gate.astype(mx.float16), x.astype(mx.float16)
    else:
        x = x[:1]
    assert mx.array_equal(kernels.swiglu(gate, x), _reference(gate, x)).item()

"""pensieve.device.kernels: RoPE is as accurate as ``mx.fast.rope`` for both pair layouts, partial rotation,
per-sequence offsets (negative ones too: left padding) and strided inputs, and hands what it does
not take back to MLX. Uses the session's kernel build (conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

import pensieve.device  # noqa: F401  (loads the BLAS before mlx)
import mlx.core as mx  # isort: skip
from pensieve.device.kernels import CpuKernels
from tests.device.kernel_support import requires_kernels

pytestmark = requires_kernels



def _heads(batch: int, heads: int, length: int, dim: int, seed: int = 1) -> mx.array:
    """[B, H, L, D] as attention modules make it: a transposed view of [B, L, H, D]."""
    return mx.random.normal((batch, length, heads, dim), key=mx.random.key(seed)).transpose(0, 2, 1, 3)


def _exact(x: mx.array, dims: int, traditional: bool, base: float, scale: float, offset: object) -> np.ndarray:
    """RoPE in float64: the reference both float32 implementations are measured against."""
    values = np.array(x, dtype=np.float64)
    batch, _, length, _ = values.shape
    starts = np.broadcast_to(np.array(offset, dtype=np.float64).reshape(-1), (batch,))
    half = dims // 2
    theta = ((starts[:, None] + np.arange(length)) * scale)[:, None, :, None] * base ** (-np.arange(half) / half)
    cos, sin = np.cos(theta), np.sin(theta)
    out = values.copy()
    if traditional:
        a, b = values[..., 0:dims:2], values[..., 1:dims:2]
        out[..., 0:dims:2], out[..., 1:dims:2] = a * cos - b * sin, a * sin + b * cos
    else:
        a, b = values[..., :half], values[..., half:dims]
        out[..., :half], out[..., half:dims] = a * cos - b * sin, a * sin + b * cos
    return out


def _error(got: mx.array, exact: np.ndarray) -> float:
    return float(np.abs(np.array(got, dtype=np.float64) - exact).max() / np.abs(exact).max())


@pytest.mark.parametrize("traditional", [True, False])
@pytest.mark.parametrize(("dims", "base", "scale"), [(64, 10000.0, 1.0), (32, 1e6, 0.5)])
@pytest.mark.parametrize(
    ("batch", "length", "offset"),
    [(1, 1, 0), (1, 1, 2000), (8, 1, mx.array([0, 5, 17, 300, -3, 1, 2, 1999])), (3, 32, mx.array([-2, 0, 40])), (2, 7, 11)],
)
def test_matches_mlx(
    kernels: CpuKernels, traditional: bool, dims: int, base: float, scale: float, batch: int, length: int, offset: object
) -> None:
    """As accurate as MLX's own: float32 angles of ~2,000 radians carry ~1e-4 of rounding in both."""
    x = _heads(batch, 9, length, 64)
    got = kernels.rope(x, dims, traditional=traditional, base=base, scale=scale, offset=offset)
    mlx = mx.fast.rope(x, dims, traditional=traditional, base=base, scale=scale, offset=offset)
    exact = _exact(x, dims, traditional, base, scale, offset)
    assert got.shape == mlx.shape and got.dtype == mlx.dtype
    assert _error(got, exact) <= max(2 * _error(mlx, exact), 1e-6)


@pytest.mark.parametrize("case", ["float16", "three dimensions"])
def test_what_it_does_not_take_goes_to_mlx(kernels: CpuKernels, case: str) -> None:
    x, offset = _heads(2, 4, 3, 32), 5
    if case == "float16":
        x = x.astype(mx.float16)
    else:
        x = x[0]
    got = kernels.rope(x, 32, traditional=False, base=10000.0, scale=1.0, offset=offset)
    assert mx.array_equal(got, mx.fast.rope(x, 32, traditional=False, base=10000.0, scale=1.0, offset=offset)).item()

"""pensieve.device.kernels: decode attention agrees with ``mx.fast.scaled_dot_product_attention`` for
one query position, over KV-cache slices, grouped query heads and masks, and hands anything else
back to MLX. Uses the session's kernel build (conftest.py)."""

from __future__ import annotations

import pytest

import pensieve.device  # noqa: F401  (loads the BLAS before mlx)
import mlx.core as mx  # isort: skip
from pensieve.device.kernels import CpuKernels
from tests.device.kernel_support import requires_kernels, simd_capped

pytestmark = requires_kernels

TOLERANCE = 1e-5  # relative to the largest output


def _normal(shape: tuple[int, ...], seed: int) -> mx.array:
    return mx.random.normal(shape, key=mx.random.key(seed))


def _cache_slice(batch: int, kv_heads: int, length: int, dim: int, seed: int) -> mx.array:
    """The first ``length`` positions of a larger cache buffer, as mlx-lm's KV caches hand them out."""
    return _normal((batch, kv_heads, length + 37, dim), seed)[..., :length, :]


def _reference(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None) -> mx.array:
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


def _assert_close(got: mx.array, want: mx.array) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    error = (mx.abs(got - want).max() / mx.abs(want).max()).item()
    assert error < TOLERANCE, f"relative error {error:.2e}"


def _left_padding_mask(batch: int, length: int) -> mx.array:
    """mlx-lm's batch mask for one query: sequence b ignores its first b positions (left padding)."""
    return (mx.arange(batch)[:, None, None, None] <= mx.arange(length)[None, None, None, :])


@pytest.mark.parametrize("length", [1, 7, 8, 150, 1001])
@pytest.mark.parametrize(("batch", "heads", "kv_heads", "dim"), [(1, 9, 3, 64), (8, 9, 3, 64), (3, 4, 4, 128), (2, 6, 2, 36)])
def test_matches_mlx(kernels: CpuKernels, batch: int, heads: int, kv_heads: int, dim: int, length: int) -> None:
    q = _normal((batch, heads, 1, dim), 1)
    k = _cache_slice(batch, kv_heads, length, dim, 2)
    v = _cache_slice(batch, kv_heads, length, dim, 3)
    mask = _left_padding_mask(batch, length) if length > batch else None
    got = kernels.decode_attention(q, k, v, scale=dim**-0.5, mask=mask)
    _assert_close(got, _reference(q, k, v, dim**-0.5, mask))


def test_an_additive_mask_and_different_value_width(kernels: CpuKernels) -> None:
    q, k = _normal((2, 4, 1, 64), 1), _cache_slice(2, 2, 40, 64, 2)
    v = _normal((2, 2, 40, 80), 3)
    mask = _normal((2, 1, 1, 40), 4) * 3
    _assert_close(kernels.decode_attention(q, k, v, scale=0.125, mask=mask), _reference(q, k, v, 0.125, mask))


def test_a_mask_that_hides_all_but_one_position_picks_its_value(kernels: CpuKernels) -> None:
    q, k, v = _normal((1, 2, 1, 16), 1), _normal((1, 2, 20, 16), 2), _normal((1, 2, 20, 16), 3)
    mask = mx.arange(20)[None, None, None, :] == 13
    got = kernels.decode_attention(q, k, v, scale=0.25, mask=mask)
    assert mx.allclose(got[:, :, 0, :], v[:, :, 13, :], atol=1e-6).item()


@pytest.mark.parametrize("length", [5, 150])
def test_the_scalar_kernel_matches_mlx(kernels: CpuKernels, length: int) -> None:
    q, k, v = _normal((3, 9, 1, 64), 1), _cache_slice(3, 3, length, 64, 2), _cache_slice(3, 3, length, 64, 3)
    mask = _left_padding_mask(3, length)
    with simd_capped(kernels, "scalar"):
        got = kernels.decode_attention(q, k, v, scale=0.125, mask=mask)
        mx.eval(got)
    _assert_close(got, _reference(q, k, v, 0.125, mask))


def test_spread_over_the_threads_when_long(kernels: CpuKernels) -> None:
    """8 x 16 heads x 2,000 positions is enough work to split the heads over the worker threads."""
    q, k, v = _normal((8, 16, 1, 64), 1), _cache_slice(8, 4, 2000, 64, 2), _cache_slice(8, 4, 2000, 64, 3)
    _assert_close(kernels.decode_attention(q, k, v, scale=0.125), _reference(q, k, v, 0.125, None))


@pytest.mark.parametrize(
    "case",
    ["two query positions", "float16", "bfloat16 mask"],
)
def test_what_it_does_not_take_goes_to_mlx(kernels: CpuKernels, case: str) -> None:
    q, k, v = _normal((2, 4, 1, 32), 1), _normal((2, 2, 10, 32), 2), _normal((2, 2, 10, 32), 3)
    mask = None
    if case == "two query positions":
        q = _normal((2, 4, 2, 32), 1)
    elif case == "float16":
        q, k, v = (a.astype(mx.float16) for a in (q, k, v))
    elif case == "bfloat16 mask":
        mask = _normal((2, 1, 1, 10), 4).astype(mx.bfloat16)
    got = kernels.decode_attention(q, k, v, scale=0.2, mask=mask)
    assert mx.array_equal(got, _reference(q, k, v, 0.2, mask)).item()


def test_what_mlx_rejects_raises_mlx_s_error(kernels: CpuKernels) -> None:
    q, k, v = _normal((2, 3, 1, 32), 1), _normal((2, 2, 10, 32), 2), _normal((2, 2, 10, 32), 3)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        kernels.decode_attention(q, k, v, scale=0.2)

"""pensieve.device.kernels: the compiled quantized matmul agrees with ``mx.quantized_matmul`` in both
of its weight layouts and with each instruction set, hands what it does not support back to MLX,
and is built once per cache directory, even by racing processes.

The session builds the kernels once into a temporary cache (conftest.py).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pensieve.device  # noqa: F401  (loads the BLAS before mlx)
import mlx.core as mx  # isort: skip
from pensieve.device import kernels as kernels_module
from pensieve.core.config import DeviceSettings, build_config, env_overrides
from pensieve.device import plan_device
from pensieve.device.kernels import CpuKernels, cpu_kernels, cpu_kernels_for
from tests.device.kernel_support import LOWER_SIMD, cpu_simd, requires_kernels, simd_capped
from tests.device.test_backend import CPU_BOX, MAC


pytestmark = requires_kernels

# Each K is a multiple of its group size but not of 256; N is not a multiple of the kernel's 4-column
# tile. With N=1001, 16 and 40 rows are enough work (> 2^21 multiply-adds) to split over the threads.
K_FOR_GROUP = {32: 352, 64: 448, 128: 384}
TOLERANCE = 1e-5  # relative to the largest output

CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO)
import pensieve.device
from pensieve.device.kernels import cpu_kernels
kernels = cpu_kernels(sys.argv[1])
print(kernels.path if kernels is not None else "NONE")
"""


def _quantized(n: int, k: int, group_size: int, bits: int, seed: int = 1) -> tuple[mx.array, ...]:
    w = mx.random.normal((n, k), key=mx.random.key(seed)) * 0.05
    return mx.quantize(w, group_size=group_size, bits=bits)


def _x(shape: tuple[int, ...], seed: int = 2) -> mx.array:
    return mx.random.normal(shape, key=mx.random.key(seed))


def _assert_close(got: mx.array, want: mx.array) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    error = (mx.abs(got - want).max() / mx.abs(want).max()).item()
    assert error < TOLERANCE, f"relative error {error:.2e}"


def _reference(
    x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int
) -> mx.array:
    return mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=group_size, bits=bits)


def test_it_reports_the_kernel_it_runs(kernels: CpuKernels) -> None:
    assert kernels.simd == cpu_simd()
    assert kernels.description == f"{kernels.simd} quantized matmul, decode attention, swiglu, rope"
    assert kernels.path.is_file()


def test_it_is_loaded_once_per_process(kernels: CpuKernels, kernel_cache: Path) -> None:
    assert cpu_kernels(kernel_cache) is cpu_kernels(kernel_cache)


@pytest.mark.parametrize("n", [6, 1001])
@pytest.mark.parametrize("rows", [1, 3, 8, 16, 40])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", [4, 8])
def test_matches_mlx(kernels: CpuKernels, bits: int, group_size: int, rows: int, n: int) -> None:
    k = K_FOR_GROUP[group_size]
    w, scales, biases = _quantized(n, k, group_size, bits)
    x = _x((rows, k))
    got = kernels.quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits)
    _assert_close(got, _reference(x, w, scales, biases, group_size, bits))


@pytest.mark.parametrize("n", [6, 1001])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 13, 16])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", [4, 8])
def test_prepared_weights_match_mlx(kernels: CpuKernels, bits: int, group_size: int, rows: int, n: int) -> None:
    """One row reads MLX's layout, more rows the packed copy (N=1001 leaves a partial last tile)."""
    k = K_FOR_GROUP[group_size]
    w, scales, biases = _quantized(n, k, group_size, bits)
    prepared = kernels.prepare(w, scales, biases, group_size=group_size, bits=bits)
    x = _x((rows, k))
    _assert_close(prepared.matmul(x), _reference(x, w, scales, biases, group_size, bits))


@pytest.mark.parametrize("level", LOWER_SIMD)
@pytest.mark.parametrize("rows", [2, 8, 11])
def test_prepared_weights_match_mlx_with_each_instruction_set(kernels: CpuKernels, level: str, rows: int) -> None:
    w, scales, biases = _quantized(1001, 448, 64, 4)
    prepared = kernels.prepare(w, scales, biases, group_size=64, bits=4)
    x = _x((rows, 448))
    with simd_capped(kernels, level):
        got = prepared.matmul(x)
        mx.eval(got)
    _assert_close(got, _reference(x, w, scales, biases, 64, 4))


def test_the_packed_copy_interleaves_eight_columns(kernels: CpuKernels) -> None:
    w, scales, biases = _quantized(13, 256, 64, 4)
    prepared = kernels.prepare(w, scales, biases, group_size=64, bits=4)
    packed_w, packed_scales, _ = prepared.packed
    assert packed_w.shape == (2, 32, 8) and packed_scales.shape == (2, 4, 8)
    assert mx.array_equal(packed_w[1, :, 4], w[12]).item()  # column 12: tile 1, lane 4
    assert mx.array_equal(packed_scales[1, :, 5:], mx.zeros((4, 3))).item()  # past column 13: zero
    assert prepared.nbytes == sum(a.nbytes for a in prepared.packed)


def test_prepared_weights_fall_back_to_mlx_for_float16_x(kernels: CpuKernels) -> None:
    w, scales, biases = _quantized(70, 384, 64, 4)
    prepared = kernels.prepare(w, scales, biases, group_size=64, bits=4)
    for rows in (1, 4):
        x = _x((rows, 384)).astype(mx.float16)
        assert mx.array_equal(prepared.matmul(x), _reference(x, w, scales, biases, 64, 4)).item()


def test_matches_mlx_for_3d_x(kernels: CpuKernels) -> None:
    w, scales, biases = _quantized(70, 384, 64, 4)
    x = _x((2, 5, 384))
    got = kernels.quantized_matmul(x, w, scales, biases, group_size=64, bits=4)
    assert got.shape == (2, 5, 70)
    _assert_close(got, _reference(x, w, scales, biases, 64, 4))


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize(("bits", "group_size"), [(4, 32), (8, 128)])
def test_the_scalar_kernel_matches_mlx(kernels: CpuKernels, bits: int, group_size: int, rows: int) -> None:
    """The path CPUs without AVX2/FMA take, forced on through the module's testing hook."""
    k = K_FOR_GROUP[group_size]
    w, scales, biases = _quantized(1001, k, group_size, bits)
    prepared = kernels.prepare(w, scales, biases, group_size=group_size, bits=bits)
    x = _x((rows, k))
    with simd_capped(kernels, "scalar"):
        got = kernels.quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits)
        packed = prepared.matmul(x)
        mx.eval(got, packed)
    _assert_close(got, _reference(x, w, scales, biases, group_size, bits))
    _assert_close(packed, _reference(x, w, scales, biases, group_size, bits))


def test_non_contiguous_inputs(kernels: CpuKernels) -> None:
    k, n = 384, 301
    big_w, big_scales, big_biases = _quantized(2 * n, k, 64, 4)
    w, scales, biases = big_w[::2], big_scales[::2], big_biases[::2]  # every other output row
    transposed = _x((k, 7)).T
    sliced = _x((9, 2 * k))[1:8, ::2]
    broadcast = mx.broadcast_to(_x((1, k)), (4, k))
    for x in (transposed, sliced, broadcast):
        got = kernels.quantized_matmul(x, w, scales, biases, group_size=64, bits=4)
        _assert_close(got, _reference(x, *(mx.contiguous(a) for a in (w, scales, biases)), 64, 4))


@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "bits", "group_size"),
    [
        (mx.float16, mx.float32, 4, 64),  # float16 x
        (mx.float32, mx.float16, 4, 64),  # float16 scales and biases
        (mx.float32, mx.float32, 3, 32),
        (mx.float32, mx.float32, 2, 64),
    ],
)
def test_unsupported_inputs_fall_back_to_mlx(
    kernels: CpuKernels, x_dtype: mx.Dtype, w_dtype: mx.Dtype, bits: int, group_size: int
) -> None:
    w = (mx.random.normal((70, 384), key=mx.random.key(1)) * 0.05).astype(w_dtype)
    w, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
    x = _x((3, 384)).astype(x_dtype)
    got = kernels.quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits)
    assert mx.array_equal(got, _reference(x, w, scales, biases, group_size, bits)).item()


def test_what_mlx_rejects_raises_mlx_s_error(kernels: CpuKernels) -> None:
    w, scales, biases = _quantized(70, 384, 32, 4)
    with pytest.raises(ValueError):  # MLX supports no group size 16
        kernels.quantized_matmul(_x((3, 384)), w, scales, biases, group_size=16, bits=4)
    with pytest.raises(ValueError):  # x's width does not match w
        kernels.quantized_matmul(_x((3, 320)), w, scales, biases, group_size=32, bits=4)


def test_the_setting_and_the_backend_decide_whether_a_model_uses_them(
    kernels: CpuKernels, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = plan_device(DeviceSettings(), CPU_BOX)
    assert cpu_kernels_for(DeviceSettings(), cpu) is kernels
    assert cpu_kernels_for(DeviceSettings(), plan_device(DeviceSettings(), MAC)) is None  # Metal serves
    off = build_config(env=env_overrides({"PENSIEVE_DEVICE_CPU_KERNELS": "false"})).device
    monkeypatch.setattr(kernels_module, "_load", lambda _cache: pytest.fail("off must not build or load"))
    kernels_module._reset_for_tests()
    try:
        assert cpu_kernels_for(off, cpu) is None
    finally:
        kernels_module._reset_for_tests()


def test_no_cmake_means_no_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    kernels_module._reset_for_tests()
    try:
        with caplog.at_level(logging.INFO, logger="pensieve.device.kernels"):
            assert cpu_kernels(tmp_path) is None
    finally:
        kernels_module._reset_for_tests()
    assert [r.getMessage() for r in caplog.records] == ["CPU kernels not used: cmake is not on PATH"]


def test_a_failed_build_means_no_kernels_and_logs_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sources = tmp_path / "sources"
    shutil.copytree(kernels_module._SOURCES, sources)
    with open(sources / "CMakeLists.txt", "a") as cmake_lists:
        cmake_lists.write('message(FATAL_ERROR "broken on purpose")\n')
    monkeypatch.setattr(kernels_module, "_SOURCES", sources)
    kernels_module._reset_for_tests()
    try:
        with caplog.at_level(logging.INFO, logger="pensieve.device.kernels"):
            assert cpu_kernels(tmp_path / "cache") is None
    finally:
        kernels_module._reset_for_tests()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cmake configure failed" in warnings[0] and "broken on purpose" in warnings[0]
    assert [p.name for p in (tmp_path / "cache" / "kernels").iterdir()] == [".lock"]


def _child(cache_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cache_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(child: subprocess.Popen[str]) -> tuple[Path, str]:
    out, err = child.communicate(timeout=900)
    assert child.returncode == 0, err
    assert out.strip() != "NONE", err
    return Path(out.strip()), err


def test_racing_processes_build_once_and_later_ones_reuse_the_build(tmp_path: Path) -> None:
    first, second = _child(tmp_path), _child(tmp_path)
    (path_a, log_a), (path_b, log_b) = _finish(first), _finish(second)
    assert path_a == path_b
    assert sum("building Pensieve CPU kernels" in log for log in (log_a, log_b)) == 1
    entries = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert entries == [".lock", path_a.parent.name]  # one build directory, no staging left behind

    before = path_a.parent.stat(), path_a.stat()
    path_c, log_c = _finish(_child(tmp_path))
    after = path_c.parent.stat(), path_c.stat()
    assert path_c == path_a
    assert "building" not in log_c
    assert [(s.st_ino, s.st_mtime_ns) for s in before] == [(s.st_ino, s.st_mtime_ns) for s in after]

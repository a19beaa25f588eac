"""Pensieve's own CPU kernels for MLX, compiled on first use: a fast affine-quantized matmul,
decode-step attention, SwiGLU and RoPE on x86.

MLX 0.32's CPU backend has no SIMD path for quantized matmul: on the 135M default model
``mx.quantized_matmul`` costs ~165 ms per decode step, and dense float32 weights on oneMKL 75-83 ms.
An AVX2/FMA kernel on MLX's affine 4/8-bit layout, split over the cores, brought a step to 43-49 ms
at batch 1 and 100-115 ms at batch 8, within ~2e-6 (relative) of ``mx.quantized_matmul``. MLX's
CPU attention for one query runs as separate small ops (0.4-0.5 ms per layer at batch 8 and 150
positions); the fused kernel takes ~0.14 ms. MLX's CPU exp handles one value at a time, which
makes SwiGLU between the MLP projections cost more than the projections at batch 8.

The C++ sources ship in ``_kernels/``. ``cpu_kernels()`` builds them with CMake the first time
(~15 s on a 2-core VM) into ``<cache>/kernels/<hash>/``, the hash covering the sources, the mlx,
nanobind and Python versions and the platform, then loads the module. Linux x86_64 only: on macOS
MLX's Metal and Accelerate paths are used, and nothing is built. The ``device.cpu_kernels``
setting turns them off (``cpu_kernels_for``).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import mlx.core as mx
import mlx.nn as nn

from pensieve.core.config import DeviceSettings
from pensieve.core.paths import default_cache_dir
from pensieve.device.configure import DeviceInfo

__all__ = ["CpuKernels", "PreparedWeights", "cpu_kernels", "cpu_kernels_for"]

logger = logging.getLogger(__name__)

_SOURCES = Path(__file__).parent / "_kernels"
_MODULE = "_pensieve_kernels"
_BITS = (4, 8)
_GROUP_SIZES = (32, 64, 128)
_PACKED_TILE = 8  # output columns per tile of the packed layout (qmm_kernel.h)
_BUILD_TIMEOUT_S = 900
_LOG_TAIL_LINES = 40


class CpuKernels:
    """The compiled extension. Each op runs it when it supports the inputs, else MLX's own."""

    def __init__(self, module: ModuleType, path: Path) -> None:
        self._module = module
        self.path = path
        """The loaded shared library."""
        self.simd: str = module.simd()
        """``avx2``, or ``scalar`` on a CPU without AVX2/FMA: a portable kernel, still ~2x MLX's own."""

    @property
    def description(self) -> str:
        """For the device report: ``avx2 quantized matmul, decode attention, swiglu, rope``."""
        return f"{self.simd} quantized matmul, decode attention, swiglu, rope"

    def supports(self, *, group_size: int, bits: int) -> bool:
        """Whether the kernel (not MLX's fallback) multiplies float32 inputs of this quantization."""
        return bits in _BITS and group_size in _GROUP_SIZES

    def quantized_matmul(
        self, x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, *, group_size: int, bits: int
    ) -> mx.array:
        """``mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=..., bits=...)``.

        The kernel takes float32 x, scales and biases, bits 4 or 8 and group sizes 32, 64 and 128 on a
        CPU stream; anything else (or anything it rejects) goes to MLX.
        """
        if (
            x.dtype == mx.float32
            and scales.dtype == mx.float32
            and biases.dtype == mx.float32
            and self.supports(group_size=group_size, bits=bits)
        ):
            try:
                return self._module.quantized_matmul(x, w, scales, biases, group_size, bits)
            except ValueError:
                pass  # shapes or device it does not handle: MLX computes it, or raises its own error
        return mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=group_size, bits=bits)

    def prepare(
        self, w: mx.array, scales: mx.array, biases: mx.array, *, group_size: int, bits: int
    ) -> PreparedWeights:
        """Weights as the kernels multiply them fastest: see ``PreparedWeights``."""
        return PreparedWeights(self._module, w, scales, biases, group_size=group_size, bits=bits)

    def swiglu(self, gate: mx.array, x: mx.array) -> mx.array:
        """``silu(gate) * x``, as mlx-lm's MLP blocks compute it between their projections.

        The kernel takes float32 arrays of one shape; anything else goes to MLX. MLX's CPU
        sigmoid computes one exp at a time: 8.3 ms per decode step of 8 sequences on the default
        model's 30 layers, ~0.3 in the kernel.
        """
        try:
            return self._module.swiglu(gate, x)
        except ValueError:
            return nn.silu(gate) * x

    def rope(
        self, x: mx.array, dims: int, *, traditional: bool, base: float, scale: float, offset: int | mx.array
    ) -> mx.array:
        """``mx.fast.rope(x, dims, traditional=..., base=..., scale=..., offset=...)``.

        The kernel takes a float32 ``[B, H, L, D]`` x and an integer offset, one for all or one per
        sequence; anything else goes to MLX, whose CPU path spends ~90 us per call of a decode step
        on separate ops (two calls per layer: ~5 ms of the default model's step at any batch).
        """
        try:
            positions = offset if isinstance(offset, mx.array) else mx.array(offset, dtype=mx.int32)
            return self._module.rope(x, dims, traditional, base, scale, positions)
        except ValueError:
            return mx.fast.rope(x, dims, traditional=traditional, base=base, scale=scale, offset=offset)

    def decode_attention(
        self, q: mx.array, k: mx.array, v: mx.array, *, scale: float, mask: mx.array | None = None
    ) -> mx.array:
        """``mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)``.

        The kernel takes one float32 query position per sequence (q ``[B, Hq, 1, D]``, k and v
        ``[B, Hkv, L, D]``, grouped query heads allowed, k and v possibly slices of a KV cache)
        and a bool or float32 mask broadcastable to ``[B, Hq, 1, L]``; anything else goes to MLX.
        MLX's CPU path runs it as separate matmul, mask and softmax ops, ~10x slower at batch 8.
        """
        try:
            return self._module.decode_attention(q, k, v, scale, mask)
        except ValueError:
            return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


class PreparedWeights:
    """Affine-quantized weights in both of the kernel's layouts, multiplied through the faster one.

    One row (a decode step of one sequence) reads MLX's own layout row by row, at the memory
    bound. Several rows read a packed copy that interleaves the weights of eight output columns
    (``_kernels/qmm_kernel.h``), so one dequantized vector serves every row: at 8 rows ~1.3x the
    throughput of dequantizing into a scratch tile. The copy costs the quantized size once more.
    """

    def __init__(
        self, module: ModuleType, w: mx.array, scales: mx.array, biases: mx.array, *, group_size: int, bits: int
    ) -> None:
        self._module = module
        self.group_size, self.bits = group_size, bits
        self.weight, self.scales, self.biases = w, scales, biases
        self.columns = w.shape[0]
        self.packed = tuple(_tiled(a) for a in (w, scales, biases))
        mx.eval(self.packed)

    @property
    def nbytes(self) -> int:
        """Bytes of the packed copy (MLX's layout is the caller's own arrays)."""
        return sum(a.nbytes for a in self.packed)

    def matmul(self, x: mx.array) -> mx.array:
        """``x @ W.T`` for the dequantized W, as ``mx.quantized_matmul`` computes it."""
        try:
            if x.size // x.shape[-1] == 1:
                return self._module.quantized_matmul(
                    x, self.weight, self.scales, self.biases, self.group_size, self.bits
                )
            return self._module.packed_quantized_matmul(x, *self.packed, self.columns, self.group_size, self.bits)
        except ValueError:
            return mx.quantized_matmul(
                x, self.weight, self.scales, self.biases, transpose=True, group_size=self.group_size, bits=self.bits
            )


def _tiled(a: mx.array) -> mx.array:
    """``[n, m]`` as ``[ceil(n / 8), m, 8]``: tile t, lane c holds row 8t + c (zero past n)."""
    pad = -a.shape[0] % _PACKED_TILE
    if pad:
        a = mx.concatenate([a, mx.zeros((pad, a.shape[1]), dtype=a.dtype)])
    return mx.contiguous(a.reshape(-1, _PACKED_TILE, a.shape[1]).transpose(0, 2, 1))


_lock = threading.Lock()
_loaded = False
_kernels: CpuKernels | None = None


def cpu_kernels_for(settings: DeviceSettings, device: DeviceInfo) -> CpuKernels | None:
    """The kernels a model on ``device`` runs with: None on a GPU or when ``settings.cpu_kernels``
    is off, else ``cpu_kernels()``. The build goes to the user's cache, not ``settings.cache_dir``
    (a directory for converted weights, often per model or per test): one build serves every use."""
    if device.backend != "cpu" or not settings.cpu_kernels:
        return None
    return cpu_kernels()


def cpu_kernels(cache_dir: str | os.PathLike[str] | None = None) -> CpuKernels | None:
    """The kernels, built on first use (once for all processes sharing the cache); None when unavailable.

    Unavailable (one log line says why): the platform is not Linux x86_64, cmake or a C++
    compiler is missing, the build fails, or the built module disagrees with
    ``mx.quantized_matmul``. The first call's answer holds for the whole process; ``cache_dir``
    defaults to ``pensieve.core.default_cache_dir()``.
    """
    global _loaded, _kernels
    with _lock:
        if not _loaded:
            _kernels = _load(Path(cache_dir) if cache_dir is not None else default_cache_dir())
            _loaded = True
        return _kernels


def _reset_for_tests() -> None:
    """Forget this process's answer so the next ``cpu_kernels`` call decides again."""
    global _loaded, _kernels
    with _lock:
        _loaded = False
        _kernels = None


def _load(cache_dir: Path) -> CpuKernels | None:
    reason = _unavailable()
    if reason is not None:
        logger.info("CPU kernels not used: %s", reason)
        return None
    try:
        path = _built_module(cache_dir / "kernels")
    except (_BuildError, OSError) as exc:
        logger.warning("CPU kernels not used: %s", exc)
        return None
    try:
        module = _import(path)
        kernels = CpuKernels(module, path)
        error = _self_check(kernels)
    except Exception as exc:  # a module that does not load or run is reported, never raised
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        logger.warning("CPU kernels not used: self-check of %s failed: %s", path, error)
        return None
    return kernels


def _unavailable() -> str | None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"built only on Linux x86_64, not {sys.platform} {platform.machine()}"
    if shutil.which("cmake") is None:
        return "cmake is not on PATH"
    if _compiler() is None:
        return "no C++ compiler on PATH (set CXX or install g++ or clang++)"
    try:
        importlib.metadata.version("nanobind")
    except importlib.metadata.PackageNotFoundError:
        return "nanobind is not installed"
    return None


def _compiler() -> str | None:
    explicit = os.environ.get("CXX")
    if explicit:
        return shutil.which(explicit)
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


class _BuildError(Exception):
    pass


def _build_key() -> str:
    """What the compiled module depends on: sources, mlx, nanobind, Python and platform."""
    digest = hashlib.sha256()
    for source in sorted(p for p in _SOURCES.iterdir() if p.is_file()):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    for part in (
        mx.__version__,
        str(_mlx_dir()),
        importlib.metadata.version("nanobind"),
        sys.version,
        sysconfig.get_config_var("EXT_SUFFIX") or "",
        sys.platform,
        platform.machine(),
        os.environ.get("CXX", ""),
    ):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def _mlx_dir() -> Path:
    return Path(mx.__file__).resolve().parent


def _find_module(directory: Path) -> Path | None:
    return next(iter(sorted(directory.glob(f"{_MODULE}*.so"))), None)


def _built_module(root: Path) -> Path:
    """The module for this build key under root, building it (once across processes) if missing."""
    final = root / _build_key()
    found = _find_module(final) if final.is_dir() else None
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # a second process waits here, then finds the build
        found = _find_module(final) if final.is_dir() else None
        if found is not None:
            return found
        for stale in root.glob(f".{final.name}.tmp-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        try:
            _build(staging)
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():  # else another process won the race: use its build
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    found = _find_module(final)
    if found is None:
        raise _BuildError(f"the build in {final} produced no {_MODULE} module")
    return found


def _build(out_dir: Path) -> None:
    """Configure and build with CMake in out_dir/build, leaving the module and build.log in out_dir."""
    import nanobind

    logger.info("building Pensieve CPU kernels (first use, ~15 s) into %s", out_dir.parent)
    build_dir = out_dir / "build"
    configure = [
        "cmake",
        "-S",
        str(_SOURCES),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-Dnanobind_DIR={nanobind.cmake_dir()}",
        f"-DMLX_DIR={_mlx_dir() / 'share' / 'cmake' / 'MLX'}",
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
        f"-DCMAKE_CXX_COMPILER={_compiler()}",
    ]
    if shutil.which("ninja") is not None:
        configure.append("-GNinja")
    compile_ = ["cmake", "--build", str(build_dir), "--parallel", str(os.cpu_count() or 1)]
    log: list[str] = []
    try:
        for command in (configure, compile_):
            log.append("$ " + " ".join(command))
            result = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_BUILD_TIMEOUT_S,
                check=False,
            )
            log.append(result.stdout)
            if result.returncode != 0:
                tail = "\n".join("\n".join(log).splitlines()[-_LOG_TAIL_LINES:])
                step = "configure" if command is configure else "build"
                raise _BuildError(f"cmake {step} failed (exit {result.returncode}):\n{tail}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _BuildError(f"building the kernels failed: {exc}") from exc
    finally:
        (out_dir / "build.log").write_text("\n".join(log))
    shutil.rmtree(build_dir, ignore_errors=True)


def _import(path: Path) -> ModuleType:
    # mlx.core is imported above: it registers the array and stream types the module's functions take.
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _self_check(kernels: CpuKernels) -> str | None:
    """None when the module agrees with ``mx.quantized_matmul``, else what went wrong.

    Catches builds that load but cannot work, e.g. against another nanobind ABI, where every call
    raises TypeError.
    """
    cpu = mx.cpu
    key_x, key_w = mx.random.split(mx.random.key(0), stream=cpu)
    x = mx.random.normal((3, 256), key=key_x, stream=cpu)
    weights = mx.random.normal((64, 256), key=key_w, stream=cpu)
    w, scales, biases = mx.quantize(weights, group_size=64, bits=4, stream=cpu)
    want = mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=64, bits=4, stream=cpu)
    got = kernels._module.quantized_matmul(x, w, scales, biases, 64, 4, stream=cpu)
    error = (mx.abs(got - want).max() / mx.abs(want).max()).item()
    return None if error < 1e-5 else f"relative error {error:.2e} against mx.quantized_matmul"

"""The BLAS loader: which library MLX's CPU matmuls really call, checked from MKL's own call log.

``MKL_VERBOSE=1`` makes oneMKL print one line per BLAS call it serves, so a matmul that reaches
MKL (rather than mlx's bundled netlib copy) shows up as an ``SGEMM`` line.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from pensieve.device import BlasLibrary, load_blas, probe_device

MATMUL = "import mlx.core as mx; mx.set_default_device(mx.cpu); a = mx.ones((64, 64)); mx.eval(a @ a)"


def _has_mkl() -> bool:
    try:
        importlib.metadata.version("mkl")
    except importlib.metadata.PackageNotFoundError:
        return False
    return sys.platform == "linux" and platform.machine() == "x86_64"


needs_mkl = pytest.mark.skipif(not _has_mkl(), reason="the mkl wheel is a dependency on Linux x86_64 only")


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PENSIEVE_BLAS", "MKL_VERBOSE")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**environment, "MKL_VERBOSE": "1", **env},
    )


def test_load_blas_is_decided_once_per_process() -> None:
    assert load_blas() is load_blas()


def test_the_device_report_names_the_loaded_blas() -> None:
    blas, report = load_blas(), probe_device()
    assert (report.blas, report.blas_optimized) == (blas.name, blas.optimized)


@needs_mkl
def test_mkl_from_the_wheel_is_loaded_by_default() -> None:
    blas = load_blas()
    assert blas.name == f"mkl {importlib.metadata.version('mkl')}"
    assert blas.optimized
    assert blas.path is not None and Path(blas.path).name.startswith("libmkl_rt.so")


@needs_mkl
def test_mlx_matmuls_reach_mkl_after_importing_the_engine() -> None:
    result = _run(f"import pensieve.engine; {MATMUL}")
    assert "SGEMM(N,N,64,64,64" in result.stdout


@needs_mkl
def test_mlx_imported_first_keeps_the_reference_blas_and_says_so() -> None:
    # Python loads mlx with RTLD_NOW: cblas_sgemm is bound at import, before any later BLAS.
    result = _run(
        f"import mlx.core; from pensieve.device import load_blas; print(load_blas().name); {MATMUL}"
    )
    assert result.stdout.splitlines() == ["reference"]  # and no MKL call was logged
    assert "imported before pensieve.device" in result.stderr


@needs_mkl
def test_reference_keeps_mlx_own_blas() -> None:
    result = _run(
        f"from pensieve.device import load_blas; print(load_blas().name); {MATMUL}", PENSIEVE_BLAS="reference"
    )
    assert result.stdout.splitlines() == ["reference"]  # and no MKL call was logged


def test_an_unloadable_explicit_blas_falls_back_to_the_reference(tmp_path: Path) -> None:
    missing = tmp_path / "libopenblas.so.0"
    result = _run("from pensieve.device import load_blas; print(load_blas())", PENSIEVE_BLAS=str(missing))
    assert result.stdout.strip() == repr(BlasLibrary(name="reference", optimized=False))
    assert "cannot be loaded" in result.stderr

"""Loading an optimized BLAS for MLX's CPU backend, before anything multiplies a matrix.

The Linux ``mlx[cpu]`` wheel links the netlib reference BLAS it bundles (``mlx_cpu.libs/libblas-*``)
and calls its ``cblas_sgemm`` for every float32 matmul. The dynamic linker resolves that symbol
through the process's global scope first, so a BLAS loaded with ``RTLD_GLOBAL`` before mlx is
imported takes over every call. Python opens extension modules with ``RTLD_NOW``, so the symbol
is bound when ``mlx.core`` is imported: loading a BLAS after that changes nothing, and
``load_blas`` then reports the reference BLAS.

Candidates, first found wins:

1. ``PENSIEVE_BLAS``: ``reference`` keeps mlx's own BLAS; a path loads that library.
2. Intel oneMKL's ``libmkl_rt`` from the ``mkl`` wheel (a dependency on Linux x86_64).
3. A system OpenBLAS or BLIS that the dynamic linker knows (e.g. Debian's ``libopenblas0-pthread``).

On macOS mlx links Accelerate and nothing is loaded. ``pensieve.device`` calls ``load_blas`` when
it is imported; the engine imports ``pensieve.device`` before mlx.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

import msgspec

__all__ = ["BlasLibrary", "load_blas"]

logger = logging.getLogger(__name__)

_ENV = "PENSIEVE_BLAS"
_REFERENCE = "reference"


class BlasLibrary(msgspec.Struct, frozen=True, kw_only=True):
    """The BLAS behind MLX's CPU matmuls in this process."""

    name: str
    """``mkl 2026.2.0``, ``openblas``, ``blis``, ``accelerate``, or ``reference`` (mlx's netlib copy)."""
    path: str | None = None
    optimized: bool
    """False for the reference BLAS: float32 matmuls are then no faster than MLX's quantized kernels."""


_loaded: BlasLibrary | None = None


def load_blas() -> BlasLibrary:
    """Load the best BLAS available (once per process) and return what MLX will call."""
    global _loaded
    if _loaded is None:
        _loaded = _choose()
        logger.info("BLAS for MLX's CPU backend: %s", _loaded.name)
    return _loaded


def _choose() -> BlasLibrary:
    if sys.platform == "darwin":
        return BlasLibrary(name="accelerate", optimized=True)
    if not sys.platform.startswith("linux"):
        return _reference()
    explicit = os.environ.get(_ENV, "").strip()
    if explicit == _REFERENCE:
        return _reference()
    if "mlx.core" in sys.modules:
        logger.warning("mlx was imported before pensieve.device: its matmuls stay on the reference BLAS")
        return _reference()
    if explicit:
        library = _open(Path(explicit), _name_of(Path(explicit)))
        if library is None:
            logger.warning("%s=%s cannot be loaded; using mlx's reference BLAS", _ENV, explicit)
            return _reference()
        return library
    for candidate in (_mkl, _system):
        library = candidate()
        if library is not None:
            return library
    return _reference()


def _reference() -> BlasLibrary:
    return BlasLibrary(name=_REFERENCE, optimized=False)


def _mkl() -> BlasLibrary | None:
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    name = f"mkl {importlib.metadata.version('mkl')}"
    for file in files:
        if file.name.startswith("libmkl_rt.so"):
            library = _open(Path(str(file.locate())).resolve(), name)
            if library is not None:
                return library
    return None


def _system() -> BlasLibrary | None:
    for name in ("openblas", "blis"):
        found = ctypes.util.find_library(name)
        if found:
            library = _open(Path(found), name)
            if library is not None:
                return library
    return None


def _open(path: Path, name: str) -> BlasLibrary | None:
    """Load ``path`` into the global symbol scope if it exports the CBLAS interface MLX calls."""
    try:
        handle = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        logger.warning("cannot load BLAS %s: %s", path, exc)
        return None
    if not hasattr(handle, "cblas_sgemm"):
        logger.warning("%s does not export cblas_sgemm; not using it", path)
        return None
    return BlasLibrary(name=name, path=str(path), optimized=True)


def _name_of(path: Path) -> str:
    stem = path.name.lower()
    for name in ("mkl", "openblas", "blis"):
        if name in stem:
            return name
    return stem.split(".so")[0].removeprefix("lib")

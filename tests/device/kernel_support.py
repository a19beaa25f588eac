"""What the kernel tests share besides fixtures (those are in conftest.py): whether the kernels
can be built here, the instruction sets below this CPU's best, and a way to run those."""

from __future__ import annotations

import platform
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pensieve.device.kernels import CpuKernels


def buildable() -> bool:
    return (
        sys.platform == "linux"
        and platform.machine() == "x86_64"
        and shutil.which("cmake") is not None
        and any(shutil.which(name) for name in ("c++", "g++", "clang++"))
    )


requires_kernels = pytest.mark.skipif(
    not buildable(), reason="the CPU kernels are built only on Linux x86_64 with cmake and a C++ compiler"
)


def cpu_simd() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    if not {"avx2", "fma"} <= flags:
        return "scalar"
    return "avx512" if {"avx512f", "avx512vl"} <= flags else "avx2"


# The instruction sets below this CPU's best, which tests switch to through the module's hook.
LOWER_SIMD = {"avx512": ["avx2", "scalar"], "avx2": ["scalar"], "scalar": []}[cpu_simd()] if buildable() else []


@contextmanager
def simd_capped(kernels: CpuKernels, level: str) -> Iterator[None]:
    """Run the kernels of a lower instruction set, as a CPU without the better ones would."""
    kernels._module.use_simd(level)
    try:
        assert kernels._module.simd() == level
        yield
    finally:
        kernels._module.use_simd("avx512")

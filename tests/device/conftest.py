"""The kernel tests' build: made once per session into a temporary cache (a cold build takes
~15-20 s on 2 cores), shared by every test module that asks for ``kernels``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pensieve.device import kernels as kernels_module
from pensieve.device.kernels import CpuKernels, cpu_kernels


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel-cache")


@pytest.fixture(scope="session")
def kernels(kernel_cache: Path) -> Iterator[CpuKernels]:
    kernels_module._reset_for_tests()
    built = cpu_kernels(kernel_cache)
    if built is None:
        pytest.fail("cpu_kernels() returned None on Linux x86_64 with cmake and a compiler; see the log")
    yield built
    kernels_module._reset_for_tests()

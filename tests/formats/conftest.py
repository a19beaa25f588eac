"""Fixtures: synthetic GGUF files written once per session, and the real default model file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pensieve.formats import GGUFFile, default_model_path, open_gguf
from tests.support.gguf_factory import MIXED_TYPES, write_llama_gguf


@pytest.fixture(scope="session")
def f32_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "f32.gguf")


@pytest.fixture(scope="session")
def mixed_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every supported tensor type, output not tied."""
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "mixed.gguf", tensor_types=MIXED_TYPES)


@pytest.fixture(scope="session")
def mixed(mixed_path: Path) -> GGUFFile:
    return open_gguf(mixed_path)


@pytest.fixture(scope="session")
def smollm2() -> GGUFFile:
    """The embedded SmolLM2-135M-Instruct file, opened (reading its header takes well under a second)."""
    return open_gguf(default_model_path())


@pytest.fixture
def fresh_copy(tmp_path: Path, f32_path: Path) -> Path:
    """A private copy of the F32 file that a test may damage."""
    target = tmp_path / "model.gguf"
    target.write_bytes(f32_path.read_bytes())
    return target

"""Loading refuses bad models with typed errors before any weight reaches MLX."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q

from pensieve.core import DeviceSettings, ModelFileError, ModelTooLargeError, UnsupportedModelError
from pensieve.engine import load_model
from tests.support.gguf_factory import truncate_file, write_llama_gguf

CPU = DeviceSettings(device="cpu")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="missing.gguf"):
        load_model(tmp_path / "missing.gguf", device=CPU)


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelFileError):
        load_model(path, device=CPU)


def test_truncated(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "model.gguf")
    truncate_file(path, path.stat().st_size // 2)
    with pytest.raises(ModelFileError):
        load_model(path, device=CPU)


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "model.gguf", architecture="mamba")
    with pytest.raises(UnsupportedModelError, match="mamba"):
        load_model(path, device=CPU)


def test_unsupported_quant_type(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "model.gguf", tensor_types={"blk.0.attn_q.weight": Q.IQ2_XXS})
    with pytest.raises(UnsupportedModelError, match="IQ2_XXS"):
        load_model(path, device=CPU)


def test_model_too_big_for_the_budget(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "model.gguf")
    with pytest.raises(ModelTooLargeError, match="memory budget") as caught:
        load_model(path, device=DeviceSettings(device="cpu", memory_limit_bytes=1024 * 1024))
    assert caught.value.required_bytes > caught.value.budget_bytes == 1024 * 1024

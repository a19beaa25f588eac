"""``pensieve-cli convert``: writes a directory mlx-lm loads, refuses what it must, one-line errors."""

from __future__ import annotations

from pathlib import Path

import mlx_lm
import pytest
from click.testing import CliRunner

from pensieve.cli import main
from tests.support.gguf_factory import write_llama_gguf


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PENSIEVE_CACHE_DIR", str(tmp_path / "cache"))


def test_convert_writes_a_directory_mlx_lm_loads(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "mlx"
    result = CliRunner().invoke(main, ["convert", str(path), str(out)])
    assert result.exit_code == 0, result.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert f"  {name} (" in result.output
    assert f'mlx_lm.load("{out}")' in result.output
    _model, tokenizer = mlx_lm.load(str(out))
    assert tokenizer.chat_template is not None


def test_a_non_empty_directory_needs_force(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "mlx"
    assert CliRunner().invoke(main, ["convert", str(path), str(out)]).exit_code == 0
    refused = CliRunner().invoke(main, ["convert", str(path), str(out)])
    assert refused.exit_code == 1
    assert "Error:" in refused.output and "not empty" in refused.output
    assert "Traceback" not in refused.output
    forced = CliRunner().invoke(main, ["convert", "--force", "--dequantize", str(path), str(out)])
    assert forced.exit_code == 0, forced.output


def test_a_missing_model_file_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "missing.gguf"), str(tmp_path / "mlx")])
    assert result.exit_code == 1
    assert "no such model file" in result.output
    assert not (tmp_path / "mlx").exists()

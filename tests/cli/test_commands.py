"""pensieve-cli commands that need no running server: help, version, validate, models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pensieve.cli import main

CLI = str(Path(sys.executable).with_name("pensieve-cli"))


def test_entry_point_help_lists_every_command() -> None:
    result = subprocess.run([CLI, "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("start", "stop", "status", "validate", "models"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["start", "stop", "status", "validate", "models"])
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: main " + command in result.output or f"{command} [OPTIONS]" in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "pensieve-cli, version 0.1.0" in result.output


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("good.toml", '[server]\nport = 9000\napi_keys = ["k1"]\n\n[limits]\nmax_body_bytes = 1048576\n'),
        (
            "good.json",
            json.dumps({"server": {"host": "127.0.0.1", "port": 9001}, "device": {"device": "cpu"}}),
        ),
    ],
)
def test_validate_accepts_a_good_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[server]\nport = 70000\nbogus = 1\n\n"
        "[limits]\nmax_body_bytes = 0\n\n"
        '[model]\npath = "/nonexistent/model.gguf"\n\n'
        '[device]\ndevice = "tpu"\n\n'
        "[nope]\nx = 1\n"
    )
    result = CliRunner().invoke(main, ["validate", "--config", str(path)])
    assert result.exit_code == 1
    for key in (
        "nope",
        "server.port",
        "server.bogus",
        "limits.max_body_bytes",
        "device.device",
        "model.path",
    ):
        assert f"  - {key}: " in result.output, (key, result.output)
    assert "6 problem(s)" in result.output


def test_validate_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    path = tmp_path / "public.json"
    path.write_text(json.dumps({"server": {"host": "0.0.0.0"}}))
    result = CliRunner().invoke(main, ["validate", "--config", str(path)])
    assert result.exit_code == 1
    assert "  - server.api_keys: " in result.output


def test_validate_reports_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    result = CliRunner().invoke(main, ["validate", "--config", str(path)])
    assert result.exit_code == 1
    assert "<file>" in result.output


def test_models_describes_the_default_model(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[model]\naliases = ["local"]\ncontext_length = 2048\n')
    result = CliRunner().invoke(main, ["models", "--config", str(path)])
    assert result.exit_code == 0, result.output
    rows = dict(line.split(None, 1) for line in result.output.splitlines())
    assert rows["architecture"] == "llama"
    assert rows["quantization"] == "Q4_1"
    assert rows["aliases"] == "local"
    assert rows["context"] == "2048 tokens (model: 8192)"
    assert rows["path"].endswith(".gguf") and Path(rows["path"]).is_file()
    assert rows["size"].endswith("MB") or rows["size"].endswith("MiB")


def test_models_reports_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["models", "--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 1
    assert "Error:" in result.output

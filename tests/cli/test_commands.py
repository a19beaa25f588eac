"""pensieve-cli commands that need no running server: help, version, validate, models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pensieve.cli import main
from tests.support.models_dir import write_models_dir
from tests.support.ports import free_port

CLI = str(Path(sys.executable).with_name("pensieve-cli"))


def test_entry_point_help_lists_every_command() -> None:
    result = subprocess.run([CLI, "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("start", "stop", "status", "validate", "models", "ps"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["start", "stop", "status", "validate", "models", "ps"])
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


def test_models_lists_the_default_bundled_and_directory_models(tmp_path: Path) -> None:
    models = write_models_dir(tmp_path / "models", ("beta",))
    path = tmp_path / "config.toml"
    path.write_text(f'[model]\naliases = ["local"]\ncontext_length = 2048\ndirectory = "{models}"\n')
    result = CliRunner().invoke(main, ["models", "--config", str(path), "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Models directory: {models}"
    assert lines[1].split() == ["NAME", "ARCHITECTURE", "QUANT", "SIZE", "CONTEXT", "LOADED"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if not line.startswith("Aliases")}
    default = rows["SmolLM2-135M-Instruct.Q4_1"]
    assert default[1:3] == ["(default)", "llama"] and default[3] == "Q4_1"
    assert default[-2:] == ["2048", "no"]  # the configured context; no server runs on that port
    assert rows["beta"][1:3] == ["llama", "F32"] and rows["beta"][-2:] == ["512", "no"]
    assert lines[-1] == "Aliases: local -> SmolLM2-135M-Instruct.Q4_1"


def test_models_reports_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["models", "--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 1
    assert "Error:" in result.output

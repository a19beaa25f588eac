"""The eight layers depend strictly downward, and each package exposes a deliberate public API."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["core", "formats", "device", "api", "engine", "claude", "server", "cli"]


def test_import_linter_layers_contract_holds() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_namespace_package_has_no_init() -> None:
    assert not list(ROOT.glob("packages/*/src/pensieve/__init__.py"))


@pytest.mark.parametrize("name", PACKAGES)
def test_public_api_is_declared_and_importable(name: str) -> None:
    module = importlib.import_module(f"pensieve.{name}")
    assert module.__doc__, f"pensieve.{name} needs a docstring saying what it is for"
    exported = getattr(module, "__all__", None)
    assert exported is not None
    for symbol in exported:
        assert hasattr(module, symbol), f"pensieve.{name}.__all__ names missing {symbol}"

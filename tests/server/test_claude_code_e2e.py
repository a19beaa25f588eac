"""Opt-in: the real Claude Code CLI in print mode against the real server on the default model.

Runs only with ``PENSIEVE_CLAUDE_CODE_E2E=1`` and a ``claude`` binary (on PATH, or named by
``PENSIEVE_CLAUDE_BIN``). Install it with ``npm install -g @anthropic-ai/claude-code`` (the native
binary comes in the platform package, e.g. ``@anthropic-ai/claude-code-linux-x64``). It talks to
nothing but the local server: telemetry and non-essential traffic are off, HOME is a throwaway.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server.conftest import RunningServer

CLAUDE = os.environ.get("PENSIEVE_CLAUDE_BIN") or shutil.which("claude")

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        os.environ.get("PENSIEVE_CLAUDE_CODE_E2E") != "1", reason="set PENSIEVE_CLAUDE_CODE_E2E=1"
    ),
    pytest.mark.skipif(CLAUDE is None, reason="no claude binary (npm install -g @anthropic-ai/claude-code)"),
]


def test_claude_code_print_mode_completes(real_server: RunningServer, tmp_path: Path) -> None:
    assert CLAUDE is not None
    home = tmp_path / "home"
    work = tmp_path / "project"
    home.mkdir()
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_BASE_URL": real_server.base_url,
        "ANTHROPIC_API_KEY": "test-api-key-12345",
    }
    done = subprocess.run(
        [CLAUDE, "-p", "--bare", "--output-format", "json", "Reply with one word: ready"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    result = json.loads(done.stdout)
    assert result["is_error"] is False, result
    assert isinstance(result["result"], str)

"""The engine README's examples run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "packages" / "pensieve-engine" / "README.md"


@pytest.mark.real_model
def test_readme_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 3
    namespace: dict[str, object] = {}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own documentation
    printed = output.getvalue()
    assert "Paris" in printed.splitlines()[0]
    assert re.search(r"\[(end_turn|max_tokens|stop_sequence)\]$", printed.strip())

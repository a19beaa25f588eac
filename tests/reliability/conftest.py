"""The long fuzz run (``fuzz_long``) is skipped unless asked for.

Ask with ``PENSIEVE_FUZZ_LONG=1`` or by selecting the marker (``pytest -m fuzz_long``); a
plain ``pytest`` skips it.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = (
        os.environ.get("PENSIEVE_FUZZ_LONG") == "1" or (config.getoption("markexpr") or "") == "fuzz_long"
    )
    if wanted:
        return
    skip = pytest.mark.skip(reason="the long fuzz run: PENSIEVE_FUZZ_LONG=1 or -m fuzz_long runs it")
    for item in items:
        if item.get_closest_marker("fuzz_long") is not None:
            item.add_marker(skip)

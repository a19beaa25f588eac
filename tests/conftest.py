"""Shared fixtures: the real default model is loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pensieve.engine import LocalModel, load_model


@pytest.fixture(scope="session")
def default_model() -> Iterator[LocalModel]:
    """The embedded SmolLM2-135M-Instruct, loaded once; tests must keep outputs short (<= 32 tokens)."""
    yield load_model()

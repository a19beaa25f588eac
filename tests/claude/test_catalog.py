"""ModelCatalog: names, aliases (mapping and list forms) and claude-* names over a model source."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from pensieve.claude import ModelCatalog
from pensieve.core.errors import ConfigError, NotFoundError
from pensieve.core.protocols import GenerationBackend, ModelInfo
from tests.server.fakes import FakeBackend


class TwoModels:
    """A ModelSource of two fake backends that records which names it was asked to load."""

    def __init__(self) -> None:
        self.backends = {name: _fake(name) for name in ("small", "large")}
        self.acquired: list[str] = []

    @property
    def default(self) -> str:
        return "small"

    def names(self) -> list[str]:
        return list(self.backends)

    def describe(self, name: str) -> ModelInfo:
        return self.backends[name].info

    async def acquire(self, name: str) -> GenerationBackend:
        self.acquired.append(name)
        return self.backends[name]


def _fake(name: str) -> FakeBackend:
    backend = FakeBackend()
    backend.info = msgspec.structs.replace(backend.info, id=name, display_name=name.title())
    return backend


def test_names_aliases_and_claude_names_resolve_to_their_models() -> None:
    source = TwoModels()
    catalog = ModelCatalog(source, aliases={"claude-opus-4-1": "large", "big": "large"})
    assert [catalog.model_name(n) for n in ("small", "large", "big", "claude-opus-4-1")] == [
        "small",
        "large",
        "large",
        "large",
    ]
    assert catalog.model_name("claude-sonnet-4-5") == "small"  # unmapped claude-* → the default
    assert asyncio.run(catalog.resolve("big")) is source.backends["large"]
    assert source.acquired == ["large"]
    with pytest.raises(NotFoundError, match="model: gpt-4"):
        catalog.model_name("gpt-4")


def test_listed_names_are_the_models_then_the_aliases() -> None:
    catalog = ModelCatalog(TwoModels(), aliases={"big": "large", "small": "large"})
    # An alias named like a model is dropped: the model's own name wins.
    assert [(name, info.id) for name, info in catalog.served_names()] == [
        ("small", "small"),
        ("large", "large"),
        ("big", "large"),
    ]


def test_list_form_aliases_name_the_default_model() -> None:
    catalog = ModelCatalog(TwoModels(), aliases=["local"])
    assert catalog.model_name("local") == "small"


def test_an_alias_of_an_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.aliases\.fast: no model named 'tiny'"):
        ModelCatalog(TwoModels(), aliases={"fast": "tiny"})


def test_a_single_backend_is_a_catalog_of_one() -> None:
    backend = _fake("only")
    catalog = ModelCatalog(backend, aliases=["mine"])
    assert asyncio.run(catalog.resolve("mine")) is backend
    assert [name for name, _ in catalog.served_names()] == ["only", "mine"]

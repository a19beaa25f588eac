"""Model names as clients send them, mapped to the models this server runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from pensieve.core.errors import ConfigError, ConfigProblem, NotFoundError
from pensieve.core.protocols import GenerationBackend, ModelInfo

__all__ = ["ModelCatalog", "ModelSource"]


@runtime_checkable
class ModelSource(Protocol):
    """Models by name, loaded when asked for (``pensieve.engine.ModelPool`` is one)."""

    @property
    def default(self) -> str: ...

    def names(self) -> list[str]:
        """The servable models' names, the default first."""
        ...

    def describe(self, name: str) -> ModelInfo:
        """What is known about ``name`` without loading it."""
        ...

    async def acquire(self, name: str) -> GenerationBackend:
        """``name``'s backend, loaded; it stays loaded for the streams admitted before the next await."""
        ...


class _OneModel:
    """A single backend as a source: the catalog of a server (or test) with one model."""

    def __init__(self, backend: GenerationBackend) -> None:
        self._backend = backend

    @property
    def default(self) -> str:
        return self._backend.info.id

    def names(self) -> list[str]:
        return [self.default]

    def describe(self, name: str) -> ModelInfo:
        return self._backend.info

    async def acquire(self, name: str) -> GenerationBackend:
        return self._backend


class ModelCatalog:
    """Resolves a requested model name to a model of ``models`` (a ModelSource, or one backend).

    A name resolves when it is a model's name, a configured alias, or any ``claude-*`` name that
    no alias maps (clients such as Claude Code ask for Anthropic model names; the default model
    answers them). ``aliases`` maps names to model names; a plain list names aliases of the
    default model. Responses echo the requested name, not the resolved one.
    """

    def __init__(
        self, models: ModelSource | GenerationBackend, aliases: Mapping[str, str] | Sequence[str] = ()
    ) -> None:
        self._models: ModelSource = models if isinstance(models, ModelSource) else _OneModel(models)
        names = self._models.names()
        default = self._models.default
        targets = dict(aliases) if isinstance(aliases, Mapping) else dict.fromkeys(aliases, default)
        unknown = [
            ConfigProblem(f"model.aliases.{alias}", f"no model named {target!r} (models: {', '.join(names)})")
            for alias, target in targets.items()
            if target not in names
        ]
        if unknown:
            raise ConfigError(unknown)
        self._aliases = {alias: target for alias, target in targets.items() if alias not in names}

    @property
    def models(self) -> ModelSource:
        return self._models

    def model_name(self, requested: str) -> str:
        """The name of the model that answers ``requested``; NotFoundError if none does."""
        if requested in self._aliases:
            return self._aliases[requested]
        if requested in self._models.names():
            return requested
        if requested.startswith("claude-"):
            return self._models.default
        raise NotFoundError(f"model: {requested}")

    async def resolve(self, requested: str) -> GenerationBackend:
        """The loaded model answering ``requested`` (loaded now if it was not)."""
        return await self._models.acquire(self.model_name(requested))

    def served_names(self) -> list[tuple[str, ModelInfo]]:
        """Every listed name with the model it serves: the models (default first), then the aliases."""
        models = [(name, self._models.describe(name)) for name in self._models.names()]
        infos = dict(models)
        return [*models, *((alias, infos[target]) for alias, target in self._aliases.items())]

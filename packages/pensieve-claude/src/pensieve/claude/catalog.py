"""Model names as clients send them, mapped to the models this server runs."""

from __future__ import annotations

from collections.abc import Sequence

from pensieve.core.errors import NotFoundError
from pensieve.core.protocols import GenerationBackend, ModelInfo

__all__ = ["ModelCatalog"]


class ModelCatalog:
    """Resolves a requested model name to a loaded model.

    A name resolves when it is a loaded model's id, one of its configured aliases, or any
    ``claude-*`` name (clients such as Claude Code ask for Anthropic model names; the local
    model answers them). Responses echo the requested name, not the resolved one.
    """

    def __init__(self, backend: GenerationBackend, aliases: Sequence[str] = ()) -> None:
        self._backend = backend
        self._aliases = tuple(dict.fromkeys(a for a in aliases if a != backend.info.id))

    @property
    def default(self) -> GenerationBackend:
        return self._backend

    def resolve(self, name: str) -> GenerationBackend:
        if name == self._backend.info.id or name in self._aliases or name.startswith("claude-"):
            return self._backend
        raise NotFoundError(f"model: {name}")

    def served_names(self) -> list[tuple[str, ModelInfo]]:
        """Every listed name with the model it serves: the model id first, then its aliases."""
        info = self._backend.info
        return [(info.id, info), *((alias, info) for alias in self._aliases)]

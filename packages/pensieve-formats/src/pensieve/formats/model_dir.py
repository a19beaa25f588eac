"""Which models a server can serve: the configured default, the bundled ones and the GGUF files
of the models directory, each named, and described from its header without loading it."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from pensieve.core.config import ModelSettings
from pensieve.core.errors import PensieveError
from pensieve.core.protocols import ModelInfo
from pensieve.formats.default_model import bundled_models, default_model_path
from pensieve.formats.gguf_file import open_gguf

__all__ = ["ModelFile", "default_models_dir", "describe_model", "find_models", "models_dir"]


class ModelFile(msgspec.Struct, frozen=True, kw_only=True):
    """One servable file: its name and what its header says, or why it cannot be served."""

    name: str
    path: str
    info: ModelInfo | None
    """None when the file cannot be served; ``problem`` then says why."""
    problem: str | None = None


def default_models_dir() -> Path:
    """``$XDG_DATA_HOME/pensieve/models``, else ``~/.local/share/pensieve/models``.

    A data directory, not a cache one: the user puts models there, and nothing may clear them.
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "pensieve" / "models"


def models_dir(settings: ModelSettings) -> Path:
    """The configured models directory (``model.directory``, ``~`` expanded) or the default one."""
    return Path(settings.directory).expanduser() if settings.directory else default_models_dir()


def find_models(settings: ModelSettings) -> dict[str, Path]:
    """Every servable model file by name, the default model first.

    Names: the default model is ``model.id`` or its file name without ``.gguf``; every other file
    is its file name without ``.gguf``. Then come the bundled models, then the ``*.gguf`` files
    directly in the models directory (sorted; a missing directory has none). A file found twice
    keeps its first name, and a name taken by an earlier file is not reused.
    """
    default = Path(settings.path).expanduser() if settings.path else default_model_path()
    candidates = [(settings.id or _stem(default), default), *bundled_models().items()]
    directory = models_dir(settings)
    if directory.is_dir():
        candidates += [(_stem(path), path) for path in sorted(directory.glob("*.gguf")) if path.is_file()]
    found: dict[str, Path] = {}
    seen: set[Path] = set()
    for name, path in candidates:
        key = path.resolve()
        if name not in found and key not in seen:
            found[name] = path
            seen.add(key)
    return found


def describe_model(name: str, path: Path, context_length: int | None = None) -> ModelFile:
    """What ``path``'s header says about the model served as ``name`` (no weights are read).

    ``context_length`` shortens the model's own context, as loading it would. A file that cannot
    be opened (missing, corrupt, unsupported architecture) is described by its problem instead.
    """
    try:
        gguf = open_gguf(path)
    except PensieveError as exc:
        return ModelFile(name=name, path=str(path), info=None, problem=exc.message)
    spec = gguf.spec
    modified = datetime.fromtimestamp(gguf.path.stat().st_mtime, tz=timezone.utc)
    info = ModelInfo(
        id=name,
        display_name=spec.name or name,
        architecture=spec.architecture,
        quantization=spec.quantization,
        context_length=min(context_length or spec.context_length, spec.context_length),
        parameter_count=spec.parameter_count,
        file_path=str(gguf.path),
        file_size=gguf.file_size,
        created_at=modified.isoformat().replace("+00:00", "Z"),
    )
    return ModelFile(name=name, path=str(gguf.path), info=info)


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gguf")

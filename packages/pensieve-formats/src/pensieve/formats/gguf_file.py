"""Opening a GGUF file: checked header, decoded metadata, tensor table, spec, tokenizer, template."""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats._reader import Header, RawTensor, read_header
from pensieve.formats.chat_template import JinjaChatTemplate, chat_template_from_metadata
from pensieve.formats.layout import FLOAT_TYPES, check_layout
from pensieve.formats.spec import ModelSpec, build_spec
from pensieve.formats.tokenizer import SUPPORTED_TOKENIZER_MODELS, GGUFTokenizer, build_tokenizer

__all__ = ["GGUFFile", "TensorInfo", "open_gguf"]


class TensorInfo(msgspec.Struct, frozen=True):
    """One tensor of the file: its GGUF name, GGML type name, shape (numpy order) and size."""

    name: str
    ggml_type: str
    shape: tuple[int, ...]
    n_bytes: int


class GGUFFile:
    """An opened, checked GGUF model file. Tensor data stays memory-mapped until it is read.

    The file must not be truncated or rewritten while open (as with any memory-mapped file).
    """

    def __init__(self, path: Path, header: Header, fingerprint: str) -> None:
        self._path = path
        self._data = np.memmap(path, dtype=np.uint8, mode="r")
        self._file_size = len(self._data)
        if self._file_size != header.file_size:
            raise ModelFileError(f"{path}: the file changed while it was being opened")
        metadata, tensors = header.metadata, header.tensors
        self._metadata = metadata
        self._raw_tensors = {t.name: t for t in tensors}
        self._fingerprint = fingerprint
        self._tensors = tuple(TensorInfo(t.name, t.ggml_type.name, t.shape, t.n_bytes) for t in tensors)
        types = {t.name: t.ggml_type for t in tensors}
        shapes = {t.name: t.shape for t in tensors}
        self._spec = build_spec(metadata, shapes, types, str(path))
        check_layout(self._spec, shapes, types, str(path))
        model = metadata.get("tokenizer.ggml.model")
        if model not in SUPPORTED_TOKENIZER_MODELS:
            raise UnsupportedModelError(
                f"{path}: tokenizer model {model!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_TOKENIZER_MODELS)})"
            )

    @property
    def path(self) -> Path:
        return self._path

    @property
    def file_size(self) -> int:
        return self._file_size

    @property
    def fingerprint(self) -> str:
        """Identity of this file's contents as opened: path, size, mtime and a hash of the header."""
        return self._fingerprint

    @property
    def metadata(self) -> Mapping[str, Any]:
        """All metadata key/values, decoded to Python values (arrays become lists)."""
        return self._metadata

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def tensors(self) -> tuple[TensorInfo, ...]:
        return self._tensors

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data in the file (the weights' size as stored)."""
        return sum(t.n_bytes for t in self._tensors)

    @property
    def quantized(self) -> bool:
        """Whether any tensor is stored quantized (it loads as MLX's affine quantized layout)."""
        return any(t.ggml_type not in FLOAT_TYPES for t in self._tensors)

    def tensor_type(self, name: str) -> GGMLQuantizationType:
        return self._raw_tensor(name).ggml_type

    def tensor_data(self, name: str) -> np.ndarray:
        """The stored data of tensor ``name``, memory-mapped, as ``gguf.GGUFReader`` presents it:
        F32/F16 as float arrays of the tensor's shape, other types as rows of raw block bytes."""
        tensor = self._raw_tensor(name)
        data = self._data[tensor.offset : tensor.offset + tensor.n_bytes]
        if tensor.ggml_type == GGMLQuantizationType.F32:
            return data.view(np.float32).reshape(tensor.shape)
        if tensor.ggml_type == GGMLQuantizationType.F16:
            return data.view(np.float16).reshape(tensor.shape)
        block_size, type_size = GGML_QUANT_SIZES[tensor.ggml_type]
        return data.reshape(*tensor.shape[:-1], tensor.shape[-1] // block_size * type_size)

    @cached_property
    def _tokenizer(self) -> GGUFTokenizer:
        return build_tokenizer(self._metadata, self._spec, str(self._path))

    def tokenizer(self) -> GGUFTokenizer:
        """The model's tokenizer, built on first use from the vocabulary in the metadata."""
        return self._tokenizer

    def chat_template(self) -> JinjaChatTemplate:
        """The model's chat template (ChatML, marked ``is_fallback``, when the file has none)."""
        return chat_template_from_metadata(self._metadata, str(self._path))

    def _raw_tensor(self, name: str) -> RawTensor:
        try:
            return self._raw_tensors[name]
        except KeyError:
            raise KeyError(f"{self._path} has no tensor {name!r}") from None

    def __repr__(self) -> str:
        return f"GGUFFile({str(self._path)!r}, architecture={self._spec.architecture!r})"


def open_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Open and check a GGUF model file.

    Raises ModelFileError when the file is missing, not a GGUF file, truncated or inconsistent,
    and UnsupportedModelError when it is valid but uses an architecture, tensor type or
    tokenizer Pensieve cannot run.
    """
    resolved = Path(path).expanduser()
    try:
        resolved = resolved.resolve(strict=True)
        stat = resolved.stat()
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: no such model file") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot open the model file: {exc.strerror or exc}") from exc
    if stat_module.S_ISDIR(stat.st_mode):
        raise ModelFileError(f"{resolved}: is a directory, not a GGUF model file")
    if not stat_module.S_ISREG(stat.st_mode):
        raise ModelFileError(f"{resolved}: is not a regular file")
    header = read_header(resolved, stat.st_size)
    identity = f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}\0{header.header_sha256}"
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()
    try:
        return GGUFFile(resolved, header, fingerprint)
    except OSError as exc:
        raise ModelFileError(f"{resolved}: cannot map the model file: {exc.strerror or exc}") from exc

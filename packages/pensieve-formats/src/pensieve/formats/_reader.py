"""A bounds-checked parse of a GGUF header: metadata values and the tensor table.

GGUF files come from the internet, so every length, count, type id and tensor extent is
checked against the file before it is used. This replaces ``gguf.GGUFReader`` for opening files:
that reader trusts lengths (a string longer than the file is silently cut short; a huge array
count loops for a very long time) and parses each of the ~10^5 vocabulary entries through numpy
views, which takes 3-4 s for SmolLM2's header against ~0.05 s here. The ``gguf`` package still
supplies the format constants and, elsewhere, the dequantizers.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from pensieve.core.errors import ModelFileError, UnsupportedModelError

__all__ = ["Header", "RawTensor", "read_header"]

_V = GGUFValueType
_SCALARS: dict[GGUFValueType, str] = {
    _V.UINT8: "<B",
    _V.INT8: "<b",
    _V.BOOL: "<?",
    _V.UINT16: "<H",
    _V.INT16: "<h",
    _V.UINT32: "<I",
    _V.INT32: "<i",
    _V.FLOAT32: "<f",
    _V.UINT64: "<Q",
    _V.INT64: "<q",
    _V.FLOAT64: "<d",
}
_NUMPY_DTYPES = {kind: np.dtype(fmt) for kind, fmt in _SCALARS.items() if kind != _V.BOOL}
_SUPPORTED_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS
# Smallest possible encodings, used to reject counts the remaining bytes cannot hold.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8


class RawTensor(NamedTuple):
    """A tensor's entry in the header: shape in numpy order, absolute byte offset of its data."""

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int
    n_bytes: int


class Header(NamedTuple):
    metadata: dict[str, Any]
    tensors: list[RawTensor]
    header_sha256: str
    file_size: int


class _Cursor:
    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.offset = 0
        self.path = path

    def fail(self, problem: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {problem} (at byte {self.offset} of {self.size})")

    def need(self, count: int, what: str) -> None:
        if self.offset + count > self.size:
            raise self.fail(f"{what} needs {count} bytes but the file ends first (truncated or corrupt)")

    def scalar(self, fmt: str, what: str) -> Any:
        width = struct.calcsize(fmt)
        self.need(width, what)
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += width
        return value

    def text(self, what: str) -> str:
        length: int = self.scalar("<Q", f"length of {what}")
        self.need(length, what)
        data = self.buffer[self.offset : self.offset + length]
        self.offset += length
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8") from exc


def read_header(path: Path, file_size: int) -> Header:
    """Parse and check the header of the GGUF file at ``path``.

    Raises ModelFileError for anything inconsistent with the file, UnsupportedModelError for a
    GGUF version or byte order this reader does not handle.
    """
    if file_size < 24:
        raise ModelFileError(f"{path}: not a GGUF file (only {file_size} bytes)")
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _parse(_Cursor(buffer, path))
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc


def _parse(cur: _Cursor) -> Header:
    if cur.scalar("<I", "magic") != GGUF_MAGIC:
        raise ModelFileError(f"{cur.path}: not a GGUF file (bad magic bytes)")
    version = cur.scalar("<I", "version")
    if version not in _SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0:
            raise UnsupportedModelError(f"{cur.path}: big-endian GGUF files are not supported")
        raise UnsupportedModelError(f"{cur.path}: GGUF version {version} is not supported (supported: 2, 3)")
    tensor_count: int = cur.scalar("<Q", "tensor count")
    kv_count: int = cur.scalar("<Q", "metadata count")
    if kv_count * _MIN_KV_BYTES + tensor_count * _MIN_TENSOR_INFO_BYTES > cur.size - cur.offset:
        raise cur.fail(
            f"the header claims {kv_count} metadata entries and {tensor_count} tensors, more than fit"
        )

    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.text("metadata key")
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        metadata[key] = _value(cur, _value_type(cur, cur.scalar("<I", f"type of {key!r}"), key), key)
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise cur.fail(f"general.alignment {alignment!r} is not a power of two")

    entries = [_tensor_entry(cur) for _ in range(tensor_count)]
    header_end = cur.offset
    data_start = -(-header_end // alignment) * alignment
    tensors: list[RawTensor] = []
    names: set[str] = set()
    for name, ggml_type, shape, relative, n_bytes in entries:
        if name in names:
            raise ModelFileError(f"{cur.path}: tensor {name!r} appears twice")
        names.add(name)
        if relative % alignment:
            raise ModelFileError(
                f"{cur.path}: tensor {name!r} data offset {relative} is not aligned to {alignment}"
            )
        offset = data_start + relative
        if offset + n_bytes > cur.size:
            raise ModelFileError(
                f"{cur.path}: tensor {name!r} data ({n_bytes} bytes at {offset}) lies beyond the end of the "
                f"file ({cur.size} bytes): truncated or corrupt"
            )
        tensors.append(RawTensor(name, ggml_type, shape, offset, n_bytes))
    digest = hashlib.sha256(cur.buffer[:header_end]).hexdigest()
    return Header(metadata, tensors, digest, cur.size)


def _value_type(cur: _Cursor, raw: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError as exc:
        raise cur.fail(f"metadata {key!r} has unknown value type {raw}") from exc


def _value(cur: _Cursor, kind: GGUFValueType, key: str) -> Any:
    if kind == _V.STRING:
        return cur.text(f"string value of {key!r}")
    if kind != _V.ARRAY:
        return cur.scalar(_SCALARS[kind], f"value of {key!r}")
    item_kind = _value_type(cur, cur.scalar("<I", f"item type of {key!r}"), key)
    count: int = cur.scalar("<Q", f"length of array {key!r}")
    if item_kind == _V.ARRAY:
        raise cur.fail(f"metadata {key!r} is an array of arrays, which GGUF readers do not support")
    if item_kind == _V.STRING:
        return _strings(cur, count, key)
    width = struct.calcsize(_SCALARS[item_kind]) * count
    cur.need(width, f"{count} items of {key!r}")
    data = np.frombuffer(cur.buffer, dtype=np.uint8, count=width, offset=cur.offset)
    cur.offset += width
    if item_kind == _V.BOOL:
        return (data != 0).tolist()
    values: list[Any] = data.view(_NUMPY_DTYPES[item_kind]).tolist()
    return values


_LENGTH = struct.Struct("<Q")


def _strings(cur: _Cursor, count: int, key: str) -> list[str]:
    # Vocabularies hold ~10^5 strings: one tight loop rather than a method call per item.
    cur.need(count * 8, f"{count} strings of {key!r}")
    buffer, offset, size = cur.buffer, cur.offset, cur.size
    items: list[str] = []
    try:
        for _ in range(count):
            end = offset + 8
            if end > size:
                break
            end += _LENGTH.unpack_from(buffer, offset)[0]
            if end > size:
                break
            items.append(buffer[offset + 8 : end].decode("utf-8"))
            offset = end
    except UnicodeDecodeError as exc:
        cur.offset = offset
        raise cur.fail(f"item {len(items)} of {key!r} is not valid UTF-8") from exc
    cur.offset = offset
    if len(items) < count:
        raise cur.fail(f"string {len(items)} of {key!r} runs past the end of the file (truncated or corrupt)")
    return items


def _tensor_entry(cur: _Cursor) -> tuple[str, GGMLQuantizationType, tuple[int, ...], int, int]:
    name = cur.text("tensor name")
    n_dims: int = cur.scalar("<I", f"dimension count of {name!r}")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {_MAX_DIMS} allowed)")
    dims: list[int] = [cur.scalar("<Q", f"dimensions of {name!r}") for _ in range(n_dims)]
    raw_type: int = cur.scalar("<I", f"type of tensor {name!r}")
    relative: int = cur.scalar("<Q", f"data offset of {name!r}")
    try:
        ggml_type = GGMLQuantizationType(raw_type)
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError) as exc:
        raise cur.fail(f"tensor {name!r} has unknown type id {raw_type}") from exc
    if 0 in dims:
        raise cur.fail(f"tensor {name!r} has an empty dimension {dims}")
    if dims[0] % block_size:
        raise cur.fail(
            f"tensor {name!r} row length {dims[0]} is not a multiple of the {ggml_type.name} block size"
        )
    elements = 1
    for dim in dims:
        elements *= dim
    n_bytes = elements // block_size * type_size
    if n_bytes > cur.size:
        raise cur.fail(f"tensor {name!r} claims {n_bytes} bytes, more than the whole file")
    return name, ggml_type, tuple(reversed(dims)), relative, n_bytes

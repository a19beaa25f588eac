"""A GGUF file's tensors as MLX arrays named for mlx-lm's module of the architecture, with a conversion cache.

Quantized tensors become MLX's quantized layout (see ``_quant`` for the routes). Tensors whose
conversion does real arithmetic (K-quants, Q5_0/Q5_1) are saved after the first load as one
safetensors file per model file, keyed by the file's identity, so later loads only read them back.
On request they are then expanded to dense matrices (for BLAS matmuls on the CPU) and cast to a
compute dtype.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import msgspec

from pensieve.core.errors import ModelFileError
from pensieve.core.paths import default_cache_dir
from pensieve.formats._quant import CONVERTED_TYPES, QuantizedTensor, float_array, quantized_tensor
from pensieve.formats.gguf_file import GGUFFile
from pensieve.formats.layout import FLOAT_TYPES, stored_offset, tensor_name_map

__all__ = ["MLXWeights", "default_cache_dir", "load_weights"]

logger = logging.getLogger(__name__)

# Bump when the converted layout changes, so stale cache files are never read.
_CACHE_FORMAT = "pensieve-weights-1"


@dataclass(frozen=True)
class MLXWeights:
    """Parameters for mlx-lm's module of the architecture, and the quantization of each quantized module.

    ``parameters`` maps names such as ``model.layers.0.self_attn.q_proj.weight`` (plus ``.scales``
    and ``.biases`` when quantized) to arrays. ``quantization`` maps each quantized module path
    (``model.layers.0.self_attn.q_proj``, ``model.embed_tokens``, ``lm_head``) to
    ``{"group_size": …, "bits": …}``, the form ``mlx.nn.quantize``'s ``class_predicate`` returns.
    """

    parameters: dict[str, mx.array]
    quantization: dict[str, dict[str, int]]


def load_weights(
    gguf_file: GGUFFile,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    dequantize: bool = False,
    dtype: mx.Dtype | None = None,
) -> MLXWeights:
    """The file's weights for MLX, converting (or reading from the cache) what MLX cannot take as is.

    ``dtype`` is the compute dtype: floating tensors and quantization scales and biases are cast
    to it, so no matmul casts them on every call; None keeps the file's dtypes. ``dequantize``
    expands every quantized tensor into a dense ``dtype`` (default float32) matrix, computed in
    float32 from the very affine parameters the quantized layout holds, so both layouts carry the
    same weights.
    """
    parameters: dict[str, mx.array] = {}
    quantization: dict[str, dict[str, int]] = {}
    converted: list[str] = []
    architecture = gguf_file.spec.architecture
    for info in gguf_file.tensors:
        qtype = gguf_file.tensor_type(info.name)
        name = tensor_name_map(info.name, architecture)
        if qtype in FLOAT_TYPES:
            array = float_array(gguf_file.tensor_data(info.name), qtype, info.shape)
            offset = stored_offset(info.name, architecture)
            parameters[name] = array - offset if offset else array
        elif qtype in CONVERTED_TYPES:
            converted.append(info.name)
        else:
            _add_quantized(parameters, quantization, name, _quantize(gguf_file, info.name, info.shape))
    if converted:
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        cached = _ConversionCache(cache, gguf_file)
        parameters_c, quantization_c = cached.load(converted, lambda: _convert(gguf_file, converted))
        parameters.update(parameters_c)
        quantization.update(quantization_c)
    if dequantize:
        return _dense(parameters, quantization, dtype or mx.float32)
    if dtype is not None:
        parameters = {name: _cast(name, array, quantization, dtype) for name, array in parameters.items()}
    return MLXWeights(parameters=parameters, quantization=quantization)


def _cast(name: str, array: mx.array, quantization: dict[str, dict[str, int]], dtype: mx.Dtype) -> mx.array:
    if name.endswith(".weight") and name.removesuffix(".weight") in quantization:
        return array  # packed codes
    return array.astype(dtype)


def _dense(
    parameters: dict[str, mx.array], quantization: dict[str, dict[str, int]], dtype: mx.Dtype
) -> MLXWeights:
    packed = {f"{module}.{part}" for module in quantization for part in ("weight", "scales", "biases")}
    dense = {name: array.astype(dtype) for name, array in parameters.items() if name not in packed}
    for module, settings in quantization.items():
        weight = mx.dequantize(
            parameters.pop(f"{module}.weight"),
            parameters.pop(f"{module}.scales").astype(mx.float32),
            parameters.pop(f"{module}.biases").astype(mx.float32),
            group_size=settings["group_size"],
            bits=settings["bits"],
        ).astype(dtype)
        mx.eval(weight)  # one tensor at a time: peak memory stays near the dense model's size
        dense[f"{module}.weight"] = weight
    mx.eval(dense)
    return MLXWeights(parameters=dense, quantization={})


def _quantize(gguf_file: GGUFFile, tensor: str, shape: tuple[int, ...]) -> QuantizedTensor:
    rows, cols = shape
    try:
        return quantized_tensor(gguf_file.tensor_data(tensor), gguf_file.tensor_type(tensor), (rows, cols))
    except ValueError as exc:
        raise ModelFileError(f"{gguf_file.path}: tensor {tensor!r} cannot be converted: {exc}") from exc


def _add_quantized(
    parameters: dict[str, mx.array],
    quantization: dict[str, dict[str, int]],
    name: str,
    tensor: QuantizedTensor,
) -> None:
    module = name.removesuffix(".weight")
    parameters[f"{module}.weight"] = tensor.weight
    parameters[f"{module}.scales"] = tensor.scales
    parameters[f"{module}.biases"] = tensor.biases
    quantization[module] = {"group_size": tensor.group_size, "bits": tensor.bits}


def _convert(
    gguf_file: GGUFFile, tensors: Iterable[str]
) -> tuple[dict[str, mx.array], dict[str, dict[str, int]]]:
    parameters: dict[str, mx.array] = {}
    quantization: dict[str, dict[str, int]] = {}
    shapes = {t.name: t.shape for t in gguf_file.tensors}
    for tensor in tensors:
        converted = _quantize(gguf_file, tensor, shapes[tensor])
        mx.eval(converted.weight, converted.scales, converted.biases)
        name = tensor_name_map(tensor, gguf_file.spec.architecture)
        _add_quantized(parameters, quantization, name, converted)
    return parameters, quantization


class _ConversionCache:
    """One safetensors file per model file, named by a hash of the file's identity."""

    def __init__(self, directory: Path, gguf_file: GGUFFile) -> None:
        key = hashlib.sha256(f"{_CACHE_FORMAT}\0{gguf_file.fingerprint}".encode()).hexdigest()[:40]
        self.path = directory / "weights" / f"{key}.safetensors"
        self.architecture = gguf_file.spec.architecture

    def load(
        self,
        tensors: list[str],
        convert: Callable[[], tuple[dict[str, mx.array], dict[str, dict[str, int]]]],
    ) -> tuple[dict[str, mx.array], dict[str, dict[str, int]]]:
        expected = {tensor_name_map(t, self.architecture).removesuffix(".weight") for t in tensors}
        found = self._read(expected)
        if found is not None:
            return found
        parameters, quantization = convert()
        self._write(parameters, quantization)
        return parameters, quantization

    def _read(self, modules: set[str]) -> tuple[dict[str, mx.array], dict[str, dict[str, int]]] | None:
        if not self.path.is_file():
            return None
        try:
            arrays, metadata = mx.load(str(self.path), return_metadata=True)
            if not isinstance(arrays, dict) or not isinstance(metadata, dict):
                raise ValueError("not a safetensors file of named arrays")
            quantization = msgspec.json.decode(metadata["quantization"], type=dict[str, dict[str, int]])
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, msgspec.ValidationError) as exc:
            logger.warning("ignoring unreadable weight cache %s: %s", self.path, exc)
            return None
        names = {f"{m}.{part}" for m in modules for part in ("weight", "scales", "biases")}
        if set(quantization) != modules or set(arrays) != names:
            logger.warning("ignoring weight cache %s: it does not match the model file", self.path)
            return None
        return arrays, quantization

    def _write(self, parameters: dict[str, mx.array], quantization: dict[str, dict[str, int]]) -> None:
        temporary = self.path.with_name(f"{self.path.stem}.{os.getpid()}.tmp.safetensors")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            metadata = {"quantization": msgspec.json.encode(quantization).decode()}
            mx.save_safetensors(str(temporary), parameters, metadata=metadata)
            os.replace(temporary, self.path)
        except (OSError, RuntimeError, ValueError) as exc:
            # A read-only or full disk costs the next load a conversion, nothing more.
            logger.warning("could not cache converted weights in %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)

"""GGML tensor data → MLX arrays, quantized types kept quantized in MLX's affine layout.

MLX's affine layout per group of ``group_size`` values along a row: ``w = scale * q + bias`` with
unsigned ``bits``-bit codes ``q`` packed little-endian into uint32 words (a plain bit stream, for
3/5/6 bits too), and one ``scale`` and ``bias`` (float16 here) per group.

Three routes, by type:
- repacked: Q4_0, Q4_1, Q8_0 are 32-wide affine blocks; their codes are shuffled into MLX order
  without arithmetic (bit-identical to what ``mx.load`` returns for them).
- exact: Q5_0, Q5_1, Q4_K, Q5_K are affine in 32-wide (sub-)blocks too; the codes are recovered
  from ``gguf.quants.dequantize`` and the block scales, so nothing is lost but the rounding of
  the scale products to float16.
- requantized: Q2_K, Q3_K and Q6_K use 16-wide sub-blocks, narrower than any MLX group (32 at
  least), so the dequantized values are quantized again, each group's range spread evenly over
  its codes (see ``REQUANTIZED`` for the widths). ``mx.quantize`` is not used: it anchors one end
  of the range and can miss the other by nearly a whole step; min/max keeps the error within
  half a step.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import Q4_K, dequantize

__all__ = ["CONVERTED_TYPES", "REQUANTIZED", "QuantizedTensor", "float_array", "quantized_tensor"]

_Q = GGMLQuantizationType
GROUP = 32
# (group_size, bits) for types MLX cannot hold exactly. Chosen as the cheapest setting whose
# added error stays under ~30% of the K-quant's own error (RMS), measured on SmolLM2 weights
# quantized to each K-quant; see the package README for the table.
REQUANTIZED: dict[GGMLQuantizationType, tuple[int, int]] = {
    _Q.Q2_K: (64, 4),
    _Q.Q3_K: (64, 5),
    _Q.Q6_K: (64, 8),
}
_EXACT_BITS = {_Q.Q5_0: 5, _Q.Q5_1: 5, _Q.Q4_K: 4, _Q.Q5_K: 5}
# Types whose conversion does real arithmetic, worth caching on disk.
CONVERTED_TYPES = frozenset(_EXACT_BITS) | frozenset(REQUANTIZED)
# Rows converted at once through float32, bounding the memory a large tensor needs.
_CHUNK_ELEMENTS = 1 << 24


class QuantizedTensor(NamedTuple):
    weight: mx.array
    scales: mx.array
    biases: mx.array
    group_size: int
    bits: int


def float_array(data: np.ndarray, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> mx.array:
    """An F32, F16 or BF16 tensor as an MLX array of the same dtype."""
    if qtype == _Q.BF16:
        return mx.array(np.ascontiguousarray(data).view(np.uint16).reshape(shape)).view(mx.bfloat16)
    return mx.array(np.asarray(data).reshape(shape))


def quantized_tensor(
    data: np.ndarray, qtype: GGMLQuantizationType, shape: tuple[int, int]
) -> QuantizedTensor:
    """A quantized GGML matrix (raw block bytes) in MLX's quantized layout."""
    rows, cols = shape
    raw = np.asarray(data).reshape(rows, -1)
    if qtype in (_Q.Q4_0, _Q.Q4_1, _Q.Q8_0):
        return _repack(raw, qtype)
    chunk = max(1, _CHUNK_ELEMENTS // cols)
    parts = [_convert_rows(raw[start : start + chunk], qtype, cols) for start in range(0, rows, chunk)]
    if len(parts) == 1:
        return parts[0]
    return QuantizedTensor(
        mx.concatenate([p.weight for p in parts]),
        mx.concatenate([p.scales for p in parts]),
        mx.concatenate([p.biases for p in parts]),
        parts[0].group_size,
        parts[0].bits,
    )


def _f16_field(blocks: np.ndarray, offset: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[..., offset : offset + 2]).view(np.float16)[..., 0]


def _repack(raw: np.ndarray, qtype: GGMLQuantizationType) -> QuantizedTensor:
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, GGML_QUANT_SIZES[qtype][1])
    scales = _f16_field(blocks, 0)
    if qtype == _Q.Q4_1:
        biases, qs = _f16_field(blocks, 2), blocks[..., 4:]
    else:
        # Signed codes (q - 8 for Q4_0, int8 for Q8_0): the bias shifts unsigned codes back.
        offset = 128 if qtype == _Q.Q8_0 else 8
        with np.errstate(over="ignore"):  # a huge scale field overflows to inf, as with mx.load
            biases = scales * np.float16(-offset)
        qs = blocks[..., 2:]
    if qtype == _Q.Q8_0:
        # int8 → unsigned by flipping the sign bit; MLX packs four bytes per uint32 in order.
        packed, bits = (np.ascontiguousarray(qs) ^ np.uint8(0x80)).reshape(rows, -1), 8
    else:
        # GGML: byte j holds values j (low nibble) and j + 16 (high nibble); MLX: value i sits in
        # nibble i of the block's bit stream, so byte k holds values 2k (low) and 2k + 1 (high).
        values = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)
        packed, bits = (values[..., 0::2] | (values[..., 1::2] << np.uint8(4))).reshape(rows, -1), 4
    weight = np.ascontiguousarray(packed).view(np.uint32)
    return QuantizedTensor(mx.array(weight), mx.array(scales), mx.array(biases), GROUP, bits)


def _convert_rows(raw: np.ndarray, qtype: GGMLQuantizationType, cols: int) -> QuantizedTensor:
    rows = raw.shape[0]
    # Scale fields come from an untrusted file: inf/NaN/overflow give a useless model, not a crash.
    with np.errstate(all="ignore"):
        values = dequantize(raw, qtype).reshape(rows, cols)
        if qtype in REQUANTIZED:
            group_size, bits = REQUANTIZED[qtype]
            scales, biases = _min_max_parameters(values.reshape(rows, -1, group_size), bits)
        else:
            group_size, bits = GROUP, _EXACT_BITS[qtype]
            scales, biases = _affine_parameters(raw, qtype)
        scales16, biases16 = scales.astype(np.float16), biases.astype(np.float16)
        # Codes are chosen against the float16 scale and bias actually stored, absorbing their rounding.
        groups = values.reshape(rows, -1, group_size)
        codes = np.rint(
            (groups - biases16[..., None].astype(np.float32)) / scales16[..., None].astype(np.float32)
        )
        codes = np.clip(np.nan_to_num(codes, nan=0.0, posinf=0.0, neginf=0.0), 0, (1 << bits) - 1)
    weight = pack_codes(codes.astype(np.uint8).reshape(rows, cols), bits)
    return QuantizedTensor(mx.array(weight), mx.array(scales16), mx.array(biases16), group_size, bits)


def _min_max_parameters(groups: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bias) spreading each group's range over the ``bits``-bit codes: error <= scale / 2."""
    low, high = groups.min(axis=-1), groups.max(axis=-1)
    return (high - low) / ((1 << bits) - 1), low


def _affine_parameters(raw: np.ndarray, qtype: GGMLQuantizationType) -> tuple[np.ndarray, np.ndarray]:
    """Per-32-value (scale, bias) of an affine GGML type, as float32 ``(rows, groups)`` arrays."""
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, GGML_QUANT_SIZES[qtype][1])
    d = _f16_field(blocks, 0).astype(np.float32)
    if qtype == _Q.Q5_0:
        return d, -16.0 * d
    if qtype == _Q.Q5_1:
        return d, _f16_field(blocks, 2).astype(np.float32)
    # Q4_K / Q5_K: fp16 d and dmin, then 12 bytes holding eight 6-bit (scale, min) pairs.
    dmin = _f16_field(blocks, 2).astype(np.float32)
    sub_scales, sub_mins = Q4_K.get_scale_min(np.ascontiguousarray(blocks[..., 4:16]).reshape(-1, 12))
    sub_scales = sub_scales.reshape(rows, -1, 8).astype(np.float32)
    sub_mins = sub_mins.reshape(rows, -1, 8).astype(np.float32)
    scales = d[..., None] * sub_scales
    biases = -(dmin[..., None] * sub_mins)
    return scales.reshape(rows, -1), biases.reshape(rows, -1)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit codes ``(rows, n)`` packed as MLX does: a little-endian bit stream in uint32."""
    rows, n = codes.shape
    eights = codes.reshape(rows, n // 8, 8).astype(np.uint64)
    stream = np.zeros((rows, n // 8), dtype=np.uint64)
    for k in range(8):
        stream |= eights[..., k] << np.uint64(bits * k)
    # Eight codes fill exactly ``bits`` bytes; keep those bytes of each little-endian uint64.
    packed = stream.view(np.uint8).reshape(rows, n // 8, 8)[..., :bits]
    return np.ascontiguousarray(packed).reshape(rows, n * bits // 8).view(np.uint32)

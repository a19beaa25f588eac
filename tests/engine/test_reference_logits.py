"""The engine's forward pass equals a plain-numpy llama on the same GGUF weights.

This pins the tensor-name mapping, the RoPE convention (llama.cpp's permuted Q/K need
``rope_traditional``) and every quantization path, independently of MLX, in both weight layouts
(quantized kernels and dequantized float32 matmuls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from pensieve.core import DeviceSettings
from pensieve.engine import load_model
from tests.support.gguf_factory import MIXED_TYPES, TinyLlamaConfig, write_llama_gguf
from tests.support.numpy_reference import reference_logits

TOKENS = [5, 17, 42, 99, 3, 250, 7, 128, 64, 1]
CPU = DeviceSettings(device="cpu")

# (name, writer options, absolute tolerance on logits). Exact layouts are compared tightly; the
# K-quants MLX cannot hold exactly (Q2_K, Q3_K, Q6_K are requantized) get a looser bound.
CASES = [
    ("f32", {}, 1e-3),
    ("f16", {"default_type": Q.F16}, 2e-2),
    ("q8_0", {"default_type": Q.Q8_0}, 2e-2),
    ("q4_0", {"default_type": Q.Q4_0}, 2e-2),
    ("q4_1-tied", {"default_type": Q.Q4_1, "tied": True}, 2e-2),
    ("q4_k", {"default_type": Q.Q4_K}, 2e-2),
    ("mixed", {"tensor_types": MIXED_TYPES}, 1e-1),
    ("gqa-head-dim", {"config": TinyLlamaConfig(num_heads=8, num_kv_heads=2, head_dim=64)}, 1e-3),
    ("mistral", {"architecture": "mistral"}, 1e-3),
]


@pytest.mark.parametrize("layout", ["quantized", "dense"])
@pytest.mark.parametrize(("name", "options", "tolerance"), CASES, ids=[c[0] for c in CASES])
def test_logits_match_numpy_reference(
    tmp_path: Path, name: str, options: dict, tolerance: float, layout: Literal["quantized", "dense"]
) -> None:
    path = write_llama_gguf(tmp_path / f"{name}.gguf", **options)
    model = load_model(path, device=CPU, cache_dir=tmp_path / "cache", weight_layout=layout)
    assert model.device.weight_layout == layout
    ours = np.array(model.module(mx.array([TOKENS]))[0].astype(mx.float32))
    expected = reference_logits(path, TOKENS)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=tolerance, rtol=0)
    assert (ours.argmax(-1) == expected.argmax(-1)).mean() >= 0.9


def test_incremental_decode_matches_full_forward(tmp_path: Path) -> None:
    """Logits computed token by token through the KV cache equal the one-shot forward pass."""
    from mlx_lm.models.cache import make_prompt_cache

    path = write_llama_gguf(tmp_path / "cache.gguf")
    model = load_model(path, device=CPU, cache_dir=tmp_path / "cache")
    cache = make_prompt_cache(model.module)
    stepwise = [np.array(model.module(mx.array([[t]]), cache=cache)[0, -1]) for t in TOKENS]
    np.testing.assert_allclose(np.stack(stepwise), reference_logits(path, TOKENS), atol=1e-3, rtol=0)

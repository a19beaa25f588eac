"""Building an mlx-lm model from a GGUF file: spec → mlx-lm ModelArgs → module → weights."""

from __future__ import annotations

import importlib
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats import GGUFFile, MLXWeights, ModelSpec

__all__ = ["build_model", "model_args"]

# GGUF architecture name → mlx-lm module name. Mistral GGUFs use llama's layout.
_MLX_LM_MODULES = {"llama": "llama", "mistral": "llama"}


def model_args(spec: ModelSpec) -> Any:
    """mlx-lm ``ModelArgs`` for ``spec``.

    ``rope_traditional=True`` because llama.cpp stores Q/K permuted for its interleaved RoPE.
    """
    module = _architecture_module(spec.architecture)
    return module.ModelArgs(
        model_type=_MLX_LM_MODULES[spec.architecture],
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        intermediate_size=spec.intermediate_size,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        rms_norm_eps=spec.rms_norm_eps,
        vocab_size=spec.vocab_size,
        rope_theta=spec.rope_theta,
        rope_traditional=True,
        rope_scaling=spec.rope_scaling,
        max_position_embeddings=spec.context_length,
        tie_word_embeddings=spec.tie_word_embeddings,
    )


def build_model(gguf: GGUFFile, weights: MLXWeights) -> nn.Module:
    """An evaluated mlx-lm model holding ``weights`` (quantized layers stay quantized)."""
    module = _architecture_module(gguf.spec.architecture)
    model = module.Model(model_args(gguf.spec))
    quantization = weights.quantization
    if quantization:
        nn.quantize(
            model,
            class_predicate=lambda path, _layer: quantization.get(path, False),
        )
    try:
        model.load_weights(list(weights.parameters.items()), strict=True)
    except ValueError as exc:
        raise ModelFileError(f"{gguf.path}: tensors do not match the {gguf.spec.architecture} layout: {exc}") from exc
    mx.eval(model.parameters())
    model.eval()
    return model


def _architecture_module(architecture: str) -> Any:
    name = _MLX_LM_MODULES.get(architecture)
    if name is None:
        supported = ", ".join(sorted(_MLX_LM_MODULES))
        raise UnsupportedModelError(f"architecture {architecture!r} is not supported (supported: {supported})")
    return importlib.import_module(f"mlx_lm.models.{name}")

"""Building an mlx-lm model from a GGUF file: spec → mlx-lm ModelArgs → module → weights.

Each GGUF architecture runs on mlx-lm's own module for it; one small function per architecture
turns the spec into that module's ``ModelArgs`` and refuses what the module cannot express.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats import GGUFFile, MLXWeights, ModelSpec

__all__ = ["build_model", "model_args"]


def _common(spec: ModelSpec, model_type: str) -> dict[str, Any]:
    return {
        "model_type": model_type,
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers,
        "intermediate_size": spec.intermediate_size,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "rms_norm_eps": spec.rms_norm_eps,
        "vocab_size": spec.vocab_size,
        "rope_theta": spec.rope_theta,
    }


def _llama(spec: ModelSpec) -> dict[str, Any]:
    # llama.cpp stores llama's Q/K permuted for its interleaved RoPE, hence rope_traditional.
    _require_full_rope(spec)
    return {
        **_common(spec, "llama"),
        "head_dim": spec.head_dim,
        "rope_traditional": True,
        "rope_scaling": spec.rope_scaling,
        "max_position_embeddings": spec.context_length,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }


def _qwen2(spec: ModelSpec) -> dict[str, Any]:
    # Qwen, Gemma and Phi GGUFs keep Hugging Face's Q/K order (llama.cpp's NEOX RoPE).
    _require_full_rope(spec)
    _require_derived_head_dim(spec)
    return {
        **_common(spec, "qwen2"),
        "rope_traditional": False,
        "rope_scaling": spec.rope_scaling,
        "max_position_embeddings": spec.context_length,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }


def _qwen3(spec: ModelSpec) -> dict[str, Any]:
    _require_full_rope(spec)
    return {
        **_common(spec, "qwen3"),
        "head_dim": spec.head_dim,
        "rope_scaling": spec.rope_scaling,
        "max_position_embeddings": spec.context_length,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }


def _gemma2(spec: ModelSpec) -> dict[str, Any]:
    _require_full_rope(spec)
    if spec.rope_scaling is not None:
        raise UnsupportedModelError("RoPE scaling is not supported for gemma2 models")
    return {
        **_common(spec, "gemma2"),
        "head_dim": spec.head_dim,
        "rope_traditional": False,
        "attn_logit_softcapping": spec.attn_logit_softcapping,
        "final_logit_softcapping": spec.final_logit_softcapping,
        "query_pre_attn_scalar": _query_pre_attn_scalar(spec, largest_layers=46),
    }


def _gemma3(spec: ModelSpec) -> dict[str, Any]:
    _require_full_rope(spec)
    pattern = spec.sliding_window_pattern or 1  # 1: every layer global
    return {
        **_common(spec, "gemma3_text"),
        "head_dim": spec.head_dim,
        "rope_local_base_freq": spec.rope_local_theta or spec.rope_theta,
        "query_pre_attn_scalar": _query_pre_attn_scalar(spec, largest_layers=62),
        "sliding_window": spec.sliding_window or spec.context_length,
        "sliding_window_pattern": pattern,
        "max_position_embeddings": spec.context_length,
        "rope_scaling": spec.rope_scaling,
    }


def _phi3(spec: ModelSpec) -> dict[str, Any]:
    _require_derived_head_dim(spec)
    if spec.rope_scaling is not None:
        raise UnsupportedModelError("RoPE scaling is not supported for phi3 models")
    return {
        **_common(spec, "phi3"),
        "rope_traditional": False,
        "partial_rotary_factor": spec.rope_dimensions / spec.head_dim,
        "max_position_embeddings": spec.context_length,
        "tie_word_embeddings": spec.tie_word_embeddings,
    }


# GGUF architecture → (mlx-lm module, ModelArgs keywords). Mistral GGUFs use llama's layout.
_ARCHITECTURES: dict[str, tuple[str, Callable[[ModelSpec], dict[str, Any]]]] = {
    "llama": ("llama", _llama),
    "mistral": ("llama", _llama),
    "qwen2": ("qwen2", _qwen2),
    "qwen3": ("qwen3", _qwen3),
    "gemma2": ("gemma2", _gemma2),
    "gemma3": ("gemma3_text", _gemma3),
    "phi3": ("phi3", _phi3),
}


def _query_pre_attn_scalar(spec: ModelSpec, largest_layers: int) -> float:
    # GGUF does not record it; like llama.cpp, the 27B Gemma (known by its layer count) scales
    # queries by hidden/heads, every other size by the head dimension.
    if spec.num_layers == largest_layers:
        return spec.hidden_size / spec.num_heads
    return float(spec.head_dim)


def _require_full_rope(spec: ModelSpec) -> None:
    if spec.rope_dimensions != spec.head_dim:
        raise UnsupportedModelError(
            f"{spec.architecture} models rotating {spec.rope_dimensions} of {spec.head_dim} head "
            "features are not supported"
        )


def _require_derived_head_dim(spec: ModelSpec) -> None:
    if spec.head_dim * spec.num_heads != spec.hidden_size:
        raise UnsupportedModelError(
            f"{spec.architecture} models whose head size ({spec.head_dim}) is not the embedding "
            f"length over the head count ({spec.hidden_size}/{spec.num_heads}) are not supported"
        )


def model_args(spec: ModelSpec) -> Any:
    """mlx-lm ``ModelArgs`` of the module that runs ``spec``'s architecture."""
    module_name, arguments = _architecture(spec.architecture)
    module = importlib.import_module(f"mlx_lm.models.{module_name}")
    return module.ModelArgs(**arguments(spec))


def build_model(gguf: GGUFFile, weights: MLXWeights) -> nn.Module:
    """An evaluated mlx-lm model holding ``weights`` (quantized layers stay quantized)."""
    module_name, _ = _architecture(gguf.spec.architecture)
    module = importlib.import_module(f"mlx_lm.models.{module_name}")
    model = module.Model(model_args(gguf.spec))
    quantization = weights.quantization
    if quantization:
        nn.quantize(
            model,
            class_predicate=lambda path, _layer: quantization.get(path, False),
        )
    parameters = dict(weights.parameters)
    if hasattr(model, "sanitize"):
        parameters = model.sanitize(parameters)  # e.g. gemma3_text drops lm_head for tied embeddings
    try:
        model.load_weights(list(parameters.items()), strict=True)
    except ValueError as exc:
        architecture = gguf.spec.architecture
        raise ModelFileError(f"{gguf.path}: tensors do not match the {architecture} layout: {exc}") from exc
    mx.eval(model.parameters())
    model.eval()
    return model


def _architecture(architecture: str) -> tuple[str, Callable[[ModelSpec], dict[str, Any]]]:
    entry = _ARCHITECTURES.get(architecture)
    if entry is None:
        supported = ", ".join(sorted(_ARCHITECTURES))
        raise UnsupportedModelError(
            f"architecture {architecture!r} is not supported (supported: {supported})"
        )
    return entry

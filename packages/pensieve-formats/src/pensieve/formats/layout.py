"""Tensor layouts: GGUF tensor names, their mlx-lm names, and the shapes a spec implies.

``tensor_name_map`` is the one place GGUF names become the parameter names of mlx-lm's module for
the architecture (``llama``, ``qwen2``, ``qwen3``, ``gemma2``, ``gemma3_text``, ``phi3``), and
``stored_offset`` the one place a stored value differs from the parameter (Gemma's norms).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gguf import GGMLQuantizationType

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats.spec import ModelSpec

__all__ = ["FLOAT_TYPES", "QUANTIZED_TYPES", "check_layout", "stored_offset", "tensor_name_map"]

_Q = GGMLQuantizationType
FLOAT_TYPES = frozenset({_Q.F32, _Q.F16, _Q.BF16})
QUANTIZED_TYPES = frozenset(
    {_Q.Q4_0, _Q.Q4_1, _Q.Q5_0, _Q.Q5_1, _Q.Q8_0, _Q.Q2_K, _Q.Q3_K, _Q.Q4_K, _Q.Q5_K, _Q.Q6_K}
)

_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
# Gemma normalizes each sublayer's input and output; GGUF's ffn_norm is the pre-FFN norm.
_GEMMA_BLOCK = {
    **_LLAMA_BLOCK,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Phi-3 keeps Q/K/V in one matrix and gate/up in one (gate rows first), as mlx-lm's phi3 does.
_PHI3_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCKS: dict[str, Mapping[str, str]] = {
    "llama": _LLAMA_BLOCK,
    "mistral": _LLAMA_BLOCK,
    "qwen2": _LLAMA_BLOCK,
    "qwen3": {**_LLAMA_BLOCK, **_QK_NORMS},
    "gemma2": _GEMMA_BLOCK,
    "gemma3": {**_GEMMA_BLOCK, **_QK_NORMS},
    "phi3": _PHI3_BLOCK,
}
_BIASED: dict[str, frozenset[str]] = {"qwen2": frozenset({"attn_q", "attn_k", "attn_v"})}
# mlx-lm's gemma2 always reads logits off the embedding matrix.
_ALWAYS_TIED = frozenset({"gemma2"})
# convert_hf_to_gguf stores Gemma's RMSNorm weights w as 1 + w (the factor they apply).
_NORM_OFFSET = {"gemma2": 1.0, "gemma3": 1.0}
_LAYER_NAME = re.compile(r"blk\.(0|[1-9][0-9]*)\.([a-z_]+)\.(weight|bias)", re.ASCII)


def tensor_name_map(gguf_name: str, architecture: str = "llama") -> str:
    """mlx-lm parameter name of a GGUF tensor name in ``architecture``'s layout.

    ``blk.3.attn_q.weight`` → ``model.layers.3.self_attn.q_proj.weight``; raises
    UnsupportedModelError for a name with no place in that layout.
    """
    block = _BLOCKS.get(architecture)
    if block is None:
        raise UnsupportedModelError(f"tensor {gguf_name!r}: there is no {architecture} layout")
    base, _, suffix = gguf_name.rpartition(".")
    if suffix == "weight" and base in _TOP_LEVEL and not (base == "output" and architecture in _ALWAYS_TIED):
        return f"{_TOP_LEVEL[base]}.weight"
    match = _LAYER_NAME.fullmatch(gguf_name)
    if match and match[2] in block and (match[3] == "weight" or match[2] in _BIASED.get(architecture, ())):
        return f"model.layers.{match[1]}.{block[match[2]]}.{match[3]}"
    raise UnsupportedModelError(f"tensor {gguf_name!r} is not part of the {architecture} layout")


def stored_offset(gguf_name: str, architecture: str) -> float:
    """What the file adds to the parameter's value: 1.0 for Gemma's norm weights, else 0.0."""
    return _NORM_OFFSET.get(architecture, 0.0) if gguf_name.endswith("norm.weight") else 0.0


def _block_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    hidden, ffn, head = spec.hidden_size, spec.intermediate_size, spec.head_dim
    q_rows, kv_rows = spec.num_heads * head, spec.num_kv_heads * head
    block = _BLOCKS[spec.architecture]
    shapes: dict[str, tuple[int, ...]] = {
        "attn_q": (q_rows, hidden),
        "attn_k": (kv_rows, hidden),
        "attn_v": (kv_rows, hidden),
        "attn_qkv": (q_rows + 2 * kv_rows, hidden),
        "attn_q_norm": (head,),
        "attn_k_norm": (head,),
        "attn_output": (hidden, q_rows),
        "ffn_gate": (ffn, hidden),
        # Without a separate gate, ffn_up holds gate and up rows.
        "ffn_up": (ffn if "ffn_gate" in block else 2 * ffn, hidden),
        "ffn_down": (hidden, ffn),
    }
    return {kind: shapes.get(kind, (hidden,)) for kind in block}


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    hidden = spec.hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (spec.vocab_size, hidden),
        "output_norm.weight": (hidden,),
    }
    if not spec.tie_word_embeddings and spec.architecture not in _ALWAYS_TIED:
        shapes["output.weight"] = (spec.vocab_size, hidden)
    block = _block_shapes(spec)
    for i in range(spec.num_layers):
        for kind, shape in block.items():
            shapes[f"blk.{i}.{kind}.weight"] = shape
            if kind in _BIASED.get(spec.architecture, ()):
                shapes[f"blk.{i}.{kind}.bias"] = shape[:1]
    return shapes


def check_layout(
    spec: ModelSpec,
    shapes: Mapping[str, tuple[int, ...]],
    types: Mapping[str, GGMLQuantizationType],
    source: str,
) -> None:
    """Refuse a tensor table that does not match the layout ``spec`` describes."""
    for name, qtype in types.items():
        if qtype not in FLOAT_TYPES and qtype not in QUANTIZED_TYPES:
            supported = ", ".join(sorted(t.name for t in FLOAT_TYPES | QUANTIZED_TYPES))
            raise UnsupportedModelError(
                f"{source}: tensor {name!r} uses {qtype.name}, which Pensieve cannot run "
                f"(supported: {supported})"
            )
        if qtype in QUANTIZED_TYPES and len(shapes[name]) != 2:
            raise ModelFileError(
                f"{source}: quantized tensor {name!r} must be a matrix, not shape {shapes[name]}"
            )
    expected = _expected_shapes(spec)
    for name in shapes:
        if name not in expected:
            try:
                tensor_name_map(name, spec.architecture)
            except UnsupportedModelError as exc:
                raise UnsupportedModelError(f"{source}: {exc.message}") from exc
            raise ModelFileError(f"{source}: tensor {name!r} does not fit a {spec.num_layers}-layer model")
    for name, shape in expected.items():
        if name not in shapes:
            raise ModelFileError(f"{source}: tensor {name!r} is missing")
        if shapes[name] != shape:
            raise ModelFileError(
                f"{source}: tensor {name!r} has shape {shapes[name]}, but the metadata implies {shape}"
            )

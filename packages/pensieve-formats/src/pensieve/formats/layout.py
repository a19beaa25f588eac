"""The llama tensor layout: GGUF tensor names, their mlx-lm names, and the shapes a spec implies.

``tensor_name_map`` is the one place GGUF names become mlx-lm's llama parameter names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gguf import GGMLQuantizationType

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats.spec import ModelSpec

__all__ = ["FLOAT_TYPES", "QUANTIZED_TYPES", "check_layout", "tensor_name_map"]

_Q = GGMLQuantizationType
FLOAT_TYPES = frozenset({_Q.F32, _Q.F16, _Q.BF16})
QUANTIZED_TYPES = frozenset(
    {_Q.Q4_0, _Q.Q4_1, _Q.Q5_0, _Q.Q5_1, _Q.Q8_0, _Q.Q2_K, _Q.Q3_K, _Q.Q4_K, _Q.Q5_K, _Q.Q6_K}
)

_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_PER_LAYER = {
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
_LAYER_NAME = re.compile(r"blk\.(0|[1-9][0-9]*)\.([a-z_]+)\.weight", re.ASCII)


def tensor_name_map(gguf_name: str) -> str:
    """mlx-lm llama parameter name of a GGUF tensor name.

    ``blk.3.attn_q.weight`` → ``model.layers.3.self_attn.q_proj.weight``; raises
    UnsupportedModelError for a name with no place in the llama layout.
    """
    base, _, suffix = gguf_name.rpartition(".")
    if suffix == "weight" and base in _TOP_LEVEL:
        return f"{_TOP_LEVEL[base]}.weight"
    match = _LAYER_NAME.fullmatch(gguf_name)
    if match and match[2] in _PER_LAYER:
        return f"model.layers.{match[1]}.{_PER_LAYER[match[2]]}.weight"
    raise UnsupportedModelError(f"tensor {gguf_name!r} is not part of the llama layout")


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    hidden, ffn = spec.hidden_size, spec.intermediate_size
    q_rows, kv_rows = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (spec.vocab_size, hidden),
        "output_norm.weight": (hidden,),
    }
    if not spec.tie_word_embeddings:
        shapes["output.weight"] = (spec.vocab_size, hidden)
    for i in range(spec.num_layers):
        shapes.update(
            {
                f"blk.{i}.attn_norm.weight": (hidden,),
                f"blk.{i}.attn_q.weight": (q_rows, hidden),
                f"blk.{i}.attn_k.weight": (kv_rows, hidden),
                f"blk.{i}.attn_v.weight": (kv_rows, hidden),
                f"blk.{i}.attn_output.weight": (hidden, q_rows),
                f"blk.{i}.ffn_norm.weight": (hidden,),
                f"blk.{i}.ffn_gate.weight": (ffn, hidden),
                f"blk.{i}.ffn_up.weight": (ffn, hidden),
                f"blk.{i}.ffn_down.weight": (hidden, ffn),
            }
        )
    return shapes


def check_layout(
    spec: ModelSpec,
    shapes: Mapping[str, tuple[int, ...]],
    types: Mapping[str, GGMLQuantizationType],
    source: str,
) -> None:
    """Refuse a tensor table that does not match the llama layout ``spec`` describes."""
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
                tensor_name_map(name)
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

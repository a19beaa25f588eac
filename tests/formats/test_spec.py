"""ModelSpec: the numbers read from GGUF metadata."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest
from gguf import LlamaFileType

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats import GGUFFile, ModelSpec, open_gguf
from tests.support.gguf_factory import TinyLlamaConfig, write_llama_gguf, write_tiny_gguf


def test_spec_of_the_synthetic_model(f32_path: Path) -> None:
    spec = open_gguf(f32_path).spec
    assert spec == ModelSpec(
        architecture="llama",
        name="tiny-llama",
        hidden_size=256,
        num_layers=2,
        intermediate_size=512,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        rope_theta=10000.0,
        rope_scaling=None,
        context_length=512,
        rms_norm_eps=pytest.approx(1e-5),
        rope_dimensions=64,
        sliding_window=None,
        sliding_window_pattern=None,
        rope_local_theta=None,
        attn_logit_softcapping=None,
        final_logit_softcapping=None,
        vocab_size=300,
        bos_token_id=1,
        eos_token_ids=frozenset({2}),
        tie_word_embeddings=False,
        quantization="F32",
        parameter_count=300 * 256 * 2 + 256 + 2 * (2 * 256 + 2 * 256 * 256 + 2 * 128 * 256 + 3 * 512 * 256),
    )
    with pytest.raises(AttributeError):
        spec.hidden_size = 1  # type: ignore[misc]


def test_spec_of_the_default_model(smollm2: GGUFFile) -> None:
    spec = smollm2.spec
    assert (spec.architecture, spec.hidden_size, spec.num_layers, spec.intermediate_size) == (
        "llama",
        576,
        30,
        1536,
    )
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim) == (9, 3, 64)
    assert (spec.context_length, spec.vocab_size, spec.rope_theta) == (8192, 49152, 100000.0)
    assert spec.bos_token_id == 1 and spec.eos_token_ids == frozenset({2})
    assert spec.tie_word_embeddings and spec.quantization == "Q4_1"
    assert math.isclose(spec.rms_norm_eps, 1e-5, rel_tol=1e-6)
    assert 134_000_000 < spec.parameter_count < 136_000_000
    assert spec.name == smollm2.metadata["general.name"]


def test_mistral_reads_its_own_prefix(tmp_path: Path) -> None:
    config = TinyLlamaConfig(num_layers=1, context_length=1024, rope_theta=1e6)
    spec = open_gguf(write_llama_gguf(tmp_path / "m.gguf", architecture="mistral", config=config)).spec
    assert (spec.architecture, spec.num_layers, spec.context_length, spec.rope_theta) == (
        "mistral",
        1,
        1024,
        1e6,
    )


def test_tied_embeddings(tmp_path: Path) -> None:
    assert open_gguf(write_llama_gguf(tmp_path / "m.gguf", tied=True)).spec.tie_word_embeddings


def test_head_dim_from_key_length(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", config=TinyLlamaConfig(head_dim=32))
    assert open_gguf(path).spec.head_dim == 32
    # the tensors must agree with it
    metadata = {"llama.attention.key_length": 32, "llama.rope.dimension_count": None}
    wrong = write_llama_gguf(tmp_path / "w.gguf", metadata=metadata)
    with pytest.raises(ModelFileError, match=r"blk\.0\.attn_q\.weight"):
        open_gguf(wrong)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"llama.rope.scaling.type": "none"}, None),
        (
            {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0},
            {"type": "linear", "factor": 4.0},
        ),
        (
            {
                "llama.rope.scaling.type": "yarn",
                "llama.rope.scaling.factor": 2.0,
                "llama.rope.scaling.original_context_length": 256,
            },
            {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": 256},
        ),
    ],
)
def test_rope_scaling(
    tmp_path: Path, metadata: dict[str, object], expected: dict[str, object] | None
) -> None:
    assert open_gguf(write_llama_gguf(tmp_path / "m.gguf", metadata=metadata)).spec.rope_scaling == expected


def test_unknown_rope_scaling_is_unsupported(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"llama.rope.scaling.type": "longrope"})
    with pytest.raises(UnsupportedModelError, match="longrope"):
        open_gguf(path)


def test_end_of_turn_tokens_join_eos(tmp_path: Path) -> None:
    # eos <|endoftext|> (0), eot <|im_start|> (1), and the template's <|im_end|> (2, a control token)
    metadata = {"tokenizer.ggml.eos_token_id": 0, "tokenizer.ggml.eot_token_id": 1}
    spec = open_gguf(write_llama_gguf(tmp_path / "m.gguf", metadata=metadata)).spec
    assert spec.eos_token_ids == frozenset({0, 1, 2})


def test_template_marker_counts_only_when_special(tmp_path: Path) -> None:
    # "<|eot_id|>" is not in the vocabulary and "he" is an ordinary token: neither ends a turn
    template = "{% for m in messages %}{{ m['content'] }}<|eot_id|>he{% endfor %}"
    metadata = {"tokenizer.ggml.eos_token_id": 0, "tokenizer.ggml.eom_token_id": 1}
    spec = open_gguf(write_llama_gguf(tmp_path / "m.gguf", chat_template=template, metadata=metadata)).spec
    assert spec.eos_token_ids == frozenset({0, 1})


def test_without_a_template_the_fallback_template_ends_turns(tmp_path: Path) -> None:
    """Like a base Gemma file: no template, so the fallback's end-of-turn marker also ends answers."""
    path = write_llama_gguf(tmp_path / "m.gguf", chat_template=None)
    gguf = open_gguf(path)
    assert gguf.chat_template().is_fallback
    im_end = gguf.tokenizer().encode("<|im_end|>")
    assert len(im_end) == 1 and im_end[0] in gguf.spec.eos_token_ids


def test_special_token_ids_must_be_in_the_vocabulary(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"tokenizer.ggml.eot_token_id": 300})
    with pytest.raises(ModelFileError, match="special token id 300"):
        open_gguf(path)


def test_no_eos_token_is_an_error(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # no end-of-turn marker either
    path = write_llama_gguf(tmp_path / "m.gguf", chat_template=template, metadata={"tokenizer.ggml.eos_token_id": None})
    with pytest.raises(ModelFileError, match="end-of-sequence"):
        open_gguf(path)


def test_vocab_size_from_metadata_must_match_the_embedding(tmp_path: Path) -> None:
    assert (
        open_gguf(write_llama_gguf(tmp_path / "a.gguf", metadata={"llama.vocab_size": 300})).spec.vocab_size
        == 300
    )
    with pytest.raises(ModelFileError, match=r"token_embd\.weight"):
        open_gguf(write_llama_gguf(tmp_path / "b.gguf", metadata={"llama.vocab_size": 301}))


@pytest.mark.parametrize(
    ("file_type", "name"),
    [
        (LlamaFileType.MOSTLY_Q4_K_M, "Q4_K_M"),
        (LlamaFileType.ALL_F32, "F32"),
        (LlamaFileType.MOSTLY_Q8_0, "Q8_0"),
    ],
)
def test_quantization_name_from_file_type(tmp_path: Path, file_type: LlamaFileType, name: str) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"general.file_type": int(file_type)})
    assert open_gguf(path).spec.quantization == name


def test_quantization_name_from_the_dominant_tensor_type(mixed: GGUFFile) -> None:
    assert "general.file_type" not in mixed.metadata
    assert mixed.spec.quantization == "Q4_K"  # 2 of the 16 matrices, but the most parameters


def test_spec_encodes_for_upper_layers(mixed: GGUFFile) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(mixed.spec), type=ModelSpec)
    assert decoded == mixed.spec


# --- other architectures ---------------------------------------------------------------------


def test_supported_architectures_are_named_in_the_refusal(tmp_path: Path) -> None:
    supported = r"\(supported: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3\)"
    with pytest.raises(UnsupportedModelError, match=f"'mamba' is not supported {supported}"):
        open_gguf(write_tiny_gguf(tmp_path / "m.gguf", architecture="mamba"))


def test_gemma2_defaults_are_llama_cpp_s(tmp_path: Path) -> None:
    """Without the keys, Gemma 2 slides over 4096 tokens on every other layer and soft-caps at 50 and
    30; the usable context is the window, which mlx-lm's global attention matches."""
    config = TinyLlamaConfig(context_length=8192)
    spec = open_gguf(write_tiny_gguf(tmp_path / "g.gguf", architecture="gemma2", config=config)).spec
    assert (spec.sliding_window, spec.sliding_window_pattern, spec.rope_local_theta) == (4096, 2, None)
    assert (spec.attn_logit_softcapping, spec.final_logit_softcapping) == (50.0, 30.0)
    assert (spec.context_length, spec.tie_word_embeddings) == (4096, True)


def test_gemma2_recorded_values(tmp_path: Path) -> None:
    metadata = {
        "gemma2.attention.sliding_window": 128,
        "gemma2.attn_logit_softcapping": 20.0,
        "gemma2.final_logit_softcapping": 10.0,
    }
    spec = open_gguf(write_tiny_gguf(tmp_path / "g.gguf", architecture="gemma2", metadata=metadata)).spec
    assert (spec.sliding_window, spec.context_length) == (128, 128)
    assert (spec.attn_logit_softcapping, spec.final_logit_softcapping) == (20.0, 10.0)


def test_gemma3_sliding_window(tmp_path: Path) -> None:
    metadata = {"gemma3.attention.sliding_window": 64, "gemma3.rope.freq_base": 1e6}
    spec = open_gguf(write_tiny_gguf(tmp_path / "g.gguf", architecture="gemma3", metadata=metadata)).spec
    assert (spec.sliding_window, spec.sliding_window_pattern, spec.rope_local_theta) == (64, 6, 10000.0)
    assert (spec.rope_theta, spec.context_length, spec.final_logit_softcapping) == (1e6, 512, None)


def test_gemma3_without_a_window_attends_globally(tmp_path: Path) -> None:
    spec = open_gguf(write_tiny_gguf(tmp_path / "g.gguf", architecture="gemma3")).spec
    assert (spec.sliding_window, spec.sliding_window_pattern, spec.rope_local_theta) == (None, None, None)


@pytest.mark.parametrize(("architecture", "head_dim"), [("qwen2", None), ("qwen3", 32), ("phi3", None)])
def test_architectures_read_their_own_prefix(tmp_path: Path, architecture: str, head_dim: int | None) -> None:
    config = TinyLlamaConfig(hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=96, head_dim=head_dim)
    path = write_tiny_gguf(tmp_path / "m.gguf", architecture=architecture, config=config)
    spec = open_gguf(path).spec
    assert (spec.architecture, spec.hidden_size, spec.intermediate_size) == (architecture, 64, 96)
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim) == (4, 2, head_dim or 16)
    assert spec.sliding_window is None and spec.attn_logit_softcapping is None


def test_partial_rope_dimensions(tmp_path: Path) -> None:
    metadata = {"phi3.rope.dimension_count": 48}
    path = write_tiny_gguf(tmp_path / "p.gguf", architecture="phi3", metadata=metadata)
    assert open_gguf(path).spec.rope_dimensions == 48


@pytest.mark.parametrize("dimensions", [65, 128])
def test_rope_dimensions_must_fit_the_head(tmp_path: Path, dimensions: int) -> None:
    path = write_tiny_gguf(tmp_path / "p.gguf", metadata={"llama.rope.dimension_count": dimensions})
    with pytest.raises(ModelFileError, match="RoPE dimension count"):
        open_gguf(path)

"""ModelSpec: the numbers read from GGUF metadata."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest
from gguf import LlamaFileType

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats import GGUFFile, ModelSpec, open_gguf
from tests.support.gguf_factory import TinyLlamaConfig, write_llama_gguf


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
    wrong = write_llama_gguf(tmp_path / "w.gguf", metadata={"llama.attention.key_length": 32})
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


def test_special_token_ids_must_be_in_the_vocabulary(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"tokenizer.ggml.eot_token_id": 300})
    with pytest.raises(ModelFileError, match="special token id 300"):
        open_gguf(path)


def test_no_eos_token_is_an_error(tmp_path: Path) -> None:
    path = write_llama_gguf(
        tmp_path / "m.gguf", chat_template=None, metadata={"tokenizer.ggml.eos_token_id": None}
    )
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

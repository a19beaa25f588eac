"""``convert_to_mlx``: the directory it writes is loaded by mlx-lm alone and computes what the engine does."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from mlx_lm.generate import stream_generate

from pensieve.core.errors import InvalidRequestError, ModelFileError, UnsupportedModelError
from pensieve.engine import LocalModel, build_model, convert_to_mlx
from pensieve.formats import default_model_path, load_weights, open_gguf
from tests.support.gguf_factory import MIXED_TYPES, TinyLlamaConfig, write_llama_gguf, write_tiny_gguf

TOKENS = [[1, 5, 9, 20, 100, 7, 250]]
TEXTS = ["hello world", "the quick brown fox", "Hello, héllo 日本語 😀 <|im_end|> 12345\n\tdef"]
MESSAGES = [{"role": "user", "content": "hello world"}]
SMALL = TinyLlamaConfig(hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a converted directory must need nothing from the Hugging Face hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _quantized_modules(module: nn.Module) -> set[str]:
    quantized = (nn.QuantizedLinear, nn.QuantizedEmbedding)
    return {name for name, m in module.named_modules() if isinstance(m, quantized)}


def _logits(module: nn.Module) -> np.ndarray:
    return np.array(module(mx.array(TOKENS)).astype(mx.float32))


@pytest.mark.parametrize(
    ("options", "dequantize"),
    [
        ({"tensor_types": MIXED_TYPES}, False),
        ({"tensor_types": MIXED_TYPES}, True),
        ({"default_type": Q.Q4_0, "tied": True}, False),
        ({"default_type": Q.F16, "architecture": "mistral"}, False),
    ],
    ids=["mixed-quantized", "mixed-dequantized", "q4_0-tied", "f16-mistral"],
)
def test_mlx_lm_loads_the_directory_with_the_engine_logits(
    tmp_path: Path, options: Mapping[str, Any], dequantize: bool
) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", **options)
    cache = tmp_path / "cache"
    out = convert_to_mlx(path, tmp_path / "mlx", dequantize=dequantize, cache_dir=cache)
    loaded, _tokenizer = mlx_lm.load(str(out))
    gguf = open_gguf(path)
    engine = build_model(gguf, load_weights(gguf, cache_dir=cache, dequantize=dequantize))
    assert _quantized_modules(loaded) == _quantized_modules(engine)
    if dequantize:
        assert not _quantized_modules(loaded)
    np.testing.assert_array_equal(_logits(loaded), _logits(engine))


@pytest.mark.parametrize("architecture", ["qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_every_architecture_converts_to_the_engine_logits(tmp_path: Path, architecture: str) -> None:
    path = write_tiny_gguf(
        tmp_path / "tiny.gguf", architecture=architecture, config=SMALL, default_type=Q.Q8_0
    )
    out = convert_to_mlx(path, tmp_path / "mlx")
    loaded, tokenizer = mlx_lm.load(str(out))
    gguf = open_gguf(path)
    engine = build_model(gguf, load_weights(gguf))
    assert _quantized_modules(loaded) == _quantized_modules(engine) != set()
    np.testing.assert_array_equal(_logits(loaded), _logits(engine))
    prompt = gguf.tokenizer().encode(gguf.chat_template().render(MESSAGES, add_generation_prompt=True))
    assert tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True) == prompt


def test_config_records_rope_order_end_tokens_and_each_quantized_module(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", tensor_types=MIXED_TYPES)
    out = convert_to_mlx(path, tmp_path / "mlx", cache_dir=tmp_path / "cache")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["rope_traditional"] is True  # llama.cpp's permuted Q/K
    assert config["eos_token_id"] == sorted(open_gguf(path).spec.eos_token_ids)
    quantization = config["quantization"]
    assert quantization["model.layers.0.self_attn.q_proj"] == {"group_size": 32, "bits": 4}  # Q4_0, exact
    assert quantization["model.embed_tokens"] == {"group_size": 32, "bits": 8}  # Q8_0, exact
    assert "model.layers.0.self_attn.o_proj" not in quantization  # F16 stays dense
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


@pytest.mark.parametrize("tokenizer_model", ["gpt2", "llama"])
def test_mlx_lm_tokenizer_matches_the_gguf_tokenizer_and_template(
    tmp_path: Path, tokenizer_model: str
) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", tokenizer_model=tokenizer_model)
    out = convert_to_mlx(path, tmp_path / "mlx")
    _model, tokenizer = mlx_lm.load(str(out))
    gguf = open_gguf(path)
    ours = gguf.tokenizer()
    for text in TEXTS:
        ids = ours.encode(text)
        assert tokenizer.encode(text, add_special_tokens=False) == ids
        assert tokenizer.decode(ids) == ours.decode(ids)
    # Plain text gets BOS exactly when the GGUF asks for it (SentencePiece llama vocabularies do).
    with_specials = tokenizer.encode(TEXTS[0])
    assert with_specials == ([ours.bos_token_id] if ours.add_bos else []) + ours.encode(TEXTS[0])
    prompt = gguf.chat_template().render(MESSAGES, add_generation_prompt=True)
    assert tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True) == ours.encode(prompt)
    assert tokenizer.eos_token_ids == set(ours.eos_token_ids)


def test_a_non_empty_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "mlx"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InvalidRequestError, match="not empty"):
        convert_to_mlx(path, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_stale_model_files_and_keeps_others(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "mlx"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model-00002-of-00002.safetensors").write_bytes(b"stale shard mlx-lm would load")
    convert_to_mlx(path, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "model-00002-of-00002.safetensors").exists()
    mlx_lm.load(str(out))


def test_an_empty_existing_directory_is_used(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "mlx").mkdir()
    out = convert_to_mlx(path, tmp_path / "mlx")
    assert (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_file_that_is_not_gguf_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("not a model")
    with pytest.raises(ModelFileError):
        convert_to_mlx(path, tmp_path / "mlx")
    assert not (tmp_path / "mlx").exists()


def test_an_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", architecture="bloom")
    with pytest.raises(UnsupportedModelError, match="bloom"):
        convert_to_mlx(path, tmp_path / "mlx")
    assert not (tmp_path / "mlx").exists()


@pytest.fixture(scope="module")
def converted_default_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield convert_to_mlx(default_model_path(), tmp_path_factory.mktemp("smollm2") / "mlx")


@pytest.mark.real_model
def test_mlx_lm_generates_the_engines_greedy_answer(
    default_model: LocalModel, converted_default_model: Path
) -> None:
    model, tokenizer = mlx_lm.load(str(converted_default_model))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == default_model.tokenizer.encode(default_model.chat_template.render(messages))

    ours = default_model.chat(messages, max_tokens=16)
    steps = list(stream_generate(model, tokenizer, prompt, max_tokens=16))
    tokens = [step.token for step in steps]
    assert ours.finished.completion_tokens == len(tokens)
    answer = tokens[:-1] if tokens[-1] in tokenizer.eos_token_ids else tokens
    assert default_model.tokenizer.decode(answer) == ours.text
    assert mlx_lm.generate(model, tokenizer, prompt, max_tokens=16) == ours.text
    # The file keeps the GGUF's float16 scales, which mlx-lm computes with (its embeddings come out in
    # float16); the engine's CPU layout is float32 throughout. Measured max |difference| ~8e-3.
    last = mx.array([prompt])
    np.testing.assert_allclose(
        np.array(model(last)[0, -1].astype(mx.float32)),
        np.array(default_model.module(last)[0, -1].astype(mx.float32)),
        atol=3e-2,
        rtol=0,
    )

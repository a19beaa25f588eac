"""Weights for MLX: names for mlx-lm's modules, every tensor type, error bounds, and the cache."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from mlx.utils import tree_flatten

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.engine import build_model
from pensieve.formats import (
    GGUFFile,
    MLXWeights,
    default_cache_dir,
    load_weights,
    open_gguf,
    tensor_name_map,
)
from tests.support.gguf_factory import MIXED_TYPES, TinyLlamaConfig, write_llama_gguf, write_tiny_gguf
from tests.support.numpy_reference import reference_logits

# (group_size, bits) each GGML type becomes; see the package README for why.
EXPECTED_LAYOUT = {
    Q.Q4_0: (32, 4),
    Q.Q4_1: (32, 4),
    Q.Q5_0: (32, 5),
    Q.Q5_1: (32, 5),
    Q.Q8_0: (32, 8),
    Q.Q2_K: (64, 4),
    Q.Q3_K: (64, 5),
    Q.Q4_K: (32, 4),
    Q.Q5_K: (32, 5),
    Q.Q6_K: (64, 8),
}
REQUANTIZED = (Q.Q2_K, Q.Q3_K, Q.Q6_K)


@pytest.fixture(scope="module")
def mixed_weights(mixed: GGUFFile, tmp_path_factory: pytest.TempPathFactory) -> MLXWeights:
    return load_weights(mixed, cache_dir=tmp_path_factory.mktemp("cache"))


def _reference(gguf_file: GGUFFile, tensor: str) -> np.ndarray:
    shape = next(t.shape for t in gguf_file.tensors if t.name == tensor)
    values = gguf.quants.dequantize(gguf_file.tensor_data(tensor), gguf_file.tensor_type(tensor))
    return np.asarray(values, dtype=np.float32).reshape(shape)


def _values(weights: MLXWeights, tensor: str) -> np.ndarray:
    name = tensor_name_map(tensor)
    module = name.removesuffix(".weight")
    array = weights.parameters[name]
    if module in weights.quantization:
        array = mx.dequantize(
            array,
            weights.parameters[f"{module}.scales"],
            weights.parameters[f"{module}.biases"],
            **weights.quantization[module],
        )
    return np.array(array.astype(mx.float32))


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gguf_name", "mlx_name"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
        ("blk.7.attn_q.weight", "model.layers.7.self_attn.q_proj.weight"),
        ("blk.7.attn_k.weight", "model.layers.7.self_attn.k_proj.weight"),
        ("blk.7.attn_v.weight", "model.layers.7.self_attn.v_proj.weight"),
        ("blk.12.attn_output.weight", "model.layers.12.self_attn.o_proj.weight"),
        ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
        ("blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"),
        ("blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"),
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
    ],
)
def test_tensor_name_map(gguf_name: str, mlx_name: str) -> None:
    assert tensor_name_map(gguf_name) == mlx_name


@pytest.mark.parametrize(
    "gguf_name",
    ["rope_freqs.weight", "blk.0.attn_q.bias", "blk.01.attn_q.weight", "blk.x.ffn_up.weight", "output"],
)
def test_names_outside_the_layout(gguf_name: str) -> None:
    with pytest.raises(UnsupportedModelError, match="llama layout"):
        tensor_name_map(gguf_name)


@pytest.mark.parametrize(
    ("architecture", "gguf_name", "mlx_name"),
    [
        ("qwen2", "blk.1.attn_q.bias", "model.layers.1.self_attn.q_proj.bias"),
        ("qwen2", "blk.1.attn_v.bias", "model.layers.1.self_attn.v_proj.bias"),
        ("qwen3", "blk.2.attn_q_norm.weight", "model.layers.2.self_attn.q_norm.weight"),
        ("qwen3", "blk.2.attn_k_norm.weight", "model.layers.2.self_attn.k_norm.weight"),
        ("gemma2", "blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"),
        ("gemma2", "blk.0.post_attention_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
        ("gemma2", "blk.0.post_ffw_norm.weight", "model.layers.0.post_feedforward_layernorm.weight"),
        ("gemma3", "blk.5.attn_k_norm.weight", "model.layers.5.self_attn.k_norm.weight"),
        ("gemma3", "output.weight", "lm_head.weight"),
        ("phi3", "blk.0.attn_qkv.weight", "model.layers.0.self_attn.qkv_proj.weight"),
        ("phi3", "blk.0.ffn_up.weight", "model.layers.0.mlp.gate_up_proj.weight"),
        ("phi3", "blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
    ],
)
def test_tensor_name_map_of_other_architectures(architecture: str, gguf_name: str, mlx_name: str) -> None:
    assert tensor_name_map(gguf_name, architecture) == mlx_name


@pytest.mark.parametrize(
    ("architecture", "gguf_name"),
    [
        ("qwen3", "blk.0.attn_q.bias"),  # only qwen2 has biases
        ("qwen2", "blk.0.attn_q_norm.weight"),
        ("gemma2", "output.weight"),  # mlx-lm's gemma2 always ties the output to the embeddings
        ("phi3", "blk.0.attn_q.weight"),  # phi3 runs on the fused matrix
        ("phi3", "rope_factors_long.weight"),
        ("mamba", "token_embd.weight"),
    ],
)
def test_names_outside_other_layouts(architecture: str, gguf_name: str) -> None:
    with pytest.raises(UnsupportedModelError, match=f"{architecture} layout"):
        tensor_name_map(gguf_name, architecture)


def test_gemma_norms_are_stored_plus_one(tmp_path: Path) -> None:
    """llama.cpp's converter stores Gemma's RMSNorm weight w as 1 + w; mlx-lm's module wants w."""
    path = write_tiny_gguf(tmp_path / "g.gguf", architecture="gemma3", config=TinyLlamaConfig(hidden_size=64))
    gguf_file = open_gguf(path)
    weights = load_weights(gguf_file, cache_dir=tmp_path / "cache")
    for tensor in ("output_norm.weight", "blk.1.attn_q_norm.weight", "blk.0.post_ffw_norm.weight"):
        stored = np.asarray(gguf_file.tensor_data(tensor))
        loaded = np.array(weights.parameters[tensor_name_map(tensor, "gemma3")])
        np.testing.assert_allclose(loaded, stored - 1)
    untouched = np.asarray(gguf_file.tensor_data("blk.0.attn_q.weight"))
    loaded = np.array(weights.parameters["model.layers.0.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(loaded, untouched)


def test_gemma2_with_its_own_output_matrix_is_refused(tmp_path: Path) -> None:
    extra = {"output.weight": ((300, 256), Q.F32)}
    path = write_tiny_gguf(tmp_path / "g.gguf", architecture="gemma2", extra_tensors=extra)
    with pytest.raises(UnsupportedModelError, match="'output.weight' is not part of the gemma2 layout"):
        open_gguf(path)


@pytest.mark.parametrize(
    ("architecture", "missing", "extra"),
    [
        ("qwen2", "blk.1.attn_k.bias", None),
        ("qwen3", "blk.0.attn_q_norm.weight", None),
        ("gemma3", "blk.0.post_ffw_norm.weight", None),
        # phi3's fused gate|up matrix holds twice the feed-forward rows
        ("phi3", None, ("blk.0.ffn_up.weight", (512, 256))),
    ],
)
def test_layouts_check_every_tensor(
    tmp_path: Path, architecture: str, missing: str | None, extra: tuple[str, tuple[int, int]] | None
) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", architecture=architecture)
    reader = gguf.GGUFReader(path)
    writer = gguf.GGUFWriter(str(tmp_path / "damaged.gguf"), architecture)
    for key, field in reader.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            sub_type = field.types[-1] if len(field.types) > 1 else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type)
    for tensor in reader.tensors:
        if tensor.name == missing:
            continue
        data = np.asarray(tensor.data).reshape(tuple(reversed(tensor.shape.tolist())))
        if extra is not None and tensor.name == extra[0]:
            data = np.zeros(extra[1], dtype=np.float32)
        writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelFileError, match=f"tensor '{missing or extra[0]}'"):
        open_gguf(tmp_path / "damaged.gguf")


def test_parameters_are_exactly_what_mlx_lm_llama_holds(mixed: GGUFFile, mixed_weights: MLXWeights) -> None:
    model = build_model(mixed, mixed_weights)
    assert set(mixed_weights.parameters) == {name for name, _ in tree_flatten(model.parameters())}


# --- tensor types ----------------------------------------------------------------------------


def test_quantization_of_each_module(mixed_weights: MLXWeights) -> None:
    expected = {
        tensor_name_map(tensor).removesuffix(".weight"): dict(
            zip(("group_size", "bits"), EXPECTED_LAYOUT[qtype])
        )
        for tensor, qtype in MIXED_TYPES.items()
        if qtype in EXPECTED_LAYOUT
    }
    assert mixed_weights.quantization == expected
    for module, spec in expected.items():
        weight, scales = (
            mixed_weights.parameters[f"{module}.weight"],
            mixed_weights.parameters[f"{module}.scales"],
        )
        assert weight.dtype == mx.uint32
        assert scales.dtype == mixed_weights.parameters[f"{module}.biases"].dtype == mx.float16
        assert weight.shape[1] * 32 // (scales.shape[1] * spec["group_size"]) == spec["bits"]


@pytest.mark.parametrize("tensor", sorted(MIXED_TYPES))
def test_each_type_matches_gguf_dequantization(
    mixed: GGUFFile, mixed_weights: MLXWeights, tensor: str
) -> None:
    qtype = MIXED_TYPES[tensor]
    reference = _reference(mixed, tensor)
    values = _values(mixed_weights, tensor)
    assert values.shape == reference.shape
    error = np.abs(values - reference)
    if qtype in (Q.F32, Q.F16, Q.BF16):
        assert error.max() == 0.0
    elif qtype not in REQUANTIZED:
        # exact codes; only float16 rounding of scales, biases and the dequantized output
        assert error.max() <= 4 * 2**-11 * np.abs(reference).max()
    else:
        # requantized: within half a code step of each group's range
        group_size, bits = EXPECTED_LAYOUT[qtype]
        groups = reference.reshape(reference.shape[0], -1, group_size)
        step = (groups.max(axis=-1) - groups.min(axis=-1)) / (2**bits - 1)
        bound = 0.5 * np.repeat(step, group_size, axis=-1) + 4 * 2**-11 * np.abs(reference).max()
        assert np.all(error <= bound)
        assert error.max() > 0  # the bound is not vacuous: these types do lose a little


def test_large_tensors_convert_in_row_chunks_with_the_same_result(
    mixed: GGUFFile, mixed_weights: MLXWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pensieve.formats._quant._CHUNK_ELEMENTS", 3 * 512)  # 3 rows of 512 at a time
    chunked = load_weights(mixed, cache_dir=tmp_path)
    for module in ("model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj", "lm_head"):
        for part in ("weight", "scales", "biases"):
            name = f"{module}.{part}"
            assert np.array_equal(
                np.array(chunked.parameters[name]), np.array(mixed_weights.parameters[name])
            )


def test_non_finite_scale_fields_load_without_warnings(tmp_path: Path) -> None:
    types = {"blk.0.ffn_up.weight": Q.Q4_K, "blk.0.ffn_down.weight": Q.Q6_K, "blk.1.attn_q.weight": Q.Q8_0}
    path = write_llama_gguf(tmp_path / "m.gguf", tensor_types=types)
    reader = gguf.GGUFReader(path, "r+")
    for tensor in reader.tensors:
        if tensor.name in types:
            offset = 208 if tensor.tensor_type == Q.Q6_K else 0  # where each type keeps its fp16 scale
            tensor.data[0, offset : offset + 2] = np.array([np.inf], dtype=np.float16).view(np.uint8)
            tensor.data[1, offset : offset + 2] = np.array([60000.0], dtype=np.float16).view(np.uint8)
    reader.data.flush()
    weights = load_weights(open_gguf(path), cache_dir=tmp_path)  # warnings are errors under pytest
    assert set(weights.quantization) == {tensor_name_map(t).removesuffix(".weight") for t in types}


def test_f16_and_bf16_keep_their_dtype(mixed_weights: MLXWeights) -> None:
    assert mixed_weights.parameters["model.layers.0.self_attn.o_proj.weight"].dtype == mx.float16
    assert mixed_weights.parameters["model.layers.1.self_attn.v_proj.weight"].dtype == mx.bfloat16
    assert mixed_weights.parameters["model.layers.1.mlp.up_proj.weight"].dtype == mx.float32
    assert mixed_weights.parameters["model.norm.weight"].dtype == mx.float32


def test_repacked_types_are_bit_identical_to_mx_load(tmp_path: Path) -> None:
    # mx.load reads Q4_0/Q4_1/Q8_0 into MLX's layout itself (it cannot read every type in MIXED_TYPES)
    types = {"token_embd.weight": Q.Q8_0, "blk.0.attn_q.weight": Q.Q4_0, "blk.1.ffn_down.weight": Q.Q4_1}
    path = write_llama_gguf(tmp_path / "m.gguf", tensor_types=types)
    weights = load_weights(open_gguf(path), cache_dir=tmp_path)
    loaded = mx.load(str(path))
    for tensor in types:
        module = tensor_name_map(tensor).removesuffix(".weight")
        for part in ("weight", "scales", "biases"):
            expected = np.array(loaded[tensor.replace(".weight", f".{part}")])
            assert np.array_equal(np.array(weights.parameters[f"{module}.{part}"]), expected), (tensor, part)


def test_default_model_weights(smollm2: GGUFFile, tmp_path: Path) -> None:
    weights = load_weights(smollm2, cache_dir=tmp_path)
    assert weights.quantization["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert weights.quantization["model.layers.29.mlp.down_proj"] == {"group_size": 32, "bits": 4}
    assert "lm_head.weight" not in weights.parameters  # tied
    assert not (tmp_path / "weights").exists()  # Q4_1/Q8_0/F32 need no conversion cache
    loaded = mx.load(str(smollm2.path))
    for part in ("weight", "scales", "biases"):
        assert np.array_equal(
            np.array(weights.parameters[f"model.layers.5.self_attn.k_proj.{part}"]),
            np.array(loaded[f"blk.5.attn_k.{part}"]),
        )


# --- against the numpy reference -------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_f32_model_logits_match_the_numpy_reference(tmp_path: Path, tied: bool) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", tied=tied)
    gguf_file = open_gguf(path)
    tokens = [1, 42, 7, 260, 299, 0, 13]
    logits = build_model(gguf_file, load_weights(gguf_file, cache_dir=tmp_path))(mx.array([tokens]))[0]
    np.testing.assert_allclose(np.array(logits), reference_logits(path, tokens), atol=1e-4, rtol=1e-4)


def test_mixed_model_logits_stay_close_to_the_numpy_reference(
    mixed: GGUFFile, mixed_weights: MLXWeights
) -> None:
    tokens = [1, 42, 7, 260, 299, 0, 13]
    logits = np.array(build_model(mixed, mixed_weights)(mx.array([tokens]))[0].astype(mx.float32))
    reference = reference_logits(mixed.path, tokens)
    assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
    assert np.array_equal(logits.argmax(axis=-1), reference.argmax(axis=-1))


# --- conversion cache ------------------------------------------------------------------------


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "weights").glob("*.safetensors")) if (cache_dir / "weights").exists() else []


def test_second_load_reads_the_cache(mixed_path: Path, tmp_path: Path) -> None:
    first = load_weights(open_gguf(mixed_path), cache_dir=tmp_path)
    [cache_file] = _cache_files(tmp_path)
    cached, metadata = mx.load(str(cache_file), return_metadata=True)
    assert set(cached) == {
        f"{tensor_name_map(t).removesuffix('.weight')}.{part}"
        for t, q in MIXED_TYPES.items()
        if q in (Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
        for part in ("weight", "scales", "biases")
    }
    # Mark the cached copy of one tensor: a second load must return the mark, not a fresh conversion.
    marked = "model.layers.0.mlp.gate_proj.scales"
    cached[marked] = mx.full(cached[marked].shape, 7.0, dtype=mx.float16)
    mx.save_safetensors(str(cache_file), cached, metadata=metadata)
    second = load_weights(open_gguf(mixed_path), cache_dir=tmp_path)
    assert np.all(np.array(second.parameters[marked]) == 7.0)
    assert second.quantization == first.quantization
    assert set(second.parameters) == set(first.parameters)


def test_cache_is_keyed_by_file_identity(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", tensor_types={"blk.0.ffn_up.weight": Q.Q4_K})
    load_weights(open_gguf(path), cache_dir=tmp_path / "cache")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    load_weights(open_gguf(path), cache_dir=tmp_path / "cache")
    assert len(_cache_files(tmp_path / "cache")) == 2


def test_corrupt_cache_is_rebuilt(mixed: GGUFFile, mixed_weights: MLXWeights, tmp_path: Path) -> None:
    load_weights(mixed, cache_dir=tmp_path)
    [cache_file] = _cache_files(tmp_path)
    cache_file.write_bytes(b"\x00garbage" * 10)
    again = load_weights(mixed, cache_dir=tmp_path)
    name = "model.layers.1.self_attn.q_proj.weight"
    assert np.array_equal(np.array(again.parameters[name]), np.array(mixed_weights.parameters[name]))
    assert mx.load(str(cache_file))  # rewritten, readable


def test_unwritable_cache_only_costs_a_conversion(
    mixed: GGUFFile, mixed_weights: MLXWeights, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    weights = load_weights(mixed, cache_dir=blocker)
    name = "model.layers.0.mlp.down_proj.biases"
    assert np.array_equal(np.array(weights.parameters[name]), np.array(mixed_weights.parameters[name]))


def test_float_only_file_writes_no_cache(f32_path: Path, tmp_path: Path) -> None:
    load_weights(open_gguf(f32_path), cache_dir=tmp_path)
    assert not (tmp_path / "weights").exists()


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PENSIEVE_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PENSIEVE_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "pensieve"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pensieve"


def test_load_without_cache_dir_uses_the_default(
    mixed: GGUFFile, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PENSIEVE_CACHE_DIR", str(tmp_path))
    load_weights(mixed)
    assert len(_cache_files(tmp_path)) == 1

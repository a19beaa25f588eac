"""Opening GGUF files: what is read matches gguf.GGUFReader, and every bad input gets a typed error."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.formats import GGUFFile, open_gguf
from tests.support.gguf_factory import (
    overwrite_bytes,
    set_metadata_length,
    set_tensor_offset,
    set_tensor_type_id,
    truncate_file,
    write_llama_gguf,
)


def _assert_matches_gguf_reader(opened: GGUFFile, path: Path) -> None:
    reader = gguf.GGUFReader(path)
    expected = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    assert dict(opened.metadata) == expected
    assert [t.name for t in opened.tensors] == [t.name for t in reader.tensors]
    for tensor in reader.tensors:
        data = opened.tensor_data(tensor.name)
        assert opened.tensor_type(tensor.name) == tensor.tensor_type
        assert data.dtype == tensor.data.dtype and data.shape == tensor.data.shape
        assert np.array_equal(data, tensor.data)


def test_metadata_and_tensor_data_match_gguf_reader(mixed: GGUFFile, mixed_path: Path) -> None:
    _assert_matches_gguf_reader(mixed, mixed_path)


@pytest.mark.real_model  # gguf.GGUFReader itself needs ~4 s for SmolLM2's vocabulary
def test_default_model_matches_gguf_reader(smollm2: GGUFFile) -> None:
    _assert_matches_gguf_reader(smollm2, smollm2.path)


def test_file_facts(mixed: GGUFFile, mixed_path: Path) -> None:
    assert mixed.path == mixed_path.resolve()
    assert mixed.file_size == mixed_path.stat().st_size
    assert mixed.tensor_bytes == sum(t.n_bytes for t in mixed.tensors)
    assert 0 < mixed.tensor_bytes < mixed.file_size
    embedding = next(t for t in mixed.tensors if t.name == "token_embd.weight")
    assert (embedding.ggml_type, embedding.shape) == ("Q8_0", (300, 256))
    assert embedding.n_bytes == 300 * 256 // 32 * 34


def test_fingerprint_changes_with_the_file(fresh_copy: Path) -> None:
    first = open_gguf(fresh_copy).fingerprint
    assert open_gguf(fresh_copy).fingerprint == first
    overwrite_bytes(fresh_copy, fresh_copy.stat().st_size - 4, b"\x00\x00\x80\x3f")  # tensor data only
    assert open_gguf(fresh_copy).fingerprint != first


def test_default_model_opens_fast(smollm2: GGUFFile) -> None:
    started = time.perf_counter()
    open_gguf(smollm2.path)
    assert time.perf_counter() - started < 1.0


# --- bad input -------------------------------------------------------------------------------


def _refused(path: Path, error: type[Exception], *words: str) -> Exception:
    with pytest.raises(error) as caught:
        open_gguf(path)
    message = str(caught.value)
    assert str(path.resolve()) in message or str(path) in message
    for word in words:
        assert word in message, message
    return caught.value


def test_missing_file(tmp_path: Path) -> None:
    error = _refused(tmp_path / "absent.gguf", ModelFileError, "no such model file")
    assert isinstance(error.__cause__, FileNotFoundError)


def test_directory(tmp_path: Path) -> None:
    _refused(tmp_path, ModelFileError, "directory")


@pytest.mark.parametrize("content", [b"", b"GGUF", b"not a gguf file at all, just some text\n" * 4])
def test_not_a_gguf_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "text.gguf"
    path.write_bytes(content)
    _refused(path, ModelFileError, "not a GGUF file")


def test_bad_magic(fresh_copy: Path) -> None:
    overwrite_bytes(fresh_copy, 0, b"GGML")
    _refused(fresh_copy, ModelFileError, "bad magic")


@pytest.mark.parametrize(("version", "words"), [(1, "version 1"), (4, "version 4"), (3 << 24, "big-endian")])
def test_unsupported_gguf_version(fresh_copy: Path, version: int, words: str) -> None:
    overwrite_bytes(fresh_copy, 4, struct.pack("<I", version))
    _refused(fresh_copy, UnsupportedModelError, words)


@pytest.mark.parametrize("keep", [30, 200, 5000])
def test_truncated_header(fresh_copy: Path, keep: int) -> None:
    truncate_file(fresh_copy, keep)
    _refused(fresh_copy, ModelFileError, "truncated")


def test_truncated_tensor_data(fresh_copy: Path) -> None:
    truncate_file(fresh_copy, fresh_copy.stat().st_size - 1000)
    _refused(fresh_copy, ModelFileError, "blk.1.ffn_down.weight", "beyond the end of the file")


def test_tensor_offset_outside_the_file(fresh_copy: Path) -> None:
    set_tensor_offset(fresh_copy, "blk.0.attn_q.weight", 1 << 40)
    _refused(fresh_copy, ModelFileError, "blk.0.attn_q.weight", "beyond the end of the file")


def test_misaligned_tensor_offset(fresh_copy: Path) -> None:
    set_tensor_offset(fresh_copy, "blk.0.attn_q.weight", 7)
    _refused(fresh_copy, ModelFileError, "blk.0.attn_q.weight", "not aligned")


@pytest.mark.parametrize("key", ["general.name", "tokenizer.ggml.tokens"])
@pytest.mark.parametrize("length", [1 << 20, 1 << 62])
def test_absurd_metadata_lengths_fail_fast(fresh_copy: Path, key: str, length: int) -> None:
    set_metadata_length(fresh_copy, key, length)
    started = time.perf_counter()
    _refused(fresh_copy, ModelFileError, key)
    assert time.perf_counter() - started < 1.0


def test_invalid_utf8_in_metadata(fresh_copy: Path) -> None:
    position = fresh_copy.read_bytes().index(b"tiny-llama")
    overwrite_bytes(fresh_copy, position, b"\xff")
    error = _refused(fresh_copy, ModelFileError, "UTF-8")
    assert isinstance(error.__cause__, UnicodeDecodeError)


def test_unknown_metadata_value_type(fresh_copy: Path) -> None:
    key = b"general.name"
    position = fresh_copy.read_bytes().index(key) + len(key)
    overwrite_bytes(fresh_copy, position, struct.pack("<I", 77))
    _refused(fresh_copy, ModelFileError, "unknown value type 77")


def test_unknown_tensor_type_id(fresh_copy: Path) -> None:
    set_tensor_type_id(fresh_copy, "blk.0.attn_q.weight", 99)
    _refused(fresh_copy, ModelFileError, "blk.0.attn_q.weight", "unknown type id 99")


def test_alignment_must_be_a_power_of_two(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"general.alignment": 24})
    _refused(path, ModelFileError, "general.alignment")


@pytest.mark.parametrize("qtype", [Q.IQ4_NL, Q.IQ2_XXS, Q.TQ1_0, Q.TQ2_0, Q.Q8_1])
def test_unsupported_tensor_type(tmp_path: Path, qtype: Q) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", tensor_types={"blk.1.ffn_gate.weight": qtype})
    _refused(path, UnsupportedModelError, "blk.1.ffn_gate.weight", qtype.name)


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", architecture="qwen9")
    _refused(path, UnsupportedModelError, "'qwen9'", "llama")


def test_mixture_of_experts_is_unsupported(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"llama.expert_count": 8})
    _refused(path, UnsupportedModelError, "mixture-of-experts")


def test_unsupported_tokenizer_model(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", tokenizer_model="bert")
    _refused(path, UnsupportedModelError, "'bert'")


def test_missing_tensor(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"llama.block_count": 3})
    _refused(path, ModelFileError, "blk.2.attn_norm.weight", "missing")


def test_tensor_shape_disagrees_with_metadata(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"llama.feed_forward_length": 1024})
    _refused(path, ModelFileError, "blk.0.ffn_gate.weight", "shape")


def test_tensor_outside_the_llama_layout(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", extra_tensors={"rope_freqs.weight": ((32,), Q.F32)})
    _refused(path, UnsupportedModelError, "rope_freqs.weight")


def test_layer_beyond_block_count(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", extra_tensors={"blk.7.attn_norm.weight": ((256,), Q.F32)})
    _refused(path, ModelFileError, "blk.7.attn_norm.weight", "2-layer")


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({"llama.embedding_length": "wide"}, "llama.embedding_length"),
        ({"llama.block_count": None}, "llama.block_count"),
        ({"llama.attention.head_count_kv": 3}, "KV heads"),
        ({"llama.rope.freq_base": -1.0}, "llama.rope.freq_base"),
    ],
)
def test_bad_metadata_values(tmp_path: Path, metadata: dict[str, object], words: str) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata=metadata)
    _refused(path, ModelFileError, words)

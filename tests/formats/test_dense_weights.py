"""load_weights' compute layouts: dense (dequantized) matrices and a compute dtype for every float."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from pensieve.formats import GGUFFile, MLXWeights, load_weights


@pytest.fixture(scope="module")
def dense(mixed: GGUFFile, tmp_path_factory: pytest.TempPathFactory) -> MLXWeights:
    return load_weights(mixed, cache_dir=tmp_path_factory.mktemp("cache"), dequantize=True)


@pytest.fixture(scope="module")
def quantized(mixed: GGUFFile, tmp_path_factory: pytest.TempPathFactory) -> MLXWeights:
    return load_weights(mixed, cache_dir=tmp_path_factory.mktemp("cache"))


def test_dense_weights_have_no_quantized_module(dense: MLXWeights, quantized: MLXWeights) -> None:
    assert dense.quantization == {}
    assert set(dense.parameters) == {
        name for name in quantized.parameters if not name.endswith((".scales", ".biases"))
    }
    assert {array.dtype for array in dense.parameters.values()} == {mx.float32}


def test_dense_matrices_expand_the_quantized_layout_exactly(dense: MLXWeights, quantized: MLXWeights) -> None:
    """Both layouts carry the same weights: scale * q + bias, computed in float32."""
    for module, settings in quantized.quantization.items():
        p = quantized.parameters
        codes = np.array(
            mx.dequantize(
                p[f"{module}.weight"],
                mx.zeros_like(p[f"{module}.scales"]) + 1,
                mx.zeros_like(p[f"{module}.biases"]),
                **settings,
            ).astype(mx.float32)
        )
        rows = codes.shape[0]
        group = settings["group_size"]
        scales = np.array(p[f"{module}.scales"].astype(mx.float32))[..., None]
        biases = np.array(p[f"{module}.biases"].astype(mx.float32))[..., None]
        expected = (codes.reshape(rows, -1, group) * scales + biases).reshape(rows, -1)
        np.testing.assert_allclose(
            np.array(dense.parameters[f"{module}.weight"]), expected, rtol=1e-6, atol=1e-7
        )


def test_dense_float16_is_the_float32_expansion_rounded(
    mixed: GGUFFile, dense: MLXWeights, tmp_path_factory: pytest.TempPathFactory
) -> None:
    half = load_weights(mixed, cache_dir=tmp_path_factory.mktemp("cache"), dequantize=True, dtype=mx.float16)
    for name, array in half.parameters.items():
        assert array.dtype == mx.float16
        assert mx.array_equal(array, dense.parameters[name].astype(mx.float16))


def test_compute_dtype_casts_floats_and_scales_but_not_codes(
    mixed: GGUFFile, quantized: MLXWeights, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cast = load_weights(mixed, cache_dir=tmp_path_factory.mktemp("cache"), dtype=mx.float32)
    assert cast.quantization == quantized.quantization
    for name, array in cast.parameters.items():
        original = quantized.parameters[name]
        if name.rpartition(".")[0] in quantized.quantization and name.endswith(".weight"):
            assert array.dtype == mx.uint32
            assert mx.array_equal(array, original)
        else:
            assert array.dtype == mx.float32
            assert mx.array_equal(array, original.astype(mx.float32))


def test_file_dtypes_are_kept_by_default(quantized: MLXWeights) -> None:
    scales = {quantized.parameters[f"{m}.scales"].dtype for m in quantized.quantization}
    assert scales == {mx.float16}

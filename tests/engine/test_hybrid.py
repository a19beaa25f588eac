"""The hybrid layout routes each matmul by its row count and keeps the model's answers.

Few rows (a decode step) go to Pensieve's CPU kernel on the quantized weights, more rows (a prompt
chunk) to BLAS on the dense copy; both copies hold the same weights.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from pensieve.core import DeviceSettings
from pensieve.device import CpuKernels, cpu_kernels
from pensieve.engine import LocalModel, load_model
from pensieve.engine.hybrid import KERNEL_MAX_ROWS, HybridEmbedding, HybridLinear, use_cpu_kernels

CPU = DeviceSettings(device="cpu")


@pytest.fixture(scope="module")
def kernels() -> CpuKernels:
    built = cpu_kernels()
    if built is None:
        pytest.skip("Pensieve's CPU kernels are not available on this machine")
    return built


def _quantized_model(bits: int, group_size: int) -> nn.Module:
    mx.random.seed(7)
    model = nn.Sequential(
        nn.Embedding(96, 128), nn.Linear(128, 128, bias=True), nn.Linear(128, 72, bias=False)
    )
    nn.quantize(model, group_size=group_size, bits=bits)
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize("rows", [1, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1, 64])
def test_few_rows_take_the_kernel_and_more_rows_take_blas(kernels: CpuKernels, rows: int) -> None:
    quantized = _quantized_model(bits=4, group_size=32).layers[1]
    layer = HybridLinear(quantized, kernels)
    x = mx.random.normal((rows, 128))
    kernel = kernels.quantized_matmul(x, layer.weight, layer.scales, layer.biases, group_size=32, bits=4)
    blas = x @ layer.dense.T
    expected = kernel if rows <= KERNEL_MAX_ROWS else blas
    assert np.array_equal(np.array(layer(x)), np.array(expected + quantized.bias))
    reference = np.array(quantized(x))  # MLX's own quantized matmul on the same weights
    np.testing.assert_allclose(np.array(layer(x)), reference, atol=1e-4, rtol=1e-4)


def test_rows_count_every_leading_dimension(kernels: CpuKernels) -> None:
    layer = HybridLinear(_quantized_model(bits=8, group_size=64).layers[2], kernels)
    x = mx.random.normal((2, 12, 128))
    blas = x @ layer.dense.T  # 24 rows: over the kernel's share
    assert np.array_equal(np.array(layer(x)), np.array(blas))


def test_the_model_converts_in_place_and_keeps_its_outputs(kernels: CpuKernels) -> None:
    model = _quantized_model(bits=4, group_size=32)
    tokens = mx.array([[3, 14, 15, 92, 65]])
    before = model(tokens)
    use_cpu_kernels(model, kernels)
    kinds = [type(layer) for layer in model.layers]
    assert kinds[0] is HybridEmbedding and kinds[1] is HybridLinear
    np.testing.assert_allclose(np.array(model(tokens)), np.array(before), atol=1e-4, rtol=1e-4)
    embedding = model.layers[0]
    hidden = mx.random.normal((3, 128))
    np.testing.assert_allclose(
        np.array(embedding.as_linear(hidden)), np.array(hidden @ embedding.dense.T), atol=1e-4, rtol=1e-4
    )


def test_a_width_the_kernel_cannot_take_stays_on_blas(kernels: CpuKernels) -> None:
    model = nn.Sequential(nn.Linear(64, 32, bias=False))
    nn.quantize(model, group_size=64, bits=6)
    layer = HybridLinear(model.layers[0], kernels)
    x = mx.random.normal((1, 64))
    assert not kernels.supports(group_size=64, bits=6)
    assert np.array_equal(np.array(layer(x)), np.array(x @ layer.dense.T))


@pytest.mark.real_model
def test_hybrid_greedy_answers_equal_the_dense_layout(default_model: LocalModel) -> None:
    if default_model.device.weight_layout != "hybrid":
        pytest.skip("the hybrid layout is not the default here")
    dense = load_model(device=CPU, weight_layout="dense", context_length=2048)
    for text in ["What is the capital of France?", "Write a haiku about the sea.", "def fibonacci(n):"]:
        messages = [{"role": "user", "content": text}]
        assert default_model.chat(messages, max_tokens=32).text == dense.chat(messages, max_tokens=32).text

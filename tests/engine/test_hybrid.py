"""The hybrid layout routes each matmul by its row count and keeps the model's answers; decode-step
attention goes to the kernel and keeps them too.

Few rows (a decode step) go to Pensieve's CPU kernel on the quantized weights, more rows (a prompt
chunk) to BLAS on the dense copy; both copies hold the same weights.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx_lm.models.llama as llama
import numpy as np
import pytest
from mlx_lm.models import activations, base
from mlx_lm.models.cache import BatchKVCache

from pensieve.core import DeviceSettings
from pensieve.device import CpuKernels, cpu_kernels
from pensieve.engine import LocalModel, load_model
from pensieve.engine.hybrid import KERNEL_MAX_ROWS, HybridEmbedding, HybridLinear, KernelRoPE, use_cpu_kernels

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


@pytest.mark.parametrize("rows", [1, 8, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1])
def test_few_rows_take_the_kernel_and_more_rows_take_blas(kernels: CpuKernels, rows: int) -> None:
    quantized = _quantized_model(bits=4, group_size=32).layers[1]
    layer = HybridLinear(quantized, kernels)
    x = mx.random.normal((rows, 128))
    kernel = kernels.prepare(layer.weight, layer.scales, layer.biases, group_size=32, bits=4).matmul(x)
    blas = x @ layer.dense.T
    expected = kernel if rows <= KERNEL_MAX_ROWS else blas
    assert np.array_equal(np.array(layer(x)), np.array(expected + quantized.bias))
    reference = np.array(quantized(x))  # MLX's own quantized matmul on the same weights
    np.testing.assert_allclose(np.array(layer(x)), reference, atol=1e-4, rtol=1e-4)


def test_rows_count_every_leading_dimension(kernels: CpuKernels) -> None:
    layer = HybridLinear(_quantized_model(bits=8, group_size=64).layers[2], kernels)
    x = mx.random.normal((2, KERNEL_MAX_ROWS // 2 + 1, 128))
    blas = x @ layer.dense.T  # over the kernel's share of rows, though each sequence is within it
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


def _batched_decode_logits(model: nn.Module) -> np.ndarray:
    """Logits of a left-padded batch of two prompts, then of three one-token steps."""
    cache = [BatchKVCache(left_padding=[0, 3]) for _ in model.layers]
    prompts = mx.array([[5, 9, 2, 7, 11, 4], [0, 0, 0, 8, 3, 6]])
    steps = [model(prompts, cache=cache)[:, -1:, :]]
    for token in (12, 30, 1):
        steps.append(model(mx.array([[token], [token + 1]]), cache=cache))
    return np.array(mx.concatenate(steps, axis=1))


def test_rope_attention_and_swiglu_go_to_the_kernels_and_keep_the_logits(kernels: CpuKernels) -> None:
    args = llama.ModelArgs(
        model_type="llama", hidden_size=128, num_hidden_layers=2, intermediate_size=256,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=40,
    )
    mx.random.seed(3)
    model = llama.Model(args)
    mx.eval(model.parameters())
    # A model loaded before may have routed them already.
    earlier = llama.scaled_dot_product_attention, llama.swiglu
    llama.scaled_dot_product_attention, llama.swiglu = base.scaled_dot_product_attention, activations.swiglu
    before = _batched_decode_logits(model)
    try:
        use_cpu_kernels(model, kernels)
        assert llama.scaled_dot_product_attention.kernels is kernels and llama.swiglu.kernels is kernels
        assert all(isinstance(layer.self_attn.rope, KernelRoPE) for layer in model.layers)
        np.testing.assert_allclose(_batched_decode_logits(model), before, atol=1e-5, rtol=1e-5)
    finally:
        llama.scaled_dot_product_attention, llama.swiglu = earlier


@pytest.mark.real_model
def test_hybrid_greedy_answers_equal_the_dense_layout(default_model: LocalModel) -> None:
    if default_model.device.weight_layout != "hybrid":
        pytest.skip("the hybrid layout is not the default here")
    dense = load_model(device=CPU, weight_layout="dense", context_length=2048)
    for text in ["What is the capital of France?", "Write a haiku about the sea.", "def fibonacci(n):"]:
        messages = [{"role": "user", "content": text}]
        assert default_model.chat(messages, max_tokens=32).text == dense.chat(messages, max_tokens=32).text

"""The CPU fast path against the reference paths.

The fast path is the hybrid layout where Pensieve's CPU kernels are available (decode steps on the
quantized weights through the kernel, prompts on dense float32 weights through the optimized
BLAS), else the dense layout alone.

References: the same model kept quantized (MLX's own quantized kernels, what raw mlx-lm runs),
and the dense model on mlx's bundled netlib BLAS in a child process (``PENSIEVE_BLAS=reference``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from math import prod
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from pensieve.core import DeviceSettings
from pensieve.device import cpu_kernels, load_blas
from pensieve.engine import LocalModel, load_model
from pensieve.engine.model import plan_layout
from pensieve.formats import default_model_path, open_gguf

pytestmark = pytest.mark.real_model

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "def fibonacci(n):"]
LOGIT_TOLERANCE = 2e-3  # measured max |difference| ~2e-4 on logits of magnitude ~40


@pytest.fixture(scope="module")
def quantized_model() -> LocalModel:
    return load_model(weight_layout="quantized", device=DeviceSettings(device="cpu"))


@pytest.fixture
def restore_mlx_limits() -> Iterator[None]:
    memory = mx.get_memory_limit()
    cache = mx.set_cache_limit(0)
    mx.set_cache_limit(cache)
    yield
    mx.set_memory_limit(memory)
    mx.set_cache_limit(cache)


def _fast_layout() -> str:
    if not load_blas().optimized:
        return "quantized"
    return "hybrid" if cpu_kernels() is not None else "dense"


def _prompt(model: LocalModel, text: str) -> list[int]:
    return model.tokenizer.encode(model.chat_template.render([{"role": "user", "content": text}]))


def _logits(model: LocalModel, tokens: list[int]) -> np.ndarray:
    return np.array(model.module(mx.array([tokens]))[0].astype(mx.float32))


def test_the_default_cpu_layout_follows_the_blas(default_model: LocalModel) -> None:
    device = default_model.device
    if device.backend != "cpu":
        pytest.skip("this machine runs on a GPU")
    assert (device.weight_layout, device.compute_dtype) == (_fast_layout(), "float32")
    assert device.blas == load_blas().name


def test_quantized_reference_holds_quantized_modules(quantized_model: LocalModel) -> None:
    assert quantized_model.device.weight_layout == "quantized"
    assert "QuantizedLinear" in {type(m).__name__ for _, m in quantized_model.module.named_modules()}


def test_fast_path_logits_match_the_quantized_path(
    default_model: LocalModel, quantized_model: LocalModel
) -> None:
    tokens = _prompt(default_model, PROMPTS[0])
    fast, reference = _logits(default_model, tokens), _logits(quantized_model, tokens)
    np.testing.assert_allclose(fast, reference, atol=LOGIT_TOLERANCE, rtol=0)


@pytest.mark.parametrize("text", PROMPTS)
def test_fast_path_greedy_answers_equal_the_quantized_path(
    default_model: LocalModel, quantized_model: LocalModel, text: str
) -> None:
    messages = [{"role": "user", "content": text}]
    fast = default_model.chat(messages, max_tokens=16)
    assert fast.text == quantized_model.chat(messages, max_tokens=16).text
    assert fast.finished.completion_tokens > 4


def test_optimized_blas_logits_match_the_reference_blas(default_model: LocalModel, tmp_path: Path) -> None:
    if default_model.device.weight_layout not in ("dense", "hybrid") or not load_blas().optimized:
        pytest.skip("dense weights on an optimized BLAS are not in use here")
    tokens = _prompt(default_model, PROMPTS[0])  # a prompt: BLAS multiplies it in both layouts
    out = tmp_path / "reference.npy"
    code = (
        "import sys, numpy as np\n"
        "from pensieve.core import DeviceSettings\n"
        "from pensieve.device import load_blas\n"
        "from pensieve.engine import load_model\n"
        "import mlx.core as mx\n"
        "assert load_blas().name == 'reference'\n"
        "m = load_model(weight_layout='dense', device=DeviceSettings(device='cpu'))\n"
        f"np.save(sys.argv[1], np.array(m.module(mx.array([{tokens}]))[0]))\n"
    )
    environment = {**os.environ, "PENSIEVE_BLAS": "reference"}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=600, env=environment)
    np.testing.assert_allclose(_logits(default_model, tokens), np.load(out), atol=LOGIT_TOLERANCE, rtol=0)


def test_peak_memory_of_the_cpu_path_stays_within_the_budget() -> None:
    """In a fresh process, so that only this model counts: load, answer, then read MLX's peak."""
    budget = 1024**3
    code = (
        "from pensieve.core import DeviceSettings\n"
        "from pensieve.engine import load_model\n"
        "import mlx.core as mx\n"
        f"model = load_model(device=DeviceSettings(device='cpu', memory_limit_bytes={budget}), context_length=2048)\n"
        f"model.chat([{{'role': 'user', 'content': {PROMPTS[1]!r}}}], max_tokens=16)\n"
        "print(model.device.weight_layout, model.device.memory_budget_bytes, mx.get_peak_memory())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=600, capture_output=True, text=True
    )
    layout, reported_budget, peak = result.stdout.split()
    assert layout == _fast_layout()
    assert int(reported_budget) == budget
    assert int(peak) <= budget


def test_a_budget_too_small_for_float32_keeps_the_weights_quantized(restore_mlx_limits: None) -> None:
    if not load_blas().optimized:
        pytest.skip("without an optimized BLAS the CPU keeps the weights quantized anyway")
    budget = (
        400 * 1024**2
    )  # room for the quantized model (~0.2 GiB at 2k context), not for float32 (~0.6 GiB)
    model = load_model(device=DeviceSettings(device="cpu", memory_limit_bytes=budget), context_length=2048)
    assert model.device.weight_layout == "quantized"
    assert "QuantizedLinear" in {type(m).__name__ for _, m in model.module.named_modules()}


def test_the_planned_memory_covers_the_kv_cache_the_model_really_fills(default_model: LocalModel) -> None:
    """The reservation's KV term is in the compute dtype: float32 on the CPU, twice float16's bytes."""
    gguf = open_gguf(default_model_path())
    context = gguf.spec.context_length
    layout = plan_layout(gguf, default_model.device, context_length=context, preference="dense")
    cache = [KVCache() for _ in default_model.module.layers]
    mx.eval(default_model.module(mx.zeros((1, 16), dtype=mx.int32), cache=cache))
    kv_bytes_per_token = sum(c.keys[..., :16, :].nbytes + c.values[..., :16, :].nbytes for c in cache) // 16
    weight_bytes = 4 * sum(prod(tensor.shape) for tensor in gguf.tensors)
    assert layout.required_bytes - weight_bytes >= kv_bytes_per_token * context

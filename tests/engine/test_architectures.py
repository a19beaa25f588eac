"""Every supported architecture runs on mlx-lm's own module and equals the numpy reference.

One tiny synthetic GGUF per architecture, written the way llama.cpp's converter lays it out, is
loaded through ``load_model`` and its logits are compared with ``tests.support.numpy_reference``
(which follows llama.cpp's graph for that architecture). The files are small enough for sliding
windows, soft caps and both RoPE bases to change the logits.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import msgspec
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import make_prompt_cache

from pensieve.core import DeviceSettings
from pensieve.core.errors import UnsupportedModelError
from pensieve.device import cpu_kernels
from pensieve.engine import IncrementalDecoder, load_model, model_args
from pensieve.formats import gemma3_270m_path, open_gguf
from tests.support.gguf_factory import GEMMA_TEMPLATE, TinyLlamaConfig, write_tiny_gguf
from tests.support.numpy_reference import reference_greedy, reference_logits

TOKENS = [5, 17, 42, 99, 3, 250, 7, 128, 64, 1]
CPU = DeviceSettings(device="cpu")
SMALL = TinyLlamaConfig(hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128)

# name → writer options. Each exercises what its architecture adds to llama.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen2": {"architecture": "qwen2", "config": SMALL, "tokenizer_pre": "qwen2"},
    # head_dim 32 with 4 heads over hidden 64: Qwen 3's head size is its own.
    "qwen3": {"architecture": "qwen3", "config": replace(SMALL, head_dim=32), "tokenizer_pre": "qwen2"},
    # A window wider than the prompt (mlx-lm's gemma2 attends globally; Pensieve caps the context
    # at the window), strong soft caps so they shape the logits.
    "gemma2": {
        "architecture": "gemma2",
        "config": SMALL,
        "metadata": {
            "gemma2.attention.sliding_window": 16,
            "gemma2.attn_logit_softcapping": 5.0,
            "gemma2.final_logit_softcapping": 3.0,
        },
    },
    # Six layers: five sliding (window 4, RoPE base 10000), one global (base 1e6, linear x2).
    "gemma3": {
        "architecture": "gemma3",
        "config": replace(SMALL, num_layers=6, head_dim=32),
        "metadata": {
            "gemma3.attention.sliding_window": 4,
            "gemma3.rope.freq_base": 1e6,
            "gemma3.rope.scaling.type": "linear",
            "gemma3.rope.scaling.factor": 2.0,
        },
    },
    "gemma3-tied": {"architecture": "gemma3", "config": SMALL, "tied": True},
    "phi3": {"architecture": "phi3", "config": SMALL},
    # Phi-4-mini rotates part of each head.
    "phi3-partial-rope": {
        "architecture": "phi3",
        "config": SMALL,
        "tied": True,
        "metadata": {"phi3.rope.dimension_count": 8},
    },
}


def _logits(model: Any, tokens: list[int]) -> np.ndarray:
    return np.array(model.module(mx.array([tokens]))[0].astype(mx.float32))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_logits_match_numpy_reference(tmp_path: Path, name: str) -> None:
    path = write_tiny_gguf(tmp_path / f"{name}.gguf", **ARCHITECTURES[name])
    model = load_model(path, device=CPU, cache_dir=tmp_path / "cache")
    assert model.info.architecture == ARCHITECTURES[name]["architecture"]
    expected = reference_logits(path, TOKENS)
    np.testing.assert_allclose(_logits(model, TOKENS), expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_incremental_decode_matches_reference(tmp_path: Path, name: str) -> None:
    """Token by token through the model's own KV caches (Gemma 3's rotate past the window)."""
    path = write_tiny_gguf(tmp_path / f"{name}.gguf", **ARCHITECTURES[name])
    model = load_model(path, device=CPU, cache_dir=tmp_path / "cache")
    cache = make_prompt_cache(model.module)
    stepwise = [np.array(model.module(mx.array([[t]]), cache=cache)[0, -1]) for t in TOKENS]
    np.testing.assert_allclose(np.stack(stepwise), reference_logits(path, TOKENS), atol=1e-3, rtol=0)


@pytest.mark.parametrize("layout", ["quantized", "dense", "hybrid"])
@pytest.mark.parametrize("name", ["qwen2", "gemma3"])
def test_quantized_weights_match_numpy_reference(
    tmp_path: Path, name: str, layout: Literal["quantized", "dense", "hybrid"]
) -> None:
    if layout == "hybrid" and cpu_kernels() is None:
        pytest.skip("Pensieve's CPU kernels are not available on this machine")
    options = {**ARCHITECTURES[name], "default_type": Q.Q8_0, "tensor_types": {"blk.0.attn_q.weight": Q.Q4_0}}
    path = write_tiny_gguf(tmp_path / f"{name}.gguf", **options)
    model = load_model(path, device=CPU, cache_dir=tmp_path / "cache", weight_layout=layout)
    assert model.device.weight_layout == layout
    np.testing.assert_allclose(_logits(model, TOKENS), reference_logits(path, TOKENS), atol=2e-2, rtol=0)


def test_model_args_follow_the_spec(tmp_path: Path) -> None:
    gemma3 = open_gguf(write_tiny_gguf(tmp_path / "g3.gguf", **ARCHITECTURES["gemma3"])).spec
    args = model_args(gemma3)
    assert (args.sliding_window, args.sliding_window_pattern) == (4, 6)
    assert (args.rope_theta, args.rope_local_base_freq) == (1e6, 10000.0)
    assert args.rope_scaling == {"type": "linear", "factor": 2.0}
    assert args.query_pre_attn_scalar == 32  # the head size
    gemma2 = open_gguf(write_tiny_gguf(tmp_path / "g2.gguf", **ARCHITECTURES["gemma2"])).spec
    args = model_args(gemma2)
    assert (args.attn_logit_softcapping, args.final_logit_softcapping) == (5.0, 3.0)
    qwen2 = model_args(open_gguf(write_tiny_gguf(tmp_path / "q2.gguf", **ARCHITECTURES["qwen2"])).spec)
    assert qwen2.rope_traditional is False


def test_the_27b_gemmas_scale_queries_by_hidden_over_heads(tmp_path: Path) -> None:
    # GGUF does not record query_pre_attn_scalar; llama.cpp knows the 27B models by layer count.
    for architecture, layers in (("gemma2", 46), ("gemma3", 62)):
        path = write_tiny_gguf(tmp_path / f"{architecture}.gguf", architecture=architecture, config=SMALL)
        spec = open_gguf(path).spec
        spec = msgspec.structs.replace(spec, num_layers=layers, head_dim=32, rope_dimensions=32)
        assert model_args(spec).query_pre_attn_scalar == 64 / 4


@pytest.mark.parametrize(
    ("architecture", "config", "metadata", "message"),
    [
        ("qwen2", replace(SMALL, head_dim=32), {}, "head size"),
        ("phi3", SMALL, {"phi3.rope.scaling.type": "linear", "phi3.rope.scaling.factor": 2.0}, "scaling"),
        ("gemma2", SMALL, {"gemma2.rope.scaling.type": "yarn", "gemma2.rope.scaling.factor": 2.0}, "scaling"),
        ("llama", SMALL, {"llama.rope.dimension_count": 8}, "rotating 8 of 16"),
    ],
)
def test_what_the_mlx_lm_module_cannot_express_is_refused(
    tmp_path: Path, architecture: str, config: TinyLlamaConfig, metadata: dict[str, Any], message: str
) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", architecture=architecture, config=config, metadata=metadata)
    with pytest.raises(UnsupportedModelError, match=message):
        load_model(path, device=CPU, cache_dir=tmp_path / "cache")


# --- end to end: tokenizer, chat template, greedy tokens --------------------------------------


def test_qwen2_chat_end_to_end(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "qwen2.gguf", **ARCHITECTURES["qwen2"])
    _check_greedy_chat(path, tmp_path, first_token="<|im_start|>")


def test_gemma3_chat_end_to_end(tmp_path: Path) -> None:
    options = {**ARCHITECTURES["gemma3"], "tokenizer_model": "gemma", "chat_template": GEMMA_TEMPLATE}
    path = write_tiny_gguf(tmp_path / "gemma3.gguf", **options)
    _check_greedy_chat(path, tmp_path, first_token="<bos>")


def _check_greedy_chat(path: Path, tmp_path: Path, first_token: str) -> None:
    model = load_model(path, device=CPU, cache_dir=tmp_path / "cache")
    messages = [{"role": "user", "content": "hello world"}]
    prompt = model.tokenizer.encode(model.chat_template.render(messages, add_generation_prompt=True))
    assert model.tokenizer.decode(prompt[:1]) == first_token
    expected = reference_greedy(path, prompt, 3)
    cache = make_prompt_cache(model.module)
    steps = generate_step(mx.array(prompt), model.module, max_tokens=3, prompt_cache=cache)
    assert [int(token) for token, _ in steps] == expected
    answer = model.chat(messages, max_tokens=3)
    assert answer.finished.prompt_tokens == len(prompt)
    ended = next((i for i, token in enumerate(expected) if token in model.tokenizer.eos_token_ids), None)
    if ended is None:
        assert (answer.finished.stop_reason, answer.finished.completion_tokens) == ("max_tokens", 3)
    else:
        assert (answer.finished.stop_reason, answer.finished.completion_tokens) == ("end_turn", ended + 1)
    decoder = IncrementalDecoder(model.tokenizer.decode)  # random tokens may be partial UTF-8
    text = "".join(decoder.add(token) for token in expected[:ended]) + decoder.flush()
    assert answer.text == text


@pytest.mark.real_model
def test_gemma3_270m_continues_text(tmp_path: Path) -> None:
    """The bundled Gemma 3 270M (a base model, Q4_K_M) through this mapping knows its capitals."""
    model = load_model(gemma3_270m_path(), device=CPU, cache_dir=tmp_path / "cache")
    prompt = model.tokenizer.encode("<bos>The capital of France is Paris, and the capital of Germany is")
    cache = make_prompt_cache(model.module)
    steps = generate_step(mx.array(prompt), model.module, max_tokens=4, prompt_cache=cache)
    assert model.tokenizer.decode([int(token) for token, _ in steps]).startswith(" Berlin")

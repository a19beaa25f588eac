"""pensieve.formats exports exactly its public API, and its types satisfy the core protocols."""

from __future__ import annotations

from pathlib import Path

import pensieve.formats
from pensieve.core.protocols import ChatTemplate, Tokenizer
from pensieve.formats import open_gguf


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(pensieve.formats.__all__) == [
        "CHATML_TEMPLATE",
        "GGUFFile",
        "GGUFTokenizer",
        "JinjaChatTemplate",
        "MLXWeights",
        "ModelFile",
        "ModelSpec",
        "TensorInfo",
        "bundled_models",
        "default_cache_dir",
        "default_model_path",
        "default_models_dir",
        "describe_model",
        "find_models",
        "gemma3_270m_path",
        "load_weights",
        "models_dir",
        "open_gguf",
        "tensor_name_map",
    ]
    public = {name for name in vars(pensieve.formats) if not name.startswith("_")}
    assert public - set(pensieve.formats.__all__) <= {
        "chat_template",
        "default_model",
        "gguf_file",
        "layout",
        "model_dir",
        "spec",
        "tokenizer",
        "weights",
        "annotations",
    }


def test_tokenizer_and_template_satisfy_the_core_protocols(f32_path: Path) -> None:
    gguf_file = open_gguf(f32_path)
    assert isinstance(gguf_file.tokenizer(), Tokenizer)
    assert isinstance(gguf_file.chat_template(), ChatTemplate)

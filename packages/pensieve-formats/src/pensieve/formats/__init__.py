"""Pensieve formats: GGUF reading, model specs, weights for MLX, tokenizer and chat template.

Model files are untrusted input: opening one checks every length and offset in its header, and
problems surface as ``ModelFileError`` (missing, corrupt) or ``UnsupportedModelError`` (valid
but not runnable) from ``pensieve.core.errors``.
"""

from pensieve.formats.chat_template import CHATML_TEMPLATE, JinjaChatTemplate
from pensieve.formats.default_model import bundled_models, default_model_path, gemma3_270m_path
from pensieve.formats.gguf_file import GGUFFile, TensorInfo, open_gguf
from pensieve.formats.layout import tensor_name_map
from pensieve.formats.model_dir import ModelFile, default_models_dir, describe_model, find_models, models_dir
from pensieve.formats.spec import ModelSpec
from pensieve.formats.tokenizer import GGUFTokenizer
from pensieve.formats.weights import MLXWeights, default_cache_dir, load_weights

__all__ = [
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

"""A GGUF file as an MLX model directory that mlx-lm loads by itself (``mlx_lm.load(directory)``).

The directory holds what the engine would run: the same mlx-lm module built by ``build_model``
(quantized layers stay quantized unless asked otherwise), saved with mlx-lm's own ``save_model``
and ``save_config``; ``config.json`` is the ``model_args`` of the file's spec plus the per-module
quantization; the GGUF's tokenizer, special tokens and chat template become ``tokenizer.json``
and ``tokenizer_config.json``, which transformers' ``AutoTokenizer`` reads offline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import typing
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlx_lm.utils import save_config, save_model
from tokenizers import Tokenizer, processors
from transformers import CONFIG_MAPPING

from pensieve.core.errors import InvalidRequestError, PensieveError
from pensieve.engine.build import build_model, model_args
from pensieve.formats import GGUFFile, load_weights, open_gguf

__all__ = ["convert_to_mlx"]

ProgressCallback = Callable[[str], None]

# What mlx-lm or transformers read from a model directory: with ``overwrite``, stale copies of
# these go (a leftover weight shard would be loaded with the new model); other files stay.
_MODEL_FILES = (
    "model*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# tokenizer_config.json special-token role → GGUF metadata key of its id.
_SPECIAL_TOKEN_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def convert_to_mlx(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dequantize: bool = False,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write ``gguf_path`` as an mlx-lm model directory at ``out_dir`` and return its path.

    Quantized layers keep their MLX quantized layout (as ``load_weights`` makes it: Q4_0, Q4_1 and
    Q8_0 exactly, other types requantized); ``dequantize`` writes dense float32 weights instead.
    Refuses a non-empty ``out_dir`` unless ``overwrite``. The files are written to a sibling
    directory first, so a failed conversion leaves ``out_dir`` as it was.
    """
    report = progress or (lambda _stage: None)
    report("reading model file")
    gguf = open_gguf(gguf_path)
    target = Path(out_dir).expanduser().resolve()
    _check_target(target, overwrite)
    report("converting weights")
    weights = load_weights(gguf, cache_dir=cache_dir, dequantize=dequantize)
    report("building model")
    module = build_model(gguf, weights)
    config = _config(gguf, weights.quantization)
    del weights  # the module holds the arrays now; save_model frees them as it writes
    report("writing files")
    staging = target.with_name(f".{target.name}.converting-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_model(staging, module, donate_model=True)
        save_config(config, staging / "config.json")
        _save_tokenizer(gguf, staging)
        _publish(staging, target)
    except OSError as exc:
        raise PensieveError(f"{target}: cannot write the model directory: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise InvalidRequestError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise InvalidRequestError(
            f"{target}: the directory is not empty; choose an empty or new directory, or overwrite it"
        )


def _config(gguf: GGUFFile, quantization: dict[str, dict[str, int]]) -> dict[str, Any]:
    """config.json: the ModelArgs the engine builds with, end tokens, and each quantized module."""
    spec = gguf.spec
    config: dict[str, Any] = _ints_for_transformers(dataclasses.asdict(model_args(spec)))
    padding = gguf.metadata.get("tokenizer.ggml.padding_token_id")
    config["bos_token_id"] = spec.bos_token_id
    config["eos_token_id"] = sorted(spec.eos_token_ids)
    # transformers' defaults for some model types name ids outside a small vocabulary.
    config["pad_token_id"] = padding if isinstance(padding, int) and 0 <= padding < spec.vocab_size else None
    if quantization:
        # mlx-lm quantizes a module named in ``quantization`` with its own settings; the
        # top-level group_size/bits (the most common pair) are the defaults its loader requires.
        (group_size, bits), _count = Counter(
            (q["group_size"], q["bits"]) for q in quantization.values()
        ).most_common(1)[0]
        config["quantization"] = {"group_size": group_size, "bits": bits, **quantization}
    return config


def _ints_for_transformers(config: dict[str, Any]) -> dict[str, Any]:
    """transformers also reads config.json (``AutoTokenizer`` loads the model config) and refuses
    ``16.0`` for a field its config class types ``int``; mlx-lm's ModelArgs may type it float."""
    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING or not dataclasses.is_dataclass(CONFIG_MAPPING[model_type]):
        return config
    integer_fields = {
        field.name
        for field in dataclasses.fields(CONFIG_MAPPING[model_type])
        if field.type is int or set(typing.get_args(field.type)) == {int, type(None)}
    }
    return {
        key: int(value)
        if key in integer_fields and isinstance(value, float) and value.is_integer()
        else value
        for key, value in config.items()
    }


def _save_tokenizer(gguf: GGUFFile, directory: Path) -> None:
    tokenizer = gguf.tokenizer()
    backend = Tokenizer.from_str(tokenizer.backend.to_str())  # a copy: the post-processor is ours
    tokens: list[str] = list(gguf.metadata["tokenizer.ggml.tokens"])
    special: dict[str, str] = {}
    for role, key in _SPECIAL_TOKEN_KEYS.items():
        token_id = gguf.metadata.get(key)
        if isinstance(token_id, int) and 0 <= token_id < len(tokens):
            special[role] = tokens[token_id]
    bos = special.get("bos_token")
    if tokenizer.add_bos and bos is not None:
        # What Hugging Face tokenizers do for such models: BOS before plain text (chat templates
        # are tokenized without it, and write it themselves).
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.bos_token_id)],
        )
    backend.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": tokenizer.add_bos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": gguf.spec.context_length,
        "chat_template": gguf.chat_template().source,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _publish(staging: Path, target: Path) -> None:
    """Move the finished files into ``target``, replacing its stale model files."""
    if not target.exists():
        staging.rename(target)
        return
    for pattern in _MODEL_FILES:
        for stale in target.glob(pattern):
            stale.unlink()
    for written in staging.iterdir():
        written.replace(target / written.name)

"""Pensieve engine: model build on mlx-lm, generation, sampling and stop sequences.

    from pensieve.engine import load_model
    model = load_model()  # the embedded SmolLM2-135M-Instruct
    answer = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=20)
    print(answer.text)
"""

import pensieve.device  # noqa: F401  (first: it loads the fast BLAS before mlx; see pensieve.device.blas)
from pensieve.engine.build import build_model, model_args
from pensieve.engine.convert import convert_to_mlx
from pensieve.engine.batching import BatchScheduler
from pensieve.engine.model import Completion, LocalModel, load_model
from pensieve.engine.pool import LoadedModel, ModelPool, PooledEngine
from pensieve.engine.serving import Engine, EventStream
from pensieve.engine.text import IncrementalDecoder, StopSequenceMatcher

__all__ = [
    "BatchScheduler",
    "Completion",
    "Engine",
    "EventStream",
    "IncrementalDecoder",
    "LoadedModel",
    "LocalModel",
    "ModelPool",
    "PooledEngine",
    "StopSequenceMatcher",
    "build_model",
    "convert_to_mlx",
    "load_model",
    "model_args",
]

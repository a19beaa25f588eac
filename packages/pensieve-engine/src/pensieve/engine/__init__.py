"""Pensieve engine: model build on mlx-lm, generation, sampling and stop sequences.

    from pensieve.engine import load_model
    model = load_model()  # the embedded SmolLM2-135M-Instruct
    answer = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=20)
    print(answer.text)
"""

import pensieve.device  # noqa: F401  (first: it loads the fast BLAS before mlx; see pensieve.device.blas)
from pensieve.engine.build import build_model, model_args
from pensieve.engine.model import Completion, LocalModel, load_model, token_steps
from pensieve.engine.serving import Engine, EventStream
from pensieve.engine.text import IncrementalDecoder, StopSequenceMatcher

__all__ = [
    "Completion",
    "Engine",
    "EventStream",
    "IncrementalDecoder",
    "LocalModel",
    "StopSequenceMatcher",
    "build_model",
    "load_model",
    "model_args",
    "token_steps",
]

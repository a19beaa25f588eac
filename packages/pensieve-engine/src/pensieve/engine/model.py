"""A loaded model and its generate loop.

``LocalModel.generate`` answers one request on the calling thread; it drives the same
``BatchScheduler`` (mlx-lm's batched prefill and pipelined decode) that serves many requests at
once in ``pensieve.engine.Engine``, so both paths produce the same tokens.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import msgspec

from pensieve.core.config import DeviceSettings
from pensieve.core.errors import GenerationError, InvalidRequestError, PromptTooLongError
from pensieve.core.generation import (
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)
from pensieve.core.protocols import ModelInfo
from pensieve.device import (
    DTYPE_BYTES,
    CpuKernels,
    DeviceInfo,
    WeightLayout,
    check_model_fits,
    compute_dtype,
    configure_device,
    cpu_kernels_for,
    estimate_model_bytes,
    plan_device,
    plan_weights,
    probe_device,
)
from pensieve.engine.batching import BatchScheduler
from pensieve.engine.build import build_model
from pensieve.engine.constraint import ConstraintCompiler
from pensieve.engine.hybrid import use_cpu_kernels
from pensieve.formats import GGUFFile, GGUFTokenizer, JinjaChatTemplate, default_model_path, load_weights, open_gguf

__all__ = [
    "Completion",
    "Layout",
    "LocalModel",
    "layout_kernels",
    "load_model",
    "plan_layout",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str], None]
Layout = Literal["auto", "quantized", "dense", "hybrid"]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


class Completion(msgspec.Struct, frozen=True):
    """A whole answer: its text and how it finished."""

    text: str
    finished: GenerationFinished


class LocalModel:
    """A GGUF model loaded into MLX, answering one request at a time on the calling thread."""

    def __init__(
        self,
        gguf: GGUFFile,
        module: nn.Module,
        device: DeviceInfo,
        *,
        model_id: str | None = None,
        context_length: int | None = None,
    ) -> None:
        spec = gguf.spec
        self._module = module
        self._device = device
        self._tokenizer = gguf.tokenizer()
        self._chat_template = gguf.chat_template()
        self._eos = self._tokenizer.eos_token_ids
        self._constraints = ConstraintCompiler(
            gguf.metadata, self._tokenizer.encode, self._eos, self._tokenizer.bos_token_id, spec.vocab_size
        )
        path = Path(gguf.path)
        modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
        self._info = ModelInfo(
            id=model_id or path.name.removesuffix(".gguf"),
            display_name=spec.name or path.stem,
            architecture=spec.architecture,
            quantization=spec.quantization,
            context_length=min(context_length or spec.context_length, spec.context_length),
            parameter_count=spec.parameter_count,
            file_path=str(path),
            file_size=gguf.file_size,
            created_at=modified.isoformat().replace("+00:00", "Z"),
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> DeviceInfo:
        return self._device

    @property
    def tokenizer(self) -> GGUFTokenizer:
        return self._tokenizer

    @property
    def chat_template(self) -> JinjaChatTemplate:
        return self._chat_template

    @property
    def module(self) -> nn.Module:
        """The underlying mlx-lm module (for benchmarks and tests)."""
        return self._module

    def room_for(self, request: GenerationRequest) -> int:
        """How many tokens the answer may have: ``max_tokens`` clamped to what the context leaves.

        Raises PromptTooLongError when the prompt alone leaves no room for even one token, and
        InvalidRequestError when the request's grammar constraint cannot be compiled.
        """
        prompt_length = len(request.prompt_tokens)
        context = self._info.context_length
        if prompt_length >= context:
            raise PromptTooLongError(prompt_length, context - 1)
        if request.max_tokens < 1:
            raise InvalidRequestError("max_tokens: must be at least 1")
        if request.constraint is not None:
            self._constraints.check(request.constraint)
        return min(request.max_tokens, context - prompt_length)

    def scheduler(
        self, *, max_running: int = 1, prefill_chunk_tokens: int = 256, prefix_cache_bytes: int = 0
    ) -> BatchScheduler:
        """A batch scheduler for this model. Create and use it on one thread: it owns that thread's MLX stream."""
        return BatchScheduler(
            self._module,
            self._tokenizer.decode,
            self._eos,
            logits_processors=self._logits_processors,
            max_running=max_running,
            prefill_chunk_tokens=prefill_chunk_tokens,
            prefix_cache_bytes=prefix_cache_bytes,
        )

    def generate(
        self, request: GenerationRequest, cancelled: threading.Event | None = None
    ) -> Iterator[GenerationEvent]:
        """Events of the answer: one GenerationStarted, text deltas, then one GenerationFinished.

        Setting ``cancelled`` stops generation before the next token; the iterator then ends
        without a GenerationFinished.
        """
        if not request.prompt_tokens:
            raise InvalidRequestError("the prompt is empty")
        limit = self.room_for(request)
        scheduler = self.scheduler()
        scheduler.add(0, request, limit)
        try:
            while scheduler.busy:
                if cancelled is not None and cancelled.is_set():
                    return
                for _key, events, _done in scheduler.step():
                    yield from events
        except (RuntimeError, ValueError) as exc:
            raise GenerationError(f"generation failed: {exc}") from exc
        finally:
            scheduler.close()

    def _logits_processors(self, request: GenerationRequest) -> list[LogitsProcessor] | None:
        if request.constraint is None:
            return None
        return [self._constraints.processor(request.constraint, len(request.prompt_tokens))]

    def complete(self, request: GenerationRequest) -> Completion:
        """The whole answer at once."""
        parts: list[str] = []
        for event in self.generate(request):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, GenerationFinished):
                return Completion("".join(parts), event)
        raise GenerationError("generation ended without finishing")  # unreachable without cancellation

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 256,
        sampling: SamplingParams = SamplingParams(temperature=0.0),
        stop_sequences: Sequence[str] = (),
    ) -> Completion:
        """Answer a conversation rendered with the model's own chat template (greedy by default)."""
        prompt = self._chat_template.render(messages, add_generation_prompt=True)
        request = GenerationRequest(
            prompt_tokens=tuple(self._tokenizer.encode(prompt)),
            max_tokens=max_tokens,
            sampling=sampling,
            stop_sequences=tuple(stop_sequences),
        )
        return self.complete(request)


def layout_kernels(settings: DeviceSettings, device: DeviceInfo, preference: Layout) -> CpuKernels | None:
    """Pensieve's CPU kernels when ``preference`` may pick the hybrid layout on ``device`` (built
    on first use), else None, so an explicit quantized or dense load never builds them."""
    return cpu_kernels_for(settings, device) if preference in ("auto", "hybrid") else None


def plan_layout(
    gguf: GGUFFile,
    device: DeviceInfo,
    *,
    context_length: int,
    preference: Layout = "auto",
    kernels: bool = False,
    prefix_cache_bytes: int = 0,
) -> WeightLayout:
    """How ``load_model`` holds ``gguf``'s weights on ``device``, with the memory that needs
    (weights plus a ``context_length`` KV cache in the layout's compute dtype, and activations),
    plus ``prefix_cache_bytes`` when the model is served with a prefix cache of that budget.

    ``kernels``: Pensieve's CPU kernels are available, so the hybrid layout is an option for a
    quantized model.
    """
    spec = gguf.spec

    def required(weight_bytes: int, kind: Literal["quantized", "dense", "hybrid"]) -> int:
        return prefix_cache_bytes + estimate_model_bytes(
            weight_bytes=weight_bytes,
            context_length=context_length,
            num_layers=spec.num_layers,
            num_kv_heads=spec.num_kv_heads,
            head_dim=spec.head_dim,
            kv_bytes_per_element=DTYPE_BYTES[compute_dtype(device, kind)],
        )

    dense_bytes = 4 * sum(math.prod(tensor.shape) for tensor in gguf.tensors)
    # The file's quantized tensors stand in for MLX's affine copy of them (a little smaller: GGUF
    # scales are float16, the hybrid layout's are float32), twice: the kernel keeps a packed copy.
    hybrid = kernels and gguf.quantized and device.backend == "cpu"
    return plan_weights(
        device,
        quantized_bytes=required(gguf.tensor_bytes, "quantized"),
        dense_bytes=required(dense_bytes, "dense"),
        hybrid_bytes=required(dense_bytes + 2 * gguf.tensor_bytes, "hybrid") if hybrid else None,
        preference=preference,
    )


def load_model(
    path: str | Path | None = None,
    *,
    device: DeviceSettings | None = None,
    model_id: str | None = None,
    context_length: int | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    weight_layout: Layout = "auto",
) -> LocalModel:
    """Load a GGUF model (default: the embedded SmolLM2-135M-Instruct) onto the chosen device.

    The device layer picks how the weights are held (``plan_weights``: quantized on a GPU; on a
    CPU with an optimized BLAS, hybrid when Pensieve's CPU kernels are available, else dequantized
    float32, when it fits); ``weight_layout`` overrides that choice. Refuses, before reading the
    weights, a model whose weights plus full-context KV cache do not fit the device's memory budget.
    """
    report = progress or (lambda _stage: None)
    settings = device or DeviceSettings()
    machine = probe_device()
    planned = plan_device(settings, machine)
    report("reading model file")
    gguf = open_gguf(path if path is not None else default_model_path())
    spec = gguf.spec
    context = min(context_length or spec.context_length, spec.context_length)
    kernels = layout_kernels(settings, planned, weight_layout)
    layout = plan_layout(
        gguf, planned, context_length=context, preference=weight_layout, kernels=kernels is not None
    )
    logger.info("weights: %s %s (%s)", layout.kind, layout.dtype, layout.reason)
    check_model_fits(layout.required_bytes, planned, what=Path(gguf.path).name)
    device_info = configure_device(settings, machine)  # only a model that fits changes MLX's limits
    report("loading weights")
    weights = load_weights(
        gguf,
        cache_dir=cache_dir if cache_dir is not None else settings.cache_dir,
        dequantize=layout.kind == "dense",  # the hybrid layout dequantizes a copy layer by layer
        dtype=getattr(mx, layout.dtype),
    )
    report("building model")
    module = build_model(gguf, weights)
    in_use = kernels if layout.kind == "hybrid" else None  # planned only when kernels were given
    if in_use is not None:
        use_cpu_kernels(module, in_use)
    device_info = msgspec.structs.replace(
        device_info,
        weight_layout=layout.kind,
        compute_dtype=layout.dtype,
        cpu_kernels=in_use.description if in_use is not None else None,
    )
    return LocalModel(gguf, module, device_info, model_id=model_id, context_length=context)

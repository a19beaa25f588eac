"""Several models in one memory budget: loaded on first use, unloaded least-recently-used.

Each model is described from its GGUF header up front (``pensieve.formats.find_models``), loaded
with ``load_model`` when a request first names it, and served by its own ``Engine``. Before a
load the pool reserves the model's whole need (weights + full-context KV cache + activations, as
``load_model`` plans it, + its engine's prefix-cache budget) and unloads idle models, least
recently used first, until the reservation fits the device budget. A model with a request in
flight is never unloaded: if only such models stand in the way, the load is refused with
OverloadedError (529, retry later). Idle models other than the default are also unloaded
``keep_alive_seconds`` after their last request.

Loads and unloads run one at a time on a worker thread, never on the event loop; callers asking
for a model that is already loading wait for that same load.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlx.core as mx
import msgspec
from mlx.utils import tree_flatten

from pensieve.core.config import Config, DeviceSettings, EngineSettings
from pensieve.core.errors import ModelFileError, NotFoundError, OverloadedError
from pensieve.core.generation import GenerationEvent, GenerationRequest
from pensieve.core.protocols import ModelInfo
from pensieve.device import (
    DeviceInfo,
    WeightLayout,
    check_model_fits,
    format_bytes,
    plan_device,
    probe_device,
)
from pensieve.engine.model import Layout, LocalModel, layout_kernels, load_model, plan_layout
from pensieve.engine.serving import Engine
from pensieve.engine.threads import join_mlx_thread
from pensieve.formats import (
    GGUFTokenizer,
    JinjaChatTemplate,
    ModelFile,
    describe_model,
    find_models,
    open_gguf,
)

__all__ = ["LoadedModel", "ModelPool", "PooledEngine"]

logger = logging.getLogger(__name__)


class LoadedModel(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded model as ``/api/ps`` reports it."""

    name: str
    architecture: str
    quantization: str
    weight_layout: str
    """``quantized`` or ``dense`` (dequantized float32): how the weights are held."""
    memory_bytes: int
    """Bytes of the weights as held in memory (MLX arrays)."""
    reserved_bytes: int
    """What the model counts against the budget: weights, full-context KV cache, activations."""
    context_length: int
    loaded_at: str
    """RFC 3339, UTC."""
    last_used_at: str
    expires_at: str | None
    """When keep-alive unloads it if no request comes; None for the default model or keep-alive 0."""
    running: int
    """Requests admitted and not finished (queued ones included)."""


class PooledEngine:
    """A loaded model's Engine, counting the event streams it hands out.

    A stream counts from admission until it ends or is closed, so the pool sees a request as in
    flight even between the engine finishing it and the caller reading its last event (when a
    caller may still start a follow-up generation, as a thinking turn does).
    Implements ``pensieve.core.protocols.GenerationBackend``.
    """

    def __init__(self, engine: Engine, on_idle: Callable[[], None]) -> None:
        self._engine = engine
        self._open = 0
        self._on_idle = on_idle

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def info(self) -> ModelInfo:
        return self._engine.info

    @property
    def tokenizer(self) -> GGUFTokenizer:
        return self._engine.tokenizer

    @property
    def chat_template(self) -> JinjaChatTemplate:
        return self._engine.chat_template

    @property
    def alive(self) -> bool:
        return self._engine.alive

    @property
    def queue_depth(self) -> int:
        return self._engine.queue_depth

    @property
    def busy(self) -> int:
        """Requests in flight: streams admitted and not yet finished or closed.

        Every request reaches the engine through here, so this counts them all. A closed
        stream's generation may still be winding down; ``Engine.close`` waits for it.
        """
        return self._open

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        events = self._engine.stream(request)
        self._open += 1
        return _CountedStream(events, self._closed)

    def _closed(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._on_idle()


class _CountedStream(AsyncIterator[GenerationEvent]):
    """Tells its PooledEngine once, however it ends: exhausted, failed, closed or dropped."""

    def __init__(self, events: AsyncIterator[GenerationEvent], closed: Callable[[], None]) -> None:
        self._events = events
        self._closed: Callable[[], None] | None = closed

    def __aiter__(self) -> _CountedStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        try:
            return await self._events.__anext__()
        except BaseException:
            self._end()
            raise

    async def aclose(self) -> None:
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
        finally:
            self._end()

    def _end(self) -> None:
        closed, self._closed = self._closed, None
        if closed is not None:
            closed()

    def __del__(self) -> None:
        self._end()


class _Worker:
    """The one thread that loads and unloads models, in the order asked (an unload queued before
    a load frees its memory first). Not a ThreadPoolExecutor: closing must also wait for the OS
    to end the thread, as ``Engine.close`` does, or MLX's thread-local destructors can abort a
    process that is exiting."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="pensieve-load", daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((functools.partial(function, *args), future))
        return future

    def close(self) -> None:
        """Finish the queued jobs, then stop the thread and wait until it is gone."""
        self._jobs.put(None)
        join_mlx_thread(self._thread)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it; the thread carries on
                future.set_exception(exc)
            else:
                future.set_result(result)


class _Slot:
    """One available model and, while it is loaded or loading, its state. Guarded by the pool's lock."""

    def __init__(self, file: ModelFile) -> None:
        self.file = file
        self.plan: WeightLayout | None = None
        self.pending: concurrent.futures.Future[tuple[LocalModel, Engine]] | None = None
        self.model: LocalModel | None = None
        self.handle: PooledEngine | None = None
        self.reserved = 0
        self.memory = 0
        self.loaded_at = 0.0
        self.last_used = 0.0  # monotonic

    @property
    def loaded(self) -> bool:
        return self.handle is not None

    @property
    def counted(self) -> bool:
        """Whether its reservation counts against the budget (loaded or loading)."""
        return self.loaded or self.pending is not None


class ModelPool:
    """The available models of a server, loaded on demand within the device's memory budget.

    ``models`` maps names to GGUF files (see ``pensieve.formats.find_models``); ``default`` names
    the model that ``hatch run serve`` loads at start and that keep-alive never unloads.
    ``engine_options`` are passed to every ``Engine`` (``max_waiting``…); ``context_length`` and
    ``weight_layout`` to every ``load_model``. ``clock`` (monotonic seconds) is for tests.
    """

    def __init__(
        self,
        models: Mapping[str, str | Path],
        *,
        default: str,
        device: DeviceSettings | None = None,
        keep_alive_seconds: float = 300.0,
        context_length: int | None = None,
        weight_layout: Layout = "auto",
        engine_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if default not in models:
            raise NotFoundError(f"model: {default} (the default model is not among the available models)")
        self._settings = device or DeviceSettings()
        self._device = plan_device(self._settings, probe_device())
        self._context_length = context_length
        self._layout: Layout = weight_layout
        self._keep_alive = keep_alive_seconds
        self._engine_options = dict(engine_options or {})
        self._clock = clock
        self._default = default
        self._slots = {
            name: _Slot(describe_model(name, Path(path), context_length)) for name, path in models.items()
        }
        self._lock = threading.RLock()
        self._worker = _Worker()
        self._reaper: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config) -> ModelPool:
        """The pool a server with ``config`` serves: ``find_models(config.model)``, default first."""
        models = find_models(config.model)
        return cls(
            models,
            default=next(iter(models)),
            device=config.device,
            keep_alive_seconds=config.model.keep_alive_seconds,
            context_length=config.model.context_length,
            engine_options={"max_waiting": config.limits.max_waiting, "settings": config.engine},
        )

    @property
    def default(self) -> str:
        return self._default

    @property
    def device(self) -> DeviceInfo:
        """The device the models load onto (before any is loaded: no weight layout yet)."""
        return self._device

    @property
    def budget_bytes(self) -> int:
        return self._device.memory_budget_bytes

    def names(self) -> list[str]:
        """The servable models' names, the default first."""
        return [name for name, slot in self._slots.items() if slot.file.info is not None]

    def describe(self, name: str) -> ModelInfo:
        """What ``name``'s header says; NotFoundError if unknown, its problem if unservable."""
        return _servable(self._slot(name).file)

    def required_bytes(self, name: str) -> int:
        """What loading ``name`` counts against the budget: weights in the layout ``load_model``
        will choose, full-context KV cache and activations (``pensieve.device.estimate_model_bytes``),
        and the prefix-cache budget of the engine that serves it."""
        with self._lock:
            slot = self._slot(name)
            slot.plan = slot.plan or self._plan(slot.file)
            return slot.plan.required_bytes

    async def acquire(self, name: str) -> PooledEngine:
        """``name``'s engine, loading it first if needed (off the event loop).

        Callers that want it while it loads share that one load. The engine is returned loaded,
        and it stays loaded until the caller next awaits: streams it admits before then keep it.
        """
        self._start_reaper()
        while True:
            with self._lock:
                self._expire()
                slot = self._slot(name)
                if slot.handle is not None:
                    slot.last_used = self._clock()
                    return slot.handle
                pending = slot.pending or self._start_load(slot)
            await _shared(pending)

    def load(self, name: str) -> PooledEngine:
        """Load ``name`` now on the calling thread's behalf (blocking): for start-up, before serving."""
        while True:
            with self._lock:
                slot = self._slot(name)
                if slot.handle is not None:
                    slot.last_used = self._clock()
                    return slot.handle
                pending = slot.pending or self._start_load(slot)
            pending.result()

    def model(self, name: str) -> LocalModel:
        """The loaded ``LocalModel`` of ``name`` (for start-up banners and tests); NotFoundError if not loaded."""
        with self._lock:
            model = self._slot(name).model
        if model is None:
            raise NotFoundError(f"model {name} is not loaded")
        return model

    def loaded_models(self) -> list[LoadedModel]:
        """The loaded models, most recently used first (what /api/ps shows)."""
        with self._lock:
            self._expire()
            slots = sorted(
                (s for s in self._slots.values() if s.handle is not None), key=lambda s: -s.last_used
            )
            return [self._report(slot) for slot in slots]

    def close(self) -> None:
        """Unload every model and stop the worker thread (blocks until the engines are gone)."""
        with self._lock:
            for slot in self._slots.values():
                if slot.handle is not None:
                    self._unload(slot, "at shutdown")
        self._worker.close()

    # What /health and /metrics read (``pensieve.server.EngineStatus``): the default model's
    # facts, and liveness and queue depth over the loaded engines.

    @property
    def info(self) -> ModelInfo:
        """The default model's facts, as /health reports them."""
        return self.describe(self._default)

    @property
    def alive(self) -> bool:
        with self._lock:
            return all(s.handle.alive for s in self._slots.values() if s.handle is not None)

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return sum(s.handle.queue_depth for s in self._slots.values() if s.handle is not None)

    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            raise NotFoundError(f"model: {name}")
        _servable(slot.file)
        return slot

    def _start_load(self, slot: _Slot) -> concurrent.futures.Future[tuple[LocalModel, Engine]]:
        """Reserve ``slot``'s memory (unloading idle models, LRU first) and queue its load."""
        name = slot.file.name
        plan = slot.plan = slot.plan or self._plan(slot.file)
        check_model_fits(plan.required_bytes, self._device, what=f"model {name}")
        budget = self._device.memory_budget_bytes
        used = sum(s.reserved for s in self._slots.values() if s.counted)
        idle = sorted(
            (s for s in self._slots.values() if s.handle is not None and not s.handle.busy),
            key=lambda s: s.last_used,
        )
        victims: list[_Slot] = []
        while used + plan.required_bytes > budget and idle:
            victim = idle.pop(0)
            victims.append(victim)
            used -= victim.reserved
        if used + plan.required_bytes > budget:
            busy = ", ".join(s.file.name for s in self._slots.values() if s.counted and s not in victims)
            raise OverloadedError(
                f"cannot load model {name} now: it needs {format_bytes(plan.required_bytes)}, and the "
                f"models in use ({busy}) leave {format_bytes(max(0, budget - used))} of the "
                f"{format_bytes(budget)} budget; retry when their requests have finished"
            )
        for victim in victims:
            self._unload(victim, f"to make room for {name}")
        slot.reserved = plan.required_bytes
        pending = self._worker.submit(self._load, slot.file, plan)
        slot.pending = pending
        pending.add_done_callback(lambda done: self._finish_load(slot, done))
        return pending

    def _plan(self, file: ModelFile) -> WeightLayout:
        """The layout ``load_model`` will choose for ``file``, with its memory need."""
        gguf = open_gguf(file.path)
        context = min(self._context_length or gguf.spec.context_length, gguf.spec.context_length)
        kernels = layout_kernels(self._settings, self._device, self._layout) is not None
        engine: EngineSettings = self._engine_options.get("settings") or EngineSettings()
        return plan_layout(
            gguf,
            self._device,
            context_length=context,
            preference=self._layout,
            kernels=kernels,
            prefix_cache_bytes=engine.prefix_cache_bytes,
        )

    def _load(self, file: ModelFile, plan: WeightLayout) -> tuple[LocalModel, Engine]:
        """On the worker thread: load in the planned layout (so the reservation holds) and serve it."""
        started = time.perf_counter()
        model = load_model(
            file.path,
            device=self._settings,
            model_id=file.name,
            context_length=self._context_length,
            weight_layout=plan.kind,
        )
        engine = Engine(model, **self._engine_options)
        seconds = time.perf_counter() - started
        logger.info("loaded model %s in %.1f s: %s weights (%s)", file.name, seconds, plan.kind, plan.reason)
        return model, engine

    def _finish_load(self, slot: _Slot, done: concurrent.futures.Future[tuple[LocalModel, Engine]]) -> None:
        with self._lock:
            slot.pending = None
            if done.cancelled() or done.exception() is not None:
                slot.reserved = 0
                logger.warning("loading model %s failed: %r", slot.file.name, done.exception())
                return
            model, engine = done.result()
            slot.model = model
            slot.handle = PooledEngine(engine, on_idle=lambda: self._touch(slot))
            slot.memory = sum(array.nbytes for _, array in tree_flatten(model.module.parameters()))
            slot.loaded_at = time.time()
            slot.last_used = self._clock()

    def _touch(self, slot: _Slot) -> None:
        """A request ended: keep-alive counts from now."""
        with self._lock:
            slot.last_used = self._clock()

    def _unload(self, slot: _Slot, why: str) -> None:
        """Forget ``slot``'s model now and close its engine on the worker, before any later load."""
        handle = slot.handle
        if handle is None:
            return
        logger.info("unloading model %s %s", slot.file.name, why)
        slot.handle = None
        slot.model = None
        slot.reserved = 0
        slot.memory = 0
        self._worker.submit(_close, [handle.engine])

    def _expire(self) -> None:
        """Unload idle models (not the default) whose keep-alive has run out."""
        if not self._keep_alive:
            return
        now = self._clock()
        for name, slot in self._slots.items():
            handle = slot.handle
            idle = handle is not None and not handle.busy
            if name != self._default and idle and now - slot.last_used >= self._keep_alive:
                self._unload(slot, f"after {self._keep_alive:g} s idle")

    def _next_expiry(self) -> float | None:
        """When the next idle model's keep-alive runs out (a busy one's restarts when it ends)."""
        with self._lock:
            times = [
                slot.last_used + self._keep_alive
                for name, slot in self._slots.items()
                if name != self._default and slot.handle is not None and not slot.handle.busy
            ]
        return min(times) if times else None

    def _start_reaper(self) -> None:
        """Expire idle models on time even when no request comes; one task per event loop."""
        loop = asyncio.get_running_loop()
        if self._keep_alive and (
            self._reaper is None or self._reaper.done() or self._reaper.get_loop() is not loop
        ):
            self._reaper = loop.create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            expiry = self._next_expiry()
            wait = self._keep_alive if expiry is None else expiry - self._clock()
            await asyncio.sleep(min(max(wait, 0.0), self._keep_alive) + 0.01)
            with self._lock:
                self._expire()

    def _report(self, slot: _Slot) -> LoadedModel:
        assert slot.model is not None and slot.handle is not None
        info, device = slot.model.info, slot.model.device
        idle_for = self._clock() - slot.last_used
        last_used = time.time() - idle_for
        expires = (
            None
            if slot.file.name == self._default or not self._keep_alive
            else _rfc3339(time.time() + max(0.0, self._keep_alive - idle_for))
        )
        return LoadedModel(
            name=slot.file.name,
            architecture=info.architecture,
            quantization=info.quantization,
            weight_layout=device.weight_layout,
            memory_bytes=slot.memory,
            reserved_bytes=slot.reserved,
            context_length=info.context_length,
            loaded_at=_rfc3339(slot.loaded_at),
            last_used_at=_rfc3339(last_used),
            expires_at=expires,
            running=slot.handle.busy,
        )


def _servable(file: ModelFile) -> ModelInfo:
    """The file's facts, or the error that keeps it from being served (raised by opening it again)."""
    if file.info is None:
        open_gguf(file.path)
        raise ModelFileError(f"model {file.name}: {file.problem}")
    return file.info


def _close(holder: list[Engine]) -> None:
    """On the worker thread: end the engine, then give its memory back before the next load.

    The engine comes in a list so that this holds the last reference the pool had to it.
    """
    engine = holder.pop()
    engine.close()
    del engine
    gc.collect()
    mx.clear_cache()


async def _shared(pending: concurrent.futures.Future[Any]) -> None:
    """Wait for a load others may wait for too: cancelling this waiter does not cancel the load."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_done: concurrent.futures.Future[Any]) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(lambda: waiter.done() or waiter.set_result(None))

    pending.add_done_callback(wake)
    await waiter
    pending.result()  # a failed load raises here, in every waiter


def _rfc3339(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, tz=timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )

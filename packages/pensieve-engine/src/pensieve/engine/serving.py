"""Serving a LocalModel to async code: one dedicated thread owns MLX and batches all requests."""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator

from pensieve.core.config import EngineSettings
from pensieve.core.errors import GenerationError, InvalidRequestError, OverloadedError, PensieveError
from pensieve.core.generation import GenerationEvent, GenerationFinished, GenerationRequest
from pensieve.core.protocols import ModelInfo
from pensieve.engine.batching import BatchScheduler
from pensieve.engine.model import LocalModel
from pensieve.engine.threads import join_mlx_thread
from pensieve.formats import GGUFTokenizer, JinjaChatTemplate

__all__ = ["Engine", "EventStream"]

_Outcome = GenerationEvent | PensieveError


class _Job:
    """One request in flight: its events flow back to the caller's event loop."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.cancelled = threading.Event()
        self.events: asyncio.Queue[_Outcome] = asyncio.Queue()
        self._loop = loop

    def post(self, outcome: _Outcome) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.events.put_nowait, outcome)


class EventStream(AsyncIterator[GenerationEvent]):
    """The events of one admitted request.

    Its request is cancelled when the stream is closed, when the task reading it is cancelled
    (a client disconnect), or when it is dropped unread.
    """

    def __init__(self, job: _Job) -> None:
        self._job = job
        self._done = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            outcome = await self._job.events.get()
        except asyncio.CancelledError:
            self._close()
            raise
        if isinstance(outcome, PensieveError):
            self._close()
            raise outcome
        if isinstance(outcome, GenerationFinished):
            self._done = True
        return outcome

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        self._done = True
        self._job.cancelled.set()

    def __del__(self) -> None:
        self._job.cancelled.set()


class Engine:
    """Serves a model to async callers: one generation thread runs all requests as one batch.

    Up to ``settings.max_running`` requests decode together (continuous batching, chunked
    prefill, prefix cache: see ``BatchScheduler``); the rest wait, and beyond ``max_waiting``
    waiting requests a new one is refused with OverloadedError (529). Closing a ``stream``
    iterator cancels its request before the next step and frees its batch slot. Implements
    ``pensieve.core.protocols.GenerationBackend``.
    """

    def __init__(
        self, model: LocalModel, *, max_waiting: int = 64, settings: EngineSettings | None = None
    ) -> None:
        self._model = model
        self._settings = settings or EngineSettings()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._max_waiting = max_waiting
        self._count_lock = threading.Lock()
        self._queued = 0  # submitted, not yet taken by the generation thread
        self._scheduled_waiting = 0  # taken, waiting in the scheduler for a batch slot
        self._running = 0
        self._prefix_cache_bytes = 0
        self._dying = False  # set before a dying thread tells its callers, so /health agrees with them
        self._keys = itertools.count()
        self._thread = threading.Thread(target=self._run, name="pensieve-generation", daemon=True)
        self._thread.start()

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def model(self) -> LocalModel:
        return self._model

    @property
    def tokenizer(self) -> GGUFTokenizer:
        return self._model.tokenizer

    @property
    def chat_template(self) -> JinjaChatTemplate:
        return self._model.chat_template

    @property
    def settings(self) -> EngineSettings:
        return self._settings

    @property
    def alive(self) -> bool:
        """False once the generation thread is dying or dead; the server reports it on /health."""
        return self._thread.is_alive() and not self._dying

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch slot."""
        return self._queued + self._scheduled_waiting

    @property
    def running(self) -> int:
        """Requests in the batch (prefilling or decoding)."""
        return self._running

    @property
    def prefix_cache_bytes(self) -> int:
        """Bytes of KV state the prefix cache holds (as of the last step)."""
        return self._prefix_cache_bytes

    def stream(self, request: GenerationRequest) -> EventStream:
        """Admit ``request`` now and return an iterator of its events.

        Request errors (prompt too long, overloaded, engine down) are raised here, at call time,
        so callers can answer with an HTTP error before any byte of a stream is sent.
        """
        if not request.prompt_tokens:
            raise InvalidRequestError("the prompt is empty")
        self._model.room_for(request)
        if not self.alive:
            raise GenerationError("the generation thread is not running")
        with self._count_lock:
            if self.queue_depth >= self._max_waiting:
                raise OverloadedError("the server is overloaded: too many requests are waiting")
            self._queued += 1
        job = _Job(request, asyncio.get_running_loop())
        self._jobs.put(job)
        return EventStream(job)

    def close(self) -> None:
        """Stop the generation thread (open requests end with an error), and wait until it is gone."""
        self._jobs.put(None)
        join_mlx_thread(self._thread, timeout=30)

    def _run(self) -> None:
        settings = self._settings
        scheduler = self._model.scheduler(
            max_running=settings.max_running,
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
            prefix_cache_bytes=settings.prefix_cache_bytes,
        )
        jobs: dict[int, _Job] = {}
        try:
            while self._take_new_jobs(scheduler, jobs):
                for key, job in list(jobs.items()):
                    if job.cancelled.is_set():
                        scheduler.cancel(key)
                        del jobs[key]
                try:
                    results = scheduler.step()
                except Exception as exc:  # the batch's state is unknown: end its requests, start afresh
                    error = GenerationError(f"generation failed: {type(exc).__name__}: {exc}")
                    for job in jobs.values():
                        job.post(error)
                    jobs.clear()
                    scheduler.close()
                    scheduler = self._model.scheduler(
                        max_running=settings.max_running,
                        prefill_chunk_tokens=settings.prefill_chunk_tokens,
                        prefix_cache_bytes=settings.prefix_cache_bytes,
                    )
                    results = []
                for key, events, done in results:
                    job = jobs.pop(key, None) if done else jobs.get(key)
                    if job is not None:
                        for event in events:
                            job.post(event)
                self._running = scheduler.running
                self._scheduled_waiting = scheduler.waiting
                self._prefix_cache_bytes = scheduler.prefix_cache_bytes
        except BaseException as exc:
            self._dying = True
            self._fail_all(jobs, GenerationError(f"the generation thread stopped ({type(exc).__name__}); restart the server"))
            raise
        finally:
            self._running = self._scheduled_waiting = 0
            scheduler.close()
        self._fail_all(jobs, GenerationError("the engine was closed"))

    def _take_new_jobs(self, scheduler: BatchScheduler, jobs: dict[int, _Job]) -> bool:
        """Move submitted jobs into the scheduler, waiting for one when idle; False once closed."""
        block = not scheduler.busy
        while True:
            try:
                job = self._jobs.get(block=block)
            except queue.Empty:
                return True
            block = False
            if job is None:
                return False
            with self._count_lock:
                self._queued -= 1
            if job.cancelled.is_set():
                continue
            key = next(self._keys)
            jobs[key] = job
            scheduler.add(key, job.request, self._model.room_for(job.request))
            self._scheduled_waiting = scheduler.waiting

    def _fail_all(self, jobs: dict[int, _Job], error: GenerationError) -> None:
        """Fail the requests in hand and every queued one, or their callers would wait forever."""
        for job in jobs.values():
            job.post(error)
        jobs.clear()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                with self._count_lock:
                    self._queued -= 1
                job.post(error)

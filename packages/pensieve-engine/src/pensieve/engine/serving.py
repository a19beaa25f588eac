"""Serving a LocalModel to async code: one dedicated thread owns MLX, callers await events."""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator

from pensieve.core.errors import GenerationError, OverloadedError, PensieveError
from pensieve.core.generation import GenerationEvent, GenerationFinished, GenerationRequest
from pensieve.core.protocols import ModelInfo
from pensieve.engine.model import LocalModel
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
    """Runs generation requests for async callers on one generation thread.

    Requests wait in a bounded queue; beyond ``max_waiting`` a new one is refused with
    OverloadedError (529). Closing a ``stream`` iterator early cancels its request before the
    next token. Implements ``pensieve.core.protocols.GenerationBackend``.
    """

    def __init__(self, model: LocalModel, *, max_waiting: int = 64) -> None:
        self._model = model
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._max_waiting = max_waiting
        self._waiting = 0
        self._running = 0
        self._count_lock = threading.Lock()
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
    def alive(self) -> bool:
        """False once the generation thread has died; the server reports it on /health."""
        return self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the generation thread."""
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    def stream(self, request: GenerationRequest) -> EventStream:
        """Admit ``request`` now and return an iterator of its events.

        Request errors (prompt too long, overloaded, engine down) are raised here, at call time,
        so callers can answer with an HTTP error before any byte of a stream is sent.
        """
        self._model.room_for(request)
        if not self.alive:
            raise GenerationError("the generation thread is not running")
        with self._count_lock:
            if self._waiting >= self._max_waiting:
                raise OverloadedError("the server is overloaded: too many requests are waiting")
            self._waiting += 1
        job = _Job(request, asyncio.get_running_loop())
        self._jobs.put(job)
        return EventStream(job)

    def close(self) -> None:
        """Stop the generation thread after the current request, and wait until it is gone."""
        self._jobs.put(None)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            _wait_for_os_thread_exit(self._thread.native_id)

    def _run(self) -> None:
        job: _Job | None = None
        try:
            while (job := self._jobs.get()) is not None:
                with self._count_lock:
                    self._waiting -= 1
                    self._running += 1
                try:
                    if not job.cancelled.is_set():
                        for event in self._model.generate(job.request, cancelled=job.cancelled):
                            job.post(event)
                except PensieveError as exc:
                    job.post(exc)
                except Exception as exc:  # one request's failure must not end the thread
                    job.post(GenerationError(f"generation failed: {type(exc).__name__}: {exc}"))
                finally:
                    with self._count_lock:
                        self._running -= 1
        except BaseException as exc:
            self._fail_pending(job, exc)
            raise

    def _fail_pending(self, current: _Job | None, exc: BaseException) -> None:
        """The thread is dying: fail the request in hand and every queued one, or they would wait forever."""
        error = GenerationError(f"the generation thread stopped ({type(exc).__name__}); restart the server")
        if current is not None:
            current.post(error)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                with self._count_lock:
                    self._waiting -= 1
                job.post(error)


def _wait_for_os_thread_exit(native_id: int | None, timeout: float = 5.0) -> None:
    """Wait until the OS has finished a thread that ``join`` already reported done.

    ``join`` returns before the thread runs its C++ thread-local destructors, and MLX's (left by
    ``mx.async_eval``) take the GIL: if the interpreter is finalizing by then, the thread is
    ended mid-destructor and the process aborts ("terminate called without an active
    exception"). Linux lists a process's live threads in /proc; elsewhere there is no such view,
    so the thread gets a short moment.
    """
    task = f"/proc/self/task/{native_id}"
    if sys.platform != "linux" or native_id is None or not os.path.exists("/proc/self/task"):
        time.sleep(0.05)
        return
    deadline = time.monotonic() + timeout
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.005)

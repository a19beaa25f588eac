"""Real Hypercorn servers on free loopback ports, in background threads, stopped by the tests.

``fake_server`` serves a scripted backend through the real MessagesService (fast); ``real_server``
serves the default SmolLM2 model, loaded once per session.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.applications import Starlette

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.core import Config, GenerationEvent, GenerationFinished, GenerationRequest, build_config
from pensieve.engine import Engine, LocalModel
from pensieve.server import bind_socket, create_app, serve
from tests.server.fakes import FakeBackend

FAKE_BODY_LIMIT = 64 * 1024


@dataclass
class RunningServer:
    base_url: str
    app: Starlette
    backend: Any


@contextmanager
def running(app: Starlette, config: Config) -> Iterator[str]:
    """Serve ``app`` on a free port until the block ends; yields its base URL."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(app, config), kwargs={"sock": sock, "stop": stop}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[RunningServer]:
    backend = FakeBackend()
    # No rate limit: the contract tests send requests in bursts, and tests/reliability covers it.
    flags = {
        "limits.max_body_bytes": FAKE_BODY_LIMIT,
        "model.aliases": ["my-alias"],
        "limits.rate_limit_per_minute": 0,
    }
    config = build_config(flags=flags)
    service = MessagesService(ModelCatalog(backend, aliases=config.model.aliases), config.limits)
    app = create_app(service, config, engine=backend, device={"backend": "cpu", "name": "fake"})
    with running(app, config) as base_url:
        yield RunningServer(base_url, app, backend)


@pytest.fixture
def fake_server(_fake_server: RunningServer) -> Iterator[RunningServer]:
    """The shared fake server, its backend reset to the default script for each test."""
    _fake_server.backend.reset()
    yield _fake_server
    _fake_server.backend.reset()


class ObservedEngine:
    """The real Engine, with a record of how each event stream ended (to see cancellations)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.closed_early = threading.Event()
        self.finished_streams = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)  # info, tokenizer, chat_template, alive, queue_depth, running

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self._observe(self._engine.stream(request))

    async def _observe(self, events: AsyncIterator[GenerationEvent]) -> AsyncIterator[GenerationEvent]:
        finished = False
        try:
            async for event in events:
                finished = isinstance(event, GenerationFinished)
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            if finished:
                self.finished_streams += 1
            else:
                self.closed_early.set()


@pytest.fixture(scope="session")
def real_server(default_model: LocalModel) -> Iterator[RunningServer]:
    config = Config()
    engine = ObservedEngine(Engine(default_model, max_waiting=config.limits.max_waiting))
    service = MessagesService(ModelCatalog(engine), config.limits)
    app = create_app(service, config, engine=engine, device=default_model.device.to_dict())
    try:
        with running(app, config) as base_url:
            yield RunningServer(base_url, app, engine)
    finally:
        engine.close()

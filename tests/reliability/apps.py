"""Apps on the fake backend, in process or on a real Hypercorn server, for the reliability tests."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.core import Config, build_config
from pensieve.server import create_app
from tests.server.fakes import FakeBackend

DEV = {"x-api-key": "test-api-key-12345"}
BODY: dict[str, Any] = {
    "model": "fake-model",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "Hello"}],
}


def fake_app(**flags: Any) -> tuple[Starlette, FakeBackend, Config]:
    """An app on a fresh FakeBackend, configured by dotted-key ``flags``."""
    config = build_config(flags=flags)
    backend = FakeBackend()
    service = MessagesService(ModelCatalog(backend), config.limits)
    app = create_app(service, config, engine=backend, device={"backend": "cpu", "name": "fake"})
    return app, backend, config

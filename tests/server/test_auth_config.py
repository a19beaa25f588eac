"""Who may connect: configured keys only when set; dev keys only on loopback; no public bind without keys."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.core import Config, ConfigError, build_config
from pensieve.server import bind_socket, create_app, is_loopback, serve
from tests.server.conftest import running
from tests.server.fakes import FakeBackend

BODY = {"model": "fake-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _app(**flags: object) -> tuple[Starlette, Config]:
    config = build_config(flags=flags)
    backend = FakeBackend()
    return create_app(MessagesService(ModelCatalog(backend), config.limits), config, engine=backend), config


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_public_bind_without_keys_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _app(**{"server.host": host})
    assert [p.key for p in caught.value.problems] == ["server.api_keys"]
    assert host in str(caught.value)


def test_serve_refuses_a_public_bind_without_keys() -> None:
    config = build_config(flags={"server.host": "0.0.0.0", "server.port": 0})
    app, _ = _app()
    with pytest.raises(ConfigError, match="server.api_keys"):
        serve(app, config)


def test_public_bind_with_keys_is_allowed() -> None:
    app, config = _app(**{"server.host": "0.0.0.0", "server.api_keys": ["k-123"]})
    assert app is not None and config.server.api_keys == ["k-123"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("my-host", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_configured_keys_replace_the_dev_keys() -> None:
    app, config = _app(**{"server.api_keys": ["first-key", "second-key"]})
    with running(app, config) as base_url, httpx.Client(base_url=base_url) as client:
        for key in ("first-key", "second-key"):
            assert client.post("/v1/messages", json=BODY, headers={"x-api-key": key}).status_code == 200
            assert (
                client.post("/v1/messages", json=BODY, headers={"authorization": f"Bearer {key}"}).status_code
                == 200
            )
        for key in ("test-api-key-12345", "sk-ant-api-test123", "first-key-extra", "first"):
            response = client.post("/v1/messages", json=BODY, headers={"x-api-key": key})
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"


def test_bind_socket_reports_a_taken_port() -> None:
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="server.port"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()

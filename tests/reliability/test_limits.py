"""Every limit on a fake model: what trips it, the error the client gets, and that it is configurable.

Connection-level limits (header size, slow headers, slow bodies, idle connections) are tested
on a real Hypercorn server over raw sockets, since only the real server can see them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from pensieve.core import ConfigError
from pensieve.server.limits import RateLimiter
from tests.reliability.apps import BODY, DEV, fake_app
from tests.server.conftest import running
from tests.server.fakes import FakeBackend
from tests.server.sse import parse_sse


def _error(response: httpx.Response, status: int, error_type: str, mentions: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type, body
    assert mentions in body["error"]["message"], body
    assert body["request_id"] == response.headers["request-id"]
    return body


@contextmanager
def _server(**flags: Any) -> Iterator[tuple[str, FakeBackend]]:
    app, backend, config = fake_app(**flags)
    with running(app, config) as base_url:
        yield base_url, backend


def _raw(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


# --- per-key rate limit ---------------------------------------------------------------------


def test_rate_limit_is_per_key_with_retry_after() -> None:
    app, _, _ = fake_app(
        **{
            "server.api_keys": ["key-a", "key-b"],
            "limits.rate_limit_per_minute": 6,
            "limits.rate_limit_burst": 3,
        }
    )
    with TestClient(app) as client:
        for _ in range(3):
            assert client.post("/v1/messages", json=BODY, headers={"x-api-key": "key-a"}).status_code == 200
        refused = client.post("/v1/messages", json=BODY, headers={"x-api-key": "key-a"})
        body = _error(refused, 429, "rate_limit_error", "6 requests per minute per API key")
        assert int(refused.headers["retry-after"]) == 10  # one request every 10 s at 6 per minute
        assert "retry in 10 s" in body["error"]["message"]
        # Another key has its own bucket; bad keys and unguarded routes draw from none.
        for _ in range(5):
            assert client.post("/v1/messages", json=BODY, headers={"x-api-key": "wrong"}).status_code == 401
        assert client.post("/v1/messages", json=BODY, headers={"x-api-key": "key-b"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_rate_limit_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    limiter.acquire("k")
    limiter.acquire("k")
    with pytest.raises(Exception, match="retry in 1 s") as caught:
        limiter.acquire("k")
    assert caught.value.retry_after == pytest.approx(1.0)  # type: ignore[attr-defined]
    now[0] = 1.0
    limiter.acquire("k")  # one request refilled after a second
    now[0] = 100.0
    limiter.acquire("k")
    limiter.acquire("k")  # full again, but never beyond the burst
    with pytest.raises(Exception, match="rate limit exceeded"):
        limiter.acquire("k")


def test_rate_limit_zero_turns_it_off() -> None:
    app, _, _ = fake_app(**{"limits.rate_limit_per_minute": 0, "limits.rate_limit_burst": 1})
    with TestClient(app) as client:
        assert all(client.post("/v1/messages", json=BODY, headers=DEV).status_code == 200 for _ in range(5))


# --- requests in flight ---------------------------------------------------------------------


def test_concurrent_requests_beyond_the_cap_are_529_and_health_still_answers() -> None:
    with _server(**{"limits.max_concurrent_requests": 2}) as (base_url, backend):
        backend.words = [f" w{i}" for i in range(40)]
        backend.delay = 0.05
        stream_body = {**BODY, "max_tokens": 40, "stream": True}
        with httpx.Client(base_url=base_url, timeout=30) as client:
            with (
                client.stream("POST", "/v1/messages", json=stream_body, headers=DEV) as first,
                client.stream("POST", "/v1/messages", json=stream_body, headers=DEV) as second,
            ):
                assert first.status_code == second.status_code == 200
                with httpx.Client(base_url=base_url, timeout=30) as other:
                    refused = other.post("/v1/messages", json=BODY, headers=DEV)
                    _error(refused, 529, "overloaded_error", "limits.max_concurrent_requests")
                    assert other.get("/health").status_code == 200
                for response in (first, second):
                    events = parse_sse(response.iter_lines())
                    assert events[-1][0] == "message_stop"
            assert client.post("/v1/messages", json=BODY, headers=DEV).status_code == 200


# --- request size and count limits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "body", "status", "error_type", "mentions"),
    [
        (
            {"limits.max_body_bytes": 1000},
            {**BODY, "system": "x" * 2000},
            413,
            "request_too_large",
            "1000 bytes",
        ),
        (
            {"limits.max_messages": 2},
            {**BODY, "messages": [{"role": "user", "content": "a"}] * 3},
            400,
            "invalid_request_error",
            "messages: at most 2",
        ),
        (
            {"limits.max_tools": 1},
            {
                **BODY,
                "tools": [
                    {"name": "a", "input_schema": {"type": "object"}},
                    {"name": "b", "input_schema": {"type": "object"}},
                ],
            },
            400,
            "invalid_request_error",
            "tools: at most 1",
        ),
    ],
    ids=["body", "messages", "tools"],
)
def test_request_limits(
    flags: dict[str, Any], body: dict[str, Any], status: int, error_type: str, mentions: str
) -> None:
    app, _, _ = fake_app(**flags)
    with TestClient(app) as client:
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            response = client.post(path, content=json.dumps(body), headers=DEV)
            _error(response, status, error_type, mentions)


def test_a_prompt_beyond_the_context_is_400_never_truncated() -> None:
    app, _, _ = fake_app()
    with TestClient(app) as client:
        body = {**BODY, "messages": [{"role": "user", "content": "x" * 600}]}
        response = client.post("/v1/messages", json=body, headers=DEV)
    _error(response, 400, "invalid_request_error", "prompt is too long: ")


def test_max_output_tokens_caps_max_tokens() -> None:
    app, _, _ = fake_app(**{"limits.max_output_tokens": 2})
    with TestClient(app) as client:
        message = client.post("/v1/messages", json={**BODY, "max_tokens": 32000}, headers=DEV).json()
    assert message["usage"]["output_tokens"] == 2
    assert message["stop_reason"] == "max_tokens"


# --- deadlines ------------------------------------------------------------------------------


def test_request_timeout_ends_a_slow_answer_with_504() -> None:
    with _server(**{"limits.request_timeout_seconds": 0.5}) as (base_url, backend):
        backend.words = [f" w{i}" for i in range(50)]
        backend.delay = 0.1
        started = time.monotonic()
        response = httpx.post(
            f"{base_url}/v1/messages", json={**BODY, "max_tokens": 50}, headers=DEV, timeout=30
        )
        _error(response, 504, "timeout_error", "limits.request_timeout_seconds")
        assert time.monotonic() - started < 3
        assert backend.cancelled.wait(5), "the generation went on after the timeout"
        assert backend.finished == 0


def test_request_timeout_ends_a_slow_stream_with_an_error_event() -> None:
    with _server(**{"limits.request_timeout_seconds": 0.5}) as (base_url, backend):
        backend.words = [f" w{i}" for i in range(50)]
        backend.delay = 0.1
        body = {**BODY, "max_tokens": 50, "stream": True}
        with httpx.stream("POST", f"{base_url}/v1/messages", json=body, headers=DEV, timeout=30) as response:
            assert response.status_code == 200
            events = parse_sse(response.iter_lines())
        names = [name for name, _ in events]
        assert names[0] == "message_start" and "content_block_delta" in names
        assert names[-1] == "error" and "message_stop" not in names
        assert events[-1][1]["error"]["type"] == "timeout_error"
        assert backend.cancelled.wait(5)


def test_a_slow_body_is_refused_with_408() -> None:
    with _server(**{"limits.read_timeout_seconds": 0.5}) as (base_url, _):
        sock = _raw(base_url)
        with sock:
            sock.sendall(
                b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: test-api-key-12345\r\n"
                b'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"model"'
            )
            data, seconds = _read_until_closed(sock, timeout=10)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data
        assert b"connection: close" in head.lower()
        assert b"limits.read_timeout_seconds" in body
        assert 0.4 < seconds < 3


def test_slow_headers_and_idle_connections_are_closed() -> None:
    with _server(**{"limits.keep_alive_timeout_seconds": 1}) as (base_url, _):
        idle = _raw(base_url)
        trickling = _raw(base_url)
        with idle, trickling:
            done = threading.Event()

            def trickle() -> None:
                try:
                    trickling.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
                    while not done.is_set():
                        trickling.sendall(b"x")
                        time.sleep(0.2)
                except OSError:
                    pass  # the server closed the connection

            sender = threading.Thread(target=trickle)
            sender.start()
            try:
                data, seconds = _read_until_closed(trickling, timeout=10)
                assert data == b"" and seconds < 4
                data, seconds = _read_until_closed(idle, timeout=10)
                assert data == b"" and seconds < 4
            finally:
                done.set()
                sender.join()
        assert httpx.get(f"{base_url}/health").status_code == 200


def test_headers_over_the_limit_are_refused_with_431() -> None:
    with _server(**{"limits.max_header_bytes": 4096}) as (base_url, _):
        # Complete in one read: the app measures it.
        big = {**DEV, "x-big": "a" * 5000}
        response = httpx.post(f"{base_url}/v1/messages", json=BODY, headers=big)
        _error(response, 431, "invalid_request_error", "limits.max_header_bytes")
        # Still incomplete beyond the limit: Hypercorn refuses it before any app code runs.
        sock = _raw(base_url)
        with sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8000)
            data, _ = _read_until_closed(sock, timeout=10)
        assert data.startswith(b"HTTP/1.1 431"), data
        ok = httpx.post(f"{base_url}/v1/messages", json=BODY, headers={**DEV, "x-fine": "a" * 2000})
        assert ok.status_code == 200


# --- CORS -----------------------------------------------------------------------------------

PREFLIGHT = {
    "origin": "http://localhost:3000",
    "access-control-request-method": "POST",
    "access-control-request-headers": "x-api-key,content-type,anthropic-version",
}


def test_cors_is_off_by_default() -> None:
    app, _, _ = fake_app()
    with TestClient(app) as client:
        preflight = client.options("/v1/messages", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers
        assert preflight.status_code == 405
        answer = client.post("/v1/messages", json=BODY, headers={**DEV, "origin": "http://localhost:3000"})
        assert answer.status_code == 200
        assert "access-control-allow-origin" not in answer.headers


def test_cors_allows_the_configured_origins_only() -> None:
    app, _, _ = fake_app(**{"server.cors_origins": ["http://localhost:3000"]})
    with TestClient(app) as client:
        preflight = client.options("/v1/messages", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        answer = client.post("/v1/messages", json=BODY, headers={**DEV, "origin": "http://localhost:3000"})
        assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "request-id" in answer.headers["access-control-expose-headers"]
        # The key is still required: CORS only lets the browser read the answer.
        denied = client.post("/v1/messages", json=BODY, headers={"origin": "http://localhost:3000"})
        assert denied.status_code == 401
        stranger = client.options("/v1/messages", headers={**PREFLIGHT, "origin": "https://evil.example"})
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers


def test_cors_wildcard_needs_configured_keys() -> None:
    with pytest.raises(ConfigError, match="server.cors_origins"):
        fake_app(**{"server.cors_origins": ["*"]})
    app, _, _ = fake_app(**{"server.cors_origins": ["*"], "server.api_keys": ["k-1"]})
    with TestClient(app) as client:
        answer = client.post(
            "/v1/messages", json=BODY, headers={"x-api-key": "k-1", "origin": "https://a.example"}
        )
        assert answer.headers["access-control-allow-origin"] == "*"

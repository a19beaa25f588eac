"""Stopping drains: open requests get the grace period, then end with an error; nothing is cut mid-frame.

The first tests stop an in-process server (fake model); the last sends SIGTERM to a real
``pensieve-cli start`` while the real model streams.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from pensieve.server import bind_socket, serve
from tests.reliability.apps import BODY, DEV, fake_app
from tests.server.sse import parse_sse

CLI = str(Path(sys.executable).with_name("pensieve-cli"))


class _Served:
    """A fake-model server in a thread, stopped by the test through ``stop``."""

    def __init__(self, grace: float) -> None:
        self.app, self.backend, config = fake_app(
            **{"server.shutdown_grace_seconds": grace, "limits.rate_limit_per_minute": 0}
        )
        sock = bind_socket("127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=serve, args=(self.app, config), kwargs={"sock": sock, "stop": self.stop}, daemon=True
        )
        self.thread.start()

    def stopped_within(self, seconds: float) -> bool:
        self.thread.join(timeout=seconds)
        return not self.thread.is_alive()


def _stream_in_background(base_url: str, body: dict[str, Any]) -> tuple[threading.Thread, queue.Queue[Any]]:
    """Stream ``body``; the queue gets "started" at the first delta, then the parsed events (or an error)."""
    results: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            with httpx.stream(
                "POST", f"{base_url}/v1/messages", json=body, headers=DEV, timeout=60
            ) as response:
                lines: list[str] = []
                for line in response.iter_lines():
                    lines.append(line)
                    if line == "event: content_block_delta" and lines.count(line) == 1:
                        results.put("started")
                results.put(parse_sse(lines))
        except Exception as exc:  # noqa: BLE001 - the test reports whatever went wrong
            results.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def test_open_streams_end_with_an_error_event_after_the_grace_period() -> None:
    server = _Served(grace=0.5)
    server.backend.words = [f" w{i}" for i in range(200)]
    server.backend.delay = 0.05  # 10 s in all: far beyond the grace period
    _, results = _stream_in_background(server.base_url, {**BODY, "max_tokens": 200, "stream": True})
    assert results.get(timeout=10) == "started"
    started = time.monotonic()
    server.stop.set()
    events = results.get(timeout=10)
    assert isinstance(events, list), events
    assert 0.4 < time.monotonic() - started < 3
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "the server is shutting down"}
    assert server.stopped_within(10), "the server did not stop"
    assert server.backend.cancelled.is_set()


def test_answers_that_finish_within_the_grace_period_complete() -> None:
    server = _Served(grace=5)
    server.backend.words = [f" w{i}" for i in range(20)]
    server.backend.delay = 0.05  # 1 s: inside the grace period
    plain: queue.Queue[httpx.Response] = queue.Queue()
    threading.Thread(
        target=lambda: plain.put(
            httpx.post(
                f"{server.base_url}/v1/messages", json={**BODY, "max_tokens": 20}, headers=DEV, timeout=60
            )
        ),
        daemon=True,
    ).start()
    assert server.backend.started.wait(10)
    _, stream = _stream_in_background(server.base_url, {**BODY, "max_tokens": 20, "stream": True})
    assert stream.get(timeout=10) == "started"
    server.stop.set()
    events = stream.get(timeout=10)
    assert [name for name, _ in events][-1] == "message_stop"
    answer = plain.get(timeout=10)
    assert answer.status_code == 200 and answer.json()["stop_reason"] == "end_turn"
    assert server.stopped_within(10)
    with pytest.raises(httpx.ConnectError):  # and nothing new is accepted
        httpx.post(f"{server.base_url}/v1/messages", json=BODY, headers=DEV)


def test_a_waiting_plain_request_gets_529_when_the_grace_period_ends() -> None:
    server = _Served(grace=0.3)
    server.backend.words = [f" w{i}" for i in range(200)]
    server.backend.delay = 0.05
    answers: queue.Queue[httpx.Response] = queue.Queue()
    body = {**BODY, "max_tokens": 200}
    threading.Thread(
        target=lambda: answers.put(
            httpx.post(f"{server.base_url}/v1/messages", json=body, headers=DEV, timeout=60)
        ),
        daemon=True,
    ).start()
    assert server.backend.started.wait(10)
    server.stop.set()
    answer = answers.get(timeout=10)
    assert answer.status_code == 529
    assert answer.json()["error"] == {"type": "overloaded_error", "message": "the server is shutting down"}
    assert server.stopped_within(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.real_model
def test_sigterm_drains_a_real_server(tmp_path: Path) -> None:
    port = _free_port()
    grace = 2.0
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PENSIEVE_")},
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
        "PENSIEVE_SERVER_SHUTDOWN_GRACE_SECONDS": str(grace),
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [CLI, "start", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "Press Ctrl+C" in line:
                break
        else:
            raise AssertionError(f"the server did not start: {(tmp_path / 'server.log').read_text()}")
        base_url = f"http://127.0.0.1:{port}"
        # ~250 tokens at ~8 tokens/s: still streaming when the grace period ends.
        long_body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 250,
            "temperature": 0,
            "stream": True,
            "messages": [{"role": "user", "content": "Write a long story about a dragon and a knight."}],
        }
        _, results = _stream_in_background(base_url, long_body)
        assert results.get(timeout=120) == "started"
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        events = results.get(timeout=grace + 30)
        assert isinstance(events, list), events  # complete SSE frames, each a parsed JSON object
        names = [name for name, _ in events]
        assert names[0] == "message_start"
        assert names[-1] in ("message_stop", "error"), names[-3:]
        if names[-1] == "error":
            assert events[-1][1]["error"]["type"] == "overloaded_error"
        assert server.wait(timeout=grace + 15) == 0
        assert time.monotonic() - sent < grace + 15
        assert not list((tmp_path / "cache" / "pensieve").glob("*.pid"))
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=30)
        log.close()
        if server.stdout is not None:
            server.stdout.close()


def test_new_requests_are_refused_while_draining() -> None:
    app, _, _ = fake_app()
    with TestClient(app) as client:
        app.state.drain.begin()
        refused = client.post("/v1/messages", json=BODY, headers=DEV)
        assert refused.status_code == 529
        assert refused.json()["error"] == {
            "type": "overloaded_error",
            "message": "the server is shutting down",
        }
        assert client.get("/health").status_code == 200

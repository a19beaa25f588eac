"""Streaming on a fake model: SSE framing and order, late errors, and client disconnects."""

from __future__ import annotations

import time

import httpx
import pytest

from pensieve.core import GenerationError
from tests.server.conftest import RunningServer
from tests.server.sse import assert_well_ordered, parse_sse, text_of

DEV = {"authorization": "Bearer sk-ant-api-test123"}
BODY = {
    "model": "claude-3-sonnet-20240229",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Stream test"}]}],
}


@pytest.fixture
def client(fake_server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=fake_server.base_url, timeout=30) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "headers"),
    [({**BODY, "stream": True}, DEV), (BODY, {**DEV, "x-stream": "true"})],
    ids=["body-stream", "x-stream-header"],
)
def test_stream_is_sse_in_order(
    client: httpx.Client, body: dict[str, object], headers: dict[str, str]
) -> None:
    with client.stream("POST", "/v1/messages", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["request-id"].startswith("req_")
        events = parse_sse(response.iter_lines())
    assert_well_ordered(events)
    assert text_of(events) == "Hello from the fake model."
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 5


def test_error_after_the_start_becomes_an_error_event(
    fake_server: RunningServer, client: httpx.Client
) -> None:
    fake_server.backend.fail_after = (2, GenerationError("generation failed: the device is gone"))
    with client.stream("POST", "/v1/messages", json={**BODY, "stream": True}, headers=DEV) as response:
        assert response.status_code == 200
        events = parse_sse(response.iter_lines())
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-1] == "error"
    assert "message_stop" not in names
    assert events[-1][1]["error"] == {"type": "api_error", "message": "generation failed: the device is gone"}
    assert text_of(events) == "Hello from"


def test_unexpected_error_after_the_start_is_a_generic_error_event(
    fake_server: RunningServer, client: httpx.Client
) -> None:
    fake_server.backend.fail_after = (1, KeyError("internal detail"))
    with client.stream("POST", "/v1/messages", json={**BODY, "stream": True}, headers=DEV) as response:
        events = parse_sse(response.iter_lines())
    assert events[-1][1]["error"] == {"type": "api_error", "message": "internal server error"}
    assert client.get("/health").status_code == 200


def test_client_disconnect_cancels_the_generation(fake_server: RunningServer, client: httpx.Client) -> None:
    backend = fake_server.backend
    backend.words = [f" w{i}" for i in range(100)]
    backend.delay = 0.05
    with client.stream(
        "POST", "/v1/messages", json={**BODY, "max_tokens": 100, "stream": True}, headers=DEV
    ) as r:
        for line in r.iter_lines():
            if line.startswith("event: content_block_delta"):
                break
    # Leaving the block closed the connection mid-stream.
    assert backend.cancelled.wait(timeout=10), "the generation was not cancelled"
    time.sleep(0.2)
    assert backend.finished == 0


def test_client_disconnect_cancels_a_non_streaming_answer(fake_server: RunningServer) -> None:
    backend = fake_server.backend
    backend.words = [f" w{i}" for i in range(100)]
    backend.delay = 0.05
    body = {**BODY, "max_tokens": 100}
    impatient = httpx.Client(base_url=fake_server.base_url, timeout=0.5)
    with impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/messages", json=body, headers=DEV)
    assert backend.cancelled.wait(timeout=10), "the generation was not cancelled"
    assert backend.finished == 0

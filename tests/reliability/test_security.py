"""Secrets stay out of logs; keys are compared in constant time, every configured key every time."""

from __future__ import annotations

import hmac
import logging

import httpx
import pytest

from pensieve.core import GenerationError
from pensieve.core.config import ServerSettings
from pensieve.server import KeyPolicy
from pensieve.server import auth as auth_module
from tests.reliability.apps import BODY, fake_app
from tests.server.conftest import running
from tests.server.sse import parse_sse

SECRET_KEY = "sk-secret-7f3a9c21e5"
MARKER = "MARKER-prompt-91b2"


def test_keys_and_prompt_text_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # the default level of pensieve-cli start
    app, backend, config = fake_app(**{"server.api_keys": [SECRET_KEY]})
    key = {"x-api-key": SECRET_KEY}
    marked = {
        **BODY,
        "system": f"system {MARKER}",
        "messages": [{"role": "user", "content": f"user {MARKER}"}],
    }
    with running(app, config) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.post("/v1/messages", json=marked, headers=key).status_code == 200
        with client.stream("POST", "/v1/messages", json={**marked, "stream": True}, headers=key) as r:
            assert parse_sse(r.iter_lines())[-1][0] == "message_stop"
        assert client.post("/v1/messages/count_tokens", json=marked, headers=key).status_code == 200
        wrong = {"authorization": f"Bearer {SECRET_KEY}-wrong"}
        assert client.post("/v1/messages", json=marked, headers=wrong).status_code == 401
        bad = {**marked, "temperature": f"hot {MARKER}"}
        assert client.post("/v1/messages", json=bad, headers=key).status_code == 400
        # Failures whose messages quote the prompt, before and after a stream starts.
        backend.fail_on_call = RuntimeError(f"tokenizer choked on {MARKER}")
        assert client.post("/v1/messages", json=marked, headers=key).status_code == 500
        backend.fail_on_call = None
        backend.fail_after = (1, GenerationError(f"generation failed near {MARKER}"))
        with client.stream("POST", "/v1/messages", json={**marked, "stream": True}, headers=key) as r:
            assert parse_sse(r.iter_lines())[-1][0] == "error"
        backend.fail_after = (1, KeyError(MARKER))
        with client.stream("POST", "/v1/messages", json={**marked, "stream": True}, headers=key) as r:
            assert parse_sse(r.iter_lines())[-1][0] == "error"

    assert caplog.records, "nothing was logged at all"
    formatter = logging.Formatter()
    for record in caplog.records:
        text = formatter.format(record)  # the message, and any traceback attached to it
        assert SECRET_KEY not in text and MARKER not in text, (record.name, text)
    # The unexpected failure is still diagnosable: its type and stack are logged.
    assert "unexpected RuntimeError" in caplog.text and "unexpected KeyError" in caplog.text

    access = [r for r in caplog.records if r.name == "pensieve.server.access"]
    assert len(access) == 8
    for record in access:
        assert record.request_id.startswith("req_")  # type: ignore[attr-defined]
        assert record.status in (200, 400, 401, 500)  # type: ignore[attr-defined]
        assert record.latency_ms >= 0  # type: ignore[attr-defined]
    for answered in access[:2]:  # the plain answer and the stream
        assert answered.input_tokens > 0 and answered.output_tokens == 5  # type: ignore[attr-defined]


def test_every_configured_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    compare = hmac.compare_digest

    def spy(presented: bytes, known: bytes) -> bool:
        compared.append(known)
        return compare(presented, known)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    policy = KeyPolicy(ServerSettings(api_keys=["first-key", "second-key", "third-key"]))
    assert policy.accepts("first-key")  # a match on the first key still compares the others
    assert compared == [b"first-key", b"second-key", b"third-key"]
    compared.clear()
    assert not policy.accepts("first-ke")
    assert len(compared) == 3


def test_dev_keys_are_refused_once_keys_are_configured() -> None:
    policy = KeyPolicy(ServerSettings(api_keys=["k-1"]))
    assert not policy.dev_keys_accepted
    assert not policy.accepts("test-api-key-12345") and not policy.accepts("sk-ant-api03-x")
    loopback = KeyPolicy(ServerSettings())
    assert loopback.dev_keys_accepted and loopback.accepts("sk-ant-api03-x")

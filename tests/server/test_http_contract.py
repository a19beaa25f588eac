"""The HTTP contract on a fake model: auth, errors, headers, routing, limits, metrics and health."""

from __future__ import annotations

import json

import httpx
import pytest

from pensieve.core import GenerationError
from tests.server.conftest import FAKE_BODY_LIMIT, RunningServer

DEV = {"authorization": "Bearer test-api-key-12345"}


def _body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": "claude-3-sonnet-20240229",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello Pensieve"}]}],
    }
    body.update(overrides)
    return body


def _assert_error(response: httpx.Response, status: int, error_type: str, *, mentions: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_")
    assert mentions in body["error"]["message"]
    message: str = body["error"]["message"]
    return message


@pytest.fixture
def client(fake_server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=fake_server.base_url, timeout=30) as c:
        yield c


# --- authentication -------------------------------------------------------------------------


def test_missing_key_is_401(client: httpx.Client) -> None:
    _assert_error(client.post("/v1/messages", json=_body()), 401, "authentication_error", mentions="missing")


@pytest.mark.parametrize(
    "headers",
    [{"authorization": "Bearer wrong"}, {"x-api-key": "nope"}, {"authorization": "Basic test-api-key-12345"}],
)
def test_invalid_key_is_401(client: httpx.Client, headers: dict[str, str]) -> None:
    _assert_error(client.post("/v1/messages", json=_body(), headers=headers), 401, "authentication_error")


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer test-api-key-12345"},
        {"x-api-key": "test-api-key-12345"},
        {"authorization": "Bearer sk-ant-api-test123"},
        {"x-api-key": "sk-ant-api03-anything"},
    ],
)
def test_dev_keys_are_accepted_on_loopback(client: httpx.Client, headers: dict[str, str]) -> None:
    response = client.post("/v1/messages", json=_body(), headers=headers)
    assert response.status_code == 200, response.text


def test_every_v1_route_requires_a_key(client: httpx.Client) -> None:
    for method, path in [
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/fake-model"),
    ]:
        _assert_error(client.request(method, path), 401, "authentication_error")


def test_health_metrics_and_root_need_no_key(client: httpx.Client) -> None:
    for path in ["/health", "/metrics", "/"]:
        assert client.get(path).status_code == 200
    assert client.head("/").status_code == 200


# --- request errors -------------------------------------------------------------------------


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/messages", content=b'{"model": "x", ', headers=DEV)
    _assert_error(response, 400, "invalid_request_error", mentions="JSON")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"messages": "hello"}, "messages"),
        ({"model": 42}, "model"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(
    client: httpx.Client, overrides: dict[str, object], field: str
) -> None:
    response = client.post("/v1/messages", json=_body(**overrides), headers=DEV)
    _assert_error(response, 400, "invalid_request_error", mentions=field)


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
def test_missing_fields_are_400_naming_the_field(client: httpx.Client, missing: str) -> None:
    body = _body()
    del body[missing]
    response = client.post("/v1/messages", json=body, headers=DEV)
    _assert_error(response, 400, "invalid_request_error", mentions=missing)


def test_prompt_exceeding_the_context_is_400_in_the_api_wording(client: httpx.Client) -> None:
    response = client.post(
        "/v1/messages", json=_body(messages=[{"role": "user", "content": "x" * 600}]), headers=DEV
    )
    message = _assert_error(response, 400, "invalid_request_error", mentions="prompt is too long: ")
    assert message.endswith("tokens > 511 maximum")


def test_prompt_exceeding_the_context_is_400_before_a_stream_starts(client: httpx.Client) -> None:
    body = _body(stream=True, messages=[{"role": "user", "content": "x" * 600}])
    _assert_error(client.post("/v1/messages", json=body, headers=DEV), 400, "invalid_request_error")


def test_unknown_model_is_404(client: httpx.Client) -> None:
    response = client.post("/v1/messages", json=_body(model="gpt-4"), headers=DEV)
    _assert_error(response, 404, "not_found_error", mentions="gpt-4")
    _assert_error(client.get("/v1/models/gpt-4", headers=DEV), 404, "not_found_error")


def test_unknown_route_is_404(client: httpx.Client) -> None:
    _assert_error(client.get("/v2/nothing"), 404, "not_found_error", mentions="/v2/nothing")


def test_wrong_method_is_405_invalid_request(client: httpx.Client) -> None:
    response = client.get("/v1/messages", headers=DEV)
    _assert_error(response, 405, "invalid_request_error", mentions="GET")
    assert "POST" in response.headers["allow"]


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    body = json.dumps(_body(messages=[{"role": "user", "content": "x" * FAKE_BODY_LIMIT}])).encode()
    response = client.post("/v1/messages", content=body, headers={**DEV, "content-type": "application/json"})
    _assert_error(response, 413, "request_too_large")


def test_body_over_the_limit_is_413_without_content_length(client: httpx.Client) -> None:
    def chunks():  # a generator body is sent chunked: the limit must hold while reading
        for _ in range(FAKE_BODY_LIMIT // 1024 + 2):
            yield b"x" * 1024

    response = client.post("/v1/messages", content=chunks(), headers=DEV)
    _assert_error(response, 413, "request_too_large")


def test_internal_failure_is_500_and_the_server_keeps_serving(
    fake_server: RunningServer, client: httpx.Client
) -> None:
    fake_server.backend.fail_on_call = RuntimeError("secret internal detail")
    message = _assert_error(client.post("/v1/messages", json=_body(), headers=DEV), 500, "api_error")
    assert "secret" not in message
    fake_server.backend.fail_on_call = None
    assert client.post("/v1/messages", json=_body(), headers=DEV).status_code == 200


def test_generation_error_is_500_api_error(fake_server: RunningServer, client: httpx.Client) -> None:
    fake_server.backend.fail_on_call = GenerationError("generation failed: out of memory")
    _assert_error(
        client.post("/v1/messages", json=_body(), headers=DEV), 500, "api_error", mentions="out of memory"
    )


def test_overloaded_is_529(fake_server: RunningServer, client: httpx.Client) -> None:
    from pensieve.core import OverloadedError

    fake_server.backend.fail_on_call = OverloadedError("too many requests are waiting")
    _assert_error(client.post("/v1/messages", json=_body(), headers=DEV), 529, "overloaded_error")


# --- what every response carries ------------------------------------------------------------


def test_request_id_header_on_every_response(client: httpx.Client) -> None:
    responses = [
        client.get("/health"),
        client.get("/metrics"),
        client.head("/"),
        client.get("/nope"),
        client.post("/v1/messages", json=_body()),
        client.post("/v1/messages", json=_body(), headers=DEV),
        client.post("/v1/messages", json=_body(stream=True), headers=DEV),
        client.get("/v1/models", headers=DEV),
    ]
    ids = [r.headers.get("request-id") for r in responses]
    assert all(i is not None and i.startswith("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_messages_route_ignores_the_query_string(client: httpx.Client) -> None:
    response = client.post("/v1/messages?beta=true", json=_body(), headers=DEV)
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == "Hello from the fake model."


# --- models, count_tokens, health, metrics --------------------------------------------------


def test_models_list_and_paging(client: httpx.Client) -> None:
    page = client.get("/v1/models", headers=DEV).json()
    assert [m["id"] for m in page["data"]] == ["fake-model", "my-alias"]
    first_model = page["data"][0]
    assert {key: first_model[key] for key in ("type", "id", "display_name", "created_at")} == {
        "type": "model",
        "id": "fake-model",
        "display_name": "Fake Model",
        "created_at": "2025-01-01T00:00:00Z",
    }
    first = client.get("/v1/models", params={"limit": 1}, headers=DEV).json()
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, "fake-model", "fake-model")
    second = client.get("/v1/models", params={"limit": 1, "after_id": "fake-model"}, headers=DEV).json()
    assert [m["id"] for m in second["data"]] == ["my-alias"]
    assert second["has_more"] is False
    before = client.get("/v1/models", params={"before_id": "my-alias"}, headers=DEV).json()
    assert [m["id"] for m in before["data"]] == ["fake-model"]
    assert client.get("/v1/models/my-alias", headers=DEV).json()["id"] == "my-alias"


@pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1"])
def test_models_bad_limit_is_400(client: httpx.Client, limit: str) -> None:
    response = client.get("/v1/models", params={"limit": limit}, headers=DEV)
    _assert_error(response, 400, "invalid_request_error", mentions="limit")


def test_count_tokens_matches_usage(client: httpx.Client) -> None:
    body = _body(system="Be brief.")
    count = client.post("/v1/messages/count_tokens", json=body, headers=DEV)
    assert count.status_code == 200
    usage = client.post("/v1/messages", json=body, headers=DEV).json()["usage"]
    assert count.json() == {"input_tokens": usage["input_tokens"]}


def test_health_shape(client: httpx.Client) -> None:
    response = client.get("/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["model"] == "fake-model"
    assert body["device"] == {"backend": "cpu", "name": "fake"}
    assert body["timestamp"].endswith("Z") and "T" in body["timestamp"]
    assert body["uptime_seconds"] >= 0


def test_health_is_503_unhealthy_when_the_engine_died(
    fake_server: RunningServer, client: httpx.Client
) -> None:
    fake_server.backend.alive = False
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"


def test_metrics_count_requests_and_tokens(client: httpx.Client) -> None:
    client.post("/v1/messages", json=_body(), headers=DEV)
    client.post("/v1/messages", json=_body(stream=True), headers=DEV)
    text = client.get("/metrics").text
    assert 'pensieve_requests_total{method="POST",route="/v1/messages",status="200"}' in text
    assert "pensieve_input_tokens_total" in text
    assert "pensieve_output_tokens_total" in text
    assert "pensieve_time_to_first_token_seconds_count" in text
    assert "pensieve_request_duration_seconds_bucket" in text
    assert "pensieve_queue_depth 0.0" in text
    output = [line for line in text.splitlines() if line.startswith("pensieve_output_tokens_total")]
    assert float(output[0].split()[-1]) >= 10  # 5 words each, streamed and not


def test_a_response_sent_before_the_body_was_read_closes_the_connection(client: httpx.Client) -> None:
    # Hypercorn drops a connection whose request body went unread; the client must be told.
    for _ in range(10):
        refused = client.post("/v1/messages", json=_body())
        assert refused.status_code == 401
        assert refused.headers["connection"] == "close"
        accepted = client.post("/v1/messages", json=_body(), headers=DEV)
        assert accepted.status_code == 200
        assert "close" not in accepted.headers.get("connection", "")

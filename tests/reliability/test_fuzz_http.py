"""Generated requests against the whole app (fake model, in process): never a 500, never a crash.

Every answer is a 200 (a message, a count, or a well-formed SSE stream) or a 4xx Anthropic error
whose type matches its status and whose message names the problem. The default run takes a
quick sample; ``PENSIEVE_FUZZ_LONG=1 pytest tests/reliability/test_fuzz_http.py -m fuzz_long -s``
runs more than 10,000 cases and prints the figures.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.reliability.apps import fake_app
from tests.server.sse import parse_sse

DEV = {"x-api-key": "test-api-key-12345"}
BODY_LIMIT = 64 * 1024
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    431: "invalid_request_error",
}
# Per strategy, cases in the quick (default) run and in the long run (>= 10,000 in all).
RUNS = {
    "valid": (25, 2000),
    "mutated": (40, 3000),
    "typed": (30, 1500),
    "raw": (40, 2000),
    "headers": (30, 1500),
}

TALLY: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app, _, _ = fake_app(
        **{
            "limits.max_body_bytes": BODY_LIMIT,
            "limits.max_messages": 50,
            "limits.max_tools": 20,
            "limits.rate_limit_per_minute": 0,
        }
    )
    started = time.monotonic()
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
        health = test_client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "healthy"  # alive after it all
    if TALLY:
        total = sum(TALLY.values())
        print(f"\nfuzz: {total} requests in {time.monotonic() - started:.1f} s")
        for strategy in RUNS:
            statuses = {status: n for (name, status), n in sorted(TALLY.items()) if name == strategy}
            print(f"  {strategy:8} {sum(statuses.values()):6}  by status: {statuses}")


def _check(response: httpx.Response, strategy: str, *, mentions: str = "") -> None:
    """The response is a proper answer or a proper client error; never a server error."""
    TALLY[strategy, response.status_code] += 1
    assert response.status_code < 500, response.text[:500]
    assert response.headers["request-id"].startswith("req_")
    if response.status_code >= 400:
        body = response.json()
        assert body["type"] == "error", body
        assert body["error"]["type"] == STATUS_TYPES[response.status_code], body
        assert body["request_id"] == response.headers["request-id"]
        message = body["error"]["message"]
        assert isinstance(message, str) and message.strip(), body
        assert mentions in message, (mentions, message)
    elif response.headers["content-type"].startswith("text/event-stream"):
        names = [name for name, _ in parse_sse(response.text.splitlines())]
        assert names[0] == "message_start" and names[-1] in ("message_stop", "error"), names
    else:
        body = response.json()
        assert body.get("type") == "message" or "input_tokens" in body or "data" in body or "id" in body, body


def _post(client: TestClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/v1/messages", content=body, headers={**DEV, **(headers or {})})


# --- strategies -----------------------------------------------------------------------------

_text = st.text(max_size=40)
_tool_names = st.from_regex(r"[a-zA-Z0-9_-]{1,20}", fullmatch=True)
_schemas = st.fixed_dictionaries(
    {"type": st.just("object")},
    optional={
        "properties": st.dictionaries(
            st.text(min_size=1, max_size=8),
            st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean"])}),
            max_size=3,
        ),
        "additionalProperties": st.booleans(),
    },
)


@st.composite
def _conversations(draw: st.DrawFn, tool_names: list[str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(draw(st.integers(1, 5))):
        role = "user" if turn % 2 == 0 else "assistant"
        if role == "assistant" and tool_names and draw(st.booleans()):
            call_id = f"toolu_{turn}"
            name = draw(st.sampled_from(tool_names))
            messages.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": call_id, "name": name, "input": {"q": draw(_text)}}
                    ],
                }
            )
            result = {"type": "tool_result", "tool_use_id": call_id, "content": draw(_text)}
            messages.append({"role": "user", "content": [result]})
            continue
        if draw(st.booleans()):
            messages.append({"role": role, "content": draw(_text)})
        else:
            blocks = draw(
                st.lists(st.builds(lambda t: {"type": "text", "text": t}, _text), min_size=1, max_size=3)
            )
            messages.append({"role": role, "content": blocks})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": draw(_text)})
    return messages


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    tools = draw(
        st.lists(
            st.builds(lambda n, s: {"name": n, "input_schema": s}, _tool_names, _schemas),
            max_size=3,
            unique_by=lambda tool: tool["name"],
        )
    )
    names = [tool["name"] for tool in tools]
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["fake-model", "claude-sonnet-4-5", "claude-3-5-haiku-latest"])),
        "max_tokens": draw(st.integers(1, 2**31)),
        "messages": draw(_conversations(names)),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "system": _text | st.lists(st.builds(lambda t: {"type": "text", "text": t}, _text), max_size=2),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 1000),
        "stop_sequences": st.lists(st.text(min_size=1, max_size=5), max_size=3),
        "stream": st.booleans(),
        "metadata": st.fixed_dictionaries({"user_id": _text}),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if tools:
        body["tools"] = tools
        choices = [{"type": "auto"}, {"type": "any"}, {"type": "none"}] + [
            {"type": "tool", "name": n} for n in names
        ]
        if draw(st.booleans()):
            body["tool_choice"] = draw(st.sampled_from(choices))
    return body


_hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", " ", "\x00", "\u202e", "😀" * 50, "x" * 70_000]),
)
_hostile = st.recursive(
    _hostile_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
_block_types = st.sampled_from(
    [
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "weird",
        "",
        "TEXT",
    ]
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new) if path[1:] else new
    return copy


@st.composite
def mutated_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one value replaced, one key dropped or added, or a block's type changed."""
    body = draw(valid_bodies())
    path = draw(st.sampled_from([p for p in _paths(body) if p]))
    kind = draw(st.sampled_from(["replace", "drop", "add", "block_type"]))
    if kind == "replace":
        return _replace(body, path, draw(_hostile))  # type: ignore[no-any-return]
    parent_path, last = path[:-1], path[-1]
    parent = body
    for key in parent_path:
        parent = parent[key]
    if kind == "drop" and isinstance(parent, dict):
        return _replace(body, parent_path, {k: v for k, v in parent.items() if k != last})  # type: ignore[no-any-return]
    if kind == "block_type" and isinstance(parent, dict) and "type" in parent:
        return _replace(body, (*parent_path, "type"), draw(_block_types))  # type: ignore[no-any-return]
    if isinstance(parent, dict):
        return _replace(body, (*parent_path, draw(st.text(max_size=10))), draw(_hostile))  # type: ignore[no-any-return]
    return body


# Fields, the JSON kinds they accept, and a sample valid body to put a wrong kind in.
_FIELDS: dict[str, set[str]] = {
    "model": {"str"},
    "max_tokens": {"int"},
    "messages": {"list"},
    "system": {"str", "list", "null"},
    "temperature": {"int", "float", "null"},
    "top_p": {"int", "float", "null"},
    "top_k": {"int", "null"},
    "stop_sequences": {"list", "null"},
    "stream": {"bool"},
    "metadata": {"object", "null"},
    "tools": {"list", "null"},
    "tool_choice": {"object", "null"},
    "thinking": {"object", "null"},
    "messages.0.role": {"str"},
    "messages.0.content": {"str", "list"},
    "metadata.user_id": {"str", "null"},
    "tools.0.name": {"str"},
    "tools.0.input_schema": {"object", "null"},
}
_KINDS: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "bool": st.booleans(),
    "int": st.integers(min_value=-(2**40), max_value=2**40).filter(lambda n: n not in (0, 1)),
    "float": st.floats(0.01, 0.99),
    "str": st.text(min_size=1, max_size=10),
    "list": st.lists(st.integers(), min_size=1, max_size=2),
    "object": st.dictionaries(st.sampled_from(["x", "y"]), st.integers(), min_size=1, max_size=2),
}
_TYPED_BASE: dict[str, Any] = {
    "model": "fake-model",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "hi"}],
    "metadata": {"user_id": "u"},
    "tools": [{"name": "t", "input_schema": {"type": "object"}}],
}


@st.composite
def wrongly_typed(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    field = draw(st.sampled_from(sorted(_FIELDS)))
    kind = draw(st.sampled_from(sorted(set(_KINDS) - _FIELDS[field])))
    path = tuple(int(part) if part.isdigit() else part for part in field.split("."))
    return field, _replace(_TYPED_BASE, path, draw(_KINDS[kind]))


def _deep(depth: int, arrays: bool) -> bytes:
    """JSON nested ``depth`` levels deep, in arrays or objects."""
    opening, closing = (b"[", b"]") if arrays else (b'{"a":', b"}")
    return opening * depth + b"1" + closing * depth


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["binary", "splice", "truncate", "deep", "json"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return msgspec.json.encode(draw(_hostile))
    valid = json.dumps(draw(valid_bodies())).encode()
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "deep":
        # Deep values where the schema allows any JSON (a tool's schema, a tool call's input)
        # as well as where it does not.
        nested = _deep(
            draw(st.sampled_from([10, 100, 500, 900, 1000, 5000, 50_000])), arrays=draw(st.booleans())
        )
        tool = b'{"name": "t", "input_schema": {"type": "object", "properties": {"x": ' + nested + b"}}}"
        call = (
            b'{"role": "assistant", "content": [{"type": "tool_use", "id": "c", "name": "t", "input": {"x": '
        )
        result = (
            b'{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c", "content": "ok"}]}'
        )
        messages = b'[{"role": "user", "content": "hi"}, ' + call + nested + b"}}]}, " + result + b"]"
        return draw(
            st.sampled_from(
                [
                    valid[:-1] + b', "metadata": ' + nested + b"}",
                    b'{"model": "fake-model", "max_tokens": 5, "messages": '
                    + messages
                    + b', "tools": ['
                    + tool
                    + b"]}",
                    b'{"model": "fake-model", "max_tokens": 5, "messages": [' + nested + b"]}",
                ]
            )
        )
    start = draw(st.integers(0, len(valid) - 1))
    junk = draw(
        st.sampled_from(
            [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\ud800", b'"', b"\\", b"NaN", b"1e999"]
        )
    )
    return valid[:start] + junk + valid[start + draw(st.integers(0, 3)) :]


_latin1 = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
_odd_headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            [
                "application/json",
                "text/plain",
                "multipart/form-data; boundary=x",
                "application/json; charset=latin-1",
                "x",
            ]
        ),
        "anthropic-version": st.sampled_from(["2023-06-01", "1999-01-01", "", "garbage"]) | _latin1,
        "anthropic-beta": st.lists(_latin1.filter(lambda s: "," not in s), max_size=5).map(",".join),
        "x-stream": st.sampled_from(["true", "TRUE", " true ", "false", "1", ""]),
        "x-api-key": st.sampled_from(["test-api-key-12345", "", "sk-ant-api", "nope"]) | _latin1,
        "authorization": st.sampled_from(["Bearer", "Bearer ", "bearer test-api-key-12345", "Basic eA==", ""])
        | _latin1.map(lambda s: "Bearer " + s),
        "x-odd": _latin1,
        "accept": st.sampled_from(["*/*", "text/event-stream", "application/xml"]),
    },
)


# --- the properties -------------------------------------------------------------------------


def _valid(client: TestClient, body: dict[str, Any]) -> None:
    response = _post(client, json.dumps(body).encode())
    _check(response, "valid")
    if response.status_code != 200:  # a valid request is only refused when it cannot fit
        assert response.json()["error"]["message"].startswith("prompt is too long"), response.text


def _mutated(client: TestClient, body: dict[str, Any]) -> None:
    _check(_post(client, msgspec.json.encode(body)), "mutated")
    _check(
        client.post("/v1/messages/count_tokens", content=msgspec.json.encode(body), headers=DEV), "mutated"
    )


def _typed(client: TestClient, case: tuple[str, dict[str, Any]]) -> None:
    field, body = case
    response = _post(client, msgspec.json.encode(body))
    assert response.status_code == 400, (field, body, response.text)
    _check(response, "typed", mentions=field)


def _raw(client: TestClient, body: bytes) -> None:
    _check(_post(client, body), "raw")


def _headers(client: TestClient, case: tuple[dict[str, Any], dict[str, str], str]) -> None:
    body, headers, path = case
    method = "GET" if path.startswith("/v1/models") else "POST"
    # Any byte a client may send; the dev key unless the case brings its own credentials.
    raw_headers = {name: value.encode("latin-1") for name, value in {**DEV, **headers}.items()}
    response = client.request(method, path, content=json.dumps(body).encode(), headers=raw_headers)
    _check(response, "headers")


_header_cases = st.tuples(
    valid_bodies(),
    _odd_headers,
    st.sampled_from(["/v1/messages", "/v1/messages/count_tokens", "/v1/messages?beta=true", "/v1/models"])
    | st.builds(
        lambda limit, after: f"/v1/models?limit={limit}&after_id={after}",
        st.sampled_from(["0", "1", "1000", "1001", "-1", "1e3", "99999999999999999999", "x", ""]),
        st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&#%+"), max_size=10
        ),
    )
    | st.builds(lambda tail: "/v1/" + tail, st.from_regex(r"[a-z/._-]{0,20}", fullmatch=True)),
)
_CASES: dict[str, tuple[st.SearchStrategy[Any], Callable[[TestClient, Any], None]]] = {
    "valid": (valid_bodies(), _valid),
    "mutated": (mutated_bodies(), _mutated),
    "typed": (wrongly_typed(), _typed),
    "raw": (raw_bodies(), _raw),
    "headers": (_header_cases, _headers),
}


def _property(name: str, long: bool) -> Callable[..., None]:
    strategy, check = _CASES[name]
    quick, many = RUNS[name]
    profile = settings(
        max_examples=many if long else quick,
        deadline=None,
        database=None if long else settings.default.database,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )

    @profile
    @given(case=strategy)
    def run(client: TestClient, case: Any) -> None:
        check(client, case)

    return run


test_valid_requests = _property("valid", long=False)
test_mutated_requests = _property("mutated", long=False)
test_wrongly_typed_fields_are_named = _property("typed", long=False)
test_raw_bodies = _property("raw", long=False)
test_odd_headers_and_paths = _property("headers", long=False)

def _long(test: Any) -> Any:
    """A long-run variant: opt-in, and exempt from the suite's per-test timeout."""
    return pytest.mark.fuzz_long(pytest.mark.timeout(0)(test))


test_valid_requests_long = _long(_property("valid", long=True))
test_mutated_requests_long = _long(_property("mutated", long=True))
test_wrongly_typed_fields_are_named_long = _long(_property("typed", long=True))
test_raw_bodies_long = _long(_property("raw", long=True))
test_odd_headers_and_paths_long = _long(_property("headers", long=True))

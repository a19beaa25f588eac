"""Error bodies carry the error's type, message and request id; ids are random and well-formed."""

from __future__ import annotations

import json
import re

import anthropic.types.shared as sdk_shared
import pytest

from pensieve import api
from pensieve.core import errors


@pytest.mark.parametrize(
    "error",
    [
        errors.InvalidRequestError("messages: at least one message is required"),
        errors.PromptTooLongError(9004, 8192),
        errors.AuthenticationError("invalid x-api-key"),
        errors.PermissionDeniedError("not allowed"),
        errors.NotFoundError("model: no model named 'x'"),
        errors.RequestTooLargeError("request exceeds the maximum size"),
        errors.RateLimitError("slow down", retry_after=2.0),
        errors.OverloadedError("busy"),
        errors.GenerationError("inference failed"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_error_body_shape(error: errors.PensieveError) -> None:
    raw = api.error_body(error, "req_011CSHoEeqs5C35K2UUqR7Fy")
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    # The SDK's error union lacks the documented 413 type, so only the others are checked against it.
    if error.error_type != "request_too_large":
        assert sdk_shared.ErrorResponse.model_validate_json(raw).error.type == error.error_type


def test_prompt_too_long_keeps_the_api_wording() -> None:
    body = json.loads(api.error_body(errors.PromptTooLongError(9004, 8192), None))
    assert body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 9004 tokens > 8192 maximum",
        },
        "request_id": None,
    }


def test_error_event_from_the_same_error() -> None:
    error = errors.GenerationError("inference failed")
    event = api.error_event(error)
    assert event == api.ErrorEvent(error=api.ErrorDetail(type="api_error", message="inference failed"))
    assert json.loads(api.error_body(error, None))["error"] == {
        "type": "api_error",
        "message": "inference failed",
    }


@pytest.mark.parametrize(
    "make, prefix",
    [(api.new_message_id, "msg_"), (api.new_tool_use_id, "toolu_"), (api.new_request_id, "req_")],
)
def test_ids_are_prefixed_random_base62(make: object, prefix: str) -> None:
    assert callable(make)
    ids = {make() for _ in range(500)}
    assert len(ids) == 500
    for value in ids:
        assert re.fullmatch(re.escape(prefix) + r"[0-9A-Za-z]{24}", value), value
    # Random, not clock-based: successive ids share no common prefix beyond chance.
    assert len({value[len(prefix) : len(prefix) + 4] for value in ids}) > 400


def test_public_api_is_exactly_the_modules_public_names() -> None:
    from pensieve.api import codec, content, events, ids, requests, responses, validation
    from pensieve.api import errors as api_errors

    modules = [codec, content, api_errors, events, ids, requests, responses, validation]
    declared = {name for module in modules for name in module.__all__}
    assert set(api.__all__) == declared
    assert len(api.__all__) == len(set(api.__all__))

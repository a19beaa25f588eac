"""Each error maps to exactly one Anthropic error type and HTTP status."""

from __future__ import annotations

import pytest

from pensieve import core
from pensieve.core import errors

EXPECTED = {
    errors.PensieveError: ("api_error", 500),
    errors.InvalidRequestError: ("invalid_request_error", 400),
    errors.AuthenticationError: ("authentication_error", 401),
    errors.PermissionDeniedError: ("permission_error", 403),
    errors.NotFoundError: ("not_found_error", 404),
    errors.RequestTooLargeError: ("request_too_large", 413),
    errors.RateLimitError: ("rate_limit_error", 429),
    errors.OverloadedError: ("overloaded_error", 529),
    errors.RequestTimeoutError: ("timeout_error", 504),
    errors.ModelError: ("api_error", 500),
    errors.GenerationError: ("api_error", 500),
}


@pytest.mark.parametrize("error_class", list(EXPECTED))
def test_error_type_and_status(error_class: type[errors.PensieveError]) -> None:
    assert (error_class.error_type, error_class.status_code) == EXPECTED[error_class]


def test_prompt_too_long_uses_the_api_wording() -> None:
    error = errors.PromptTooLongError(9004, 8192)
    assert error.message == "prompt is too long: 9004 tokens > 8192 maximum"
    assert error.status_code == 400


def test_every_public_error_derives_from_the_one_base() -> None:
    exported = [getattr(core, name) for name in core.__all__]
    error_classes = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]
    assert all(issubclass(cls, errors.PensieveError) or cls is errors.ConfigProblem for cls in error_classes)

"""The one error hierarchy of Pensieve.

Every error knows the Anthropic error type and HTTP status it becomes on the wire, so the
server turns any of them into ``{"type":"error","error":{"type":…,"message":…}}`` in one place.

    PensieveError (api_error, 500)
    ├── InvalidRequestError (invalid_request_error, 400)
    │   └── PromptTooLongError            "prompt is too long: N tokens > M maximum"
    ├── AuthenticationError (authentication_error, 401)
    ├── PermissionDeniedError (permission_error, 403)
    ├── NotFoundError (not_found_error, 404)
    ├── RequestTooLargeError (request_too_large, 413)
    ├── RateLimitError (rate_limit_error, 429)  carries retry_after seconds
    ├── OverloadedError (overloaded_error, 529)
    ├── RequestTimeoutError (timeout_error, 504)   the answer outlived limits.request_timeout_seconds
    ├── ConfigError (api_error, 500)          lists every problem with its key
    ├── ModelError (api_error, 500)           a model cannot be loaded
    │   ├── ModelFileError                    missing, not a GGUF, truncated or corrupt
    │   ├── UnsupportedModelError             architecture, tokenizer or tensor type we cannot run
    │   └── ModelTooLargeError                does not fit the memory budget
    └── GenerationError (api_error, 500)      inference failed while answering
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConfigProblem",
    "GenerationError",
    "InvalidRequestError",
    "ModelError",
    "ModelFileError",
    "ModelTooLargeError",
    "NotFoundError",
    "OverloadedError",
    "PensieveError",
    "PermissionDeniedError",
    "PromptTooLongError",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "UnsupportedModelError",
]


class PensieveError(Exception):
    """Base of all Pensieve errors; unexpected failures surface as ``api_error`` / 500."""

    error_type: str = "api_error"
    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(PensieveError):
    error_type = "invalid_request_error"
    status_code = 400


class PromptTooLongError(InvalidRequestError):
    """The prompt alone does not fit the context; worded as the Anthropic API words it."""

    def __init__(self, prompt_tokens: int, maximum: int) -> None:
        super().__init__(f"prompt is too long: {prompt_tokens} tokens > {maximum} maximum")
        self.prompt_tokens = prompt_tokens
        self.maximum = maximum


class AuthenticationError(PensieveError):
    error_type = "authentication_error"
    status_code = 401


class PermissionDeniedError(PensieveError):
    error_type = "permission_error"
    status_code = 403


class NotFoundError(PensieveError):
    error_type = "not_found_error"
    status_code = 404


class RequestTooLargeError(PensieveError):
    error_type = "request_too_large"
    status_code = 413


class RateLimitError(PensieveError):
    error_type = "rate_limit_error"
    status_code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OverloadedError(PensieveError):
    error_type = "overloaded_error"
    status_code = 529


class RequestTimeoutError(PensieveError):
    error_type = "timeout_error"
    status_code = 504


class ConfigProblem(Exception):
    """One problem in a configuration: the dotted key it concerns and what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class ConfigError(PensieveError):
    """A configuration is invalid; ``problems`` lists every problem, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p.key}: {p.message}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class ModelError(PensieveError):
    """A model cannot be loaded or used."""


class ModelFileError(ModelError):
    """The model file is missing, not a GGUF file, truncated or internally inconsistent."""


class UnsupportedModelError(ModelError):
    """The file is valid but uses an architecture, tokenizer or tensor type Pensieve cannot run."""


class ModelTooLargeError(ModelError):
    """The model's estimated memory does not fit the configured budget."""

    def __init__(self, message: str, required_bytes: int, budget_bytes: int) -> None:
        super().__init__(message)
        self.required_bytes = required_bytes
        self.budget_bytes = budget_bytes


class GenerationError(PensieveError):
    """Inference failed while answering a request."""

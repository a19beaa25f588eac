"""The one place HTTP error responses are made: Starlette exception handlers over ``api.error_body``.

A PensieveError answers with its own status and type; a routing HTTPException (unknown path,
wrong method) becomes the matching Anthropic error; anything else is a 500 ``api_error`` with a
generic message (:func:`internal_error`, which the request-context middleware sends).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pensieve.api import error_body
from pensieve.core.errors import (
    InvalidRequestError,
    NotFoundError,
    PensieveError,
    RateLimitError,
)
from pensieve.server.context import log_failure, record_of

__all__ = ["EXCEPTION_HANDLERS", "internal_error"]


def internal_error(request_id: str) -> Response:
    """The 500 for a failure nothing else handled; its details stay in the log."""
    return _error_body_response(PensieveError("internal server error"), request_id)


def _error_response(
    request: Request,
    error: PensieveError,
    *,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error body of ``error`` under its own status (or ``status_code``, for routing errors)."""
    return _error_body_response(
        error, record_of(request).request_id, status_code=status_code, headers=headers
    )


def _error_body_response(
    error: PensieveError,
    request_id: str,
    *,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    all_headers = dict(headers or {})
    if isinstance(error, RateLimitError):
        all_headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    return Response(
        error_body(error, request_id),
        status_code=status_code or error.status_code,
        headers=all_headers,
        media_type="application/json",
    )


async def _pensieve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PensieveError)
    log_failure(record_of(request).request_id, exc)
    return _error_response(request, exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: PensieveError
    if exc.status_code == 404:
        error = NotFoundError(f"not found: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = InvalidRequestError(f"method {request.method} is not allowed on {request.url.path}")
    else:
        error = InvalidRequestError(exc.detail)
    return _error_response(request, error, status_code=exc.status_code, headers=exc.headers)


EXCEPTION_HANDLERS = {
    PensieveError: _pensieve_error,
    HTTPException: _http_exception,
}

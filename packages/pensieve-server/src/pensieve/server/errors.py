"""The one place HTTP error responses are made: Starlette exception handlers over ``api.error_body``.

A PensieveError answers with its own status and type; a routing HTTPException (unknown path,
wrong method) becomes the matching Anthropic error; anything else is a 500 ``api_error`` with a
generic message, its traceback logged under the request id.
"""

from __future__ import annotations

import logging
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
from pensieve.server.context import record_of

__all__ = ["EXCEPTION_HANDLERS"]

logger = logging.getLogger("pensieve.server")


def _error_response(
    request: Request,
    error: PensieveError,
    *,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error body of ``error`` under its own status (or ``status_code``, for routing errors)."""
    request_id = record_of(request).request_id
    # Set here too: the handler for unexpected errors runs outside the middleware that adds it.
    all_headers = {"request-id": request_id, **(headers or {})}
    if isinstance(error, RateLimitError):
        all_headers["retry-after"] = str(max(1, round(error.retry_after)))
    return Response(
        error_body(error, request_id),
        status_code=status_code or error.status_code,
        headers=all_headers,
        media_type="application/json",
    )


async def _pensieve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PensieveError)
    if exc.status_code >= 500:
        logger.error("%s: %s: %s", record_of(request).request_id, type(exc).__name__, exc.message)
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


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("%s: unexpected error", record_of(request).request_id, exc_info=exc)
    return _error_response(request, PensieveError("internal server error"))


EXCEPTION_HANDLERS = {
    PensieveError: _pensieve_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}

"""Error bodies and error events, built from the one error tree in :mod:`pensieve.core.errors`."""

from __future__ import annotations

import msgspec

from pensieve.api.events import ErrorDetail, ErrorEvent
from pensieve.core.errors import PensieveError

__all__ = ["ErrorResponse", "error_body", "error_event"]


class ErrorResponse(msgspec.Struct, frozen=True, kw_only=True, tag="error", tag_field="type"):
    """``{"type": "error", "error": {"type", "message"}, "request_id"}``."""

    error: ErrorDetail
    request_id: str | None


def _detail(error: PensieveError) -> ErrorDetail:
    return ErrorDetail(type=error.error_type, message=error.message)


def error_body(error: PensieveError, request_id: str | None) -> bytes:
    """The JSON body of an error response; its HTTP status is ``error.status_code``."""
    return msgspec.json.encode(ErrorResponse(error=_detail(error), request_id=request_id))


def error_event(error: PensieveError) -> ErrorEvent:
    """The ``error`` event that ends a stream whose 200 status was already sent."""
    return ErrorEvent(error=_detail(error))

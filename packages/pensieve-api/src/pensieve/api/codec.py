"""Bytes ↔ wire types, with every decoding failure turned into an InvalidRequestError.

This is the one place where msgspec's exceptions (and the UnicodeDecodeError it lets escape
for invalid UTF-8) are translated, so a bad body is always a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

import msgspec

from pensieve.api._messages import describe_validation_error
from pensieve.api.requests import CountTokensRequest, MessagesRequest
from pensieve.api.responses import CountTokensResponse, Message, ModelList, ModelObject
from pensieve.api.validation import MESSAGE_ROLES, validate_request
from pensieve.core.errors import InvalidRequestError

__all__ = ["decode_count_tokens_request", "decode_messages_request", "encode_json"]

_Request = TypeVar("_Request", MessagesRequest, CountTokensRequest)

_messages_decoder = msgspec.json.Decoder(MessagesRequest)
_count_tokens_decoder = msgspec.json.Decoder(CountTokensRequest)
_encoder = msgspec.json.Encoder()


def decode_messages_request(body: bytes, *, roles: Collection[str] = MESSAGE_ROLES) -> MessagesRequest:
    """Parse and validate a ``POST /v1/messages`` body; ``roles`` as in :func:`validate_request`."""
    request = _decode(body, _messages_decoder, MessagesRequest)
    validate_request(request, roles=roles)
    return request


def decode_count_tokens_request(body: bytes, *, roles: Collection[str] = MESSAGE_ROLES) -> CountTokensRequest:
    """Parse and validate a ``POST /v1/messages/count_tokens`` body (``max_tokens`` is ignored)."""
    request = _decode(body, _count_tokens_decoder, CountTokensRequest)
    validate_request(request, roles=roles)
    return request


def encode_json(body: Message | CountTokensResponse | ModelObject | ModelList) -> bytes:
    """The JSON of a response body."""
    return _encoder.encode(body)


def _decode(body: bytes, decoder: msgspec.json.Decoder[_Request], target: type[_Request]) -> _Request:
    if not body.strip():
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        # msgspec stops at the first problem, possibly before a syntax error later in the body.
        raw = _decode_untyped(body)
        raise InvalidRequestError(describe_validation_error(exc, raw, target)) from exc
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid UTF-8: {exc.reason}") from exc
    except RecursionError as exc:
        raise _too_deep() from exc


def _not_json(body: bytes, exc: msgspec.DecodeError) -> InvalidRequestError:
    # msgspec before 0.23 raised UnicodeDecodeError for invalid UTF-8, later a DecodeError: name
    # the encoding problem the same way whichever it is.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as invalid:
        return InvalidRequestError(f"request body is not valid UTF-8: {invalid.reason}")
    return InvalidRequestError(f"request body is not valid JSON: {exc}")


def _too_deep() -> InvalidRequestError:
    return InvalidRequestError("request body is nested too deeply to decode")


def _decode_untyped(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid UTF-8: {exc.reason}") from exc
    except RecursionError as exc:
        raise _too_deep() from exc

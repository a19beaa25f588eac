"""Identifiers in the API's style: a kind prefix and 24 random base62 characters.

They come from :mod:`secrets`, never from the clock, so two requests in the same instant
(or two servers) cannot collide and ids reveal nothing about timing.
"""

from __future__ import annotations

import secrets
import string

__all__ = ["new_message_id", "new_request_id", "new_tool_use_id"]

_ALPHABET = string.digits + string.ascii_letters
_LENGTH = 24


def _random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))


def new_message_id() -> str:
    """``msg_…``: the ``id`` of a Message."""
    return _random_id("msg_")


def new_tool_use_id() -> str:
    """``toolu_…``: the ``id`` of a tool_use block, echoed back as ``tool_use_id``."""
    return _random_id("toolu_")


def new_request_id() -> str:
    """``req_…``: the ``request-id`` header and the ``request_id`` of error bodies."""
    return _random_id("req_")

"""Admission on ``/v1/*``: header size, requests in flight, per-key rate, refusal while shutting down."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from pensieve.core.config import LimitSettings
from pensieve.core.errors import InvalidRequestError, OverloadedError, RateLimitError, RequestTimeoutError
from pensieve.server.shutdown import Drain, shutting_down

__all__ = ["Admission", "BodyTimeoutError", "HeadersTooLargeError", "InFlight", "RateLimiter", "timed_out"]

# Buckets kept before full (idle) ones are dropped; a dropped bucket is the same as a new one.
_MAX_BUCKETS = 10_000


class BodyTimeoutError(InvalidRequestError):
    """The client sent its body too slowly. 408, which clients treat as retryable."""

    status_code = 408


class HeadersTooLargeError(InvalidRequestError):
    """The request's headers are over ``limits.max_header_bytes`` (431)."""

    status_code = 431


def timed_out(timeout: float) -> RequestTimeoutError:
    return RequestTimeoutError(f"the request took longer than {timeout:g} s (limits.request_timeout_seconds)")


class RateLimiter:
    """Token buckets keyed by API key: ``burst`` requests at once, refilled at ``per_minute``."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def acquire(self, key: str) -> None:
        """Take one request from ``key``'s bucket, or raise RateLimitError saying when to retry."""
        now = self._clock()
        tokens, when = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - when) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
            raise RateLimitError(
                f"rate limit exceeded: at most {self._rate * 60:g} requests per minute per API key "
                f"(bursts of {self._burst:g}); retry in {math.ceil(wait)} s",
                retry_after=wait,
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        refill = self._burst / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}


class InFlight:
    """The number of admitted requests, shared by every route's Admission (one event loop)."""

    def __init__(self) -> None:
        self.value = 0


class Admission:
    """Route middleware: 431 for headers beyond ``max_header_bytes``; 529 while shutting down or
    beyond ``max_concurrent_requests``.

    Hypercorn refuses a request head that is still incomplete beyond ``max_header_bytes``; one
    that arrives complete in a single read is checked here. A request counts as in flight from
    admission until its response (a whole stream included) is done.
    """

    def __init__(self, app: ASGIApp, limits: LimitSettings, drain: Drain, counter: InFlight) -> None:
        self._app = app
        self._limit = limits.max_concurrent_requests
        self._max_header_bytes = limits.max_header_bytes
        self._drain = drain
        self._counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        header_bytes = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if header_bytes > self._max_header_bytes:
            raise HeadersTooLargeError(
                f"request headers take {header_bytes} bytes, more than the limit of "
                f"{self._max_header_bytes} (limits.max_header_bytes)"
            )
        if self._drain.draining:
            raise shutting_down()
        if self._counter.value >= self._limit:
            raise OverloadedError(
                f"the server is overloaded: {self._limit} requests are already in progress "
                "(limits.max_concurrent_requests)"
            )
        self._counter.value += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._counter.value -= 1

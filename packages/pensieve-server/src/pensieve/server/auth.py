"""Who may call ``/v1/*``: configured API keys, or the seed's development keys on loopback only.

Each accepted key then draws from its own rate-limit bucket (:class:`RateLimiter`).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from pensieve.core.config import ServerSettings
from pensieve.core.errors import AuthenticationError, ConfigError, ConfigProblem
from pensieve.server.limits import RateLimiter

__all__ = ["DEV_KEY", "DEV_KEY_PREFIX", "ApiKeyGuard", "KeyPolicy", "is_loopback", "require_safe_bind"]

DEV_KEY = "test-api-key-12345"
DEV_KEY_PREFIX = "sk-ant-api"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; any other name counts as reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_safe_bind(settings: ServerSettings) -> None:
    """Refuse settings that let strangers use the public dev keys.

    That is a bind beyond loopback without configured keys, or CORS open to every web page
    (``cors_origins`` holding ``*``) while the dev keys are accepted.
    """
    problems: list[ConfigProblem] = []
    if not settings.api_keys and not is_loopback(settings.host):
        problems.append(
            ConfigProblem(
                "server.api_keys",
                f"binding to {settings.host} (not loopback) requires at least one API key; set "
                "server.api_keys in the config file or PENSIEVE_SERVER_API_KEYS, or bind to 127.0.0.1",
            )
        )
    if not settings.api_keys and "*" in settings.cors_origins:
        problems.append(
            ConfigProblem(
                "server.cors_origins",
                "'*' would let any web page use the public development keys; list the origins "
                "that may call the API, or set server.api_keys",
            )
        )
    if problems:
        raise ConfigError(problems)


class KeyPolicy:
    """Checks a presented key against the configured keys (or the dev keys when none are set)."""

    def __init__(self, settings: ServerSettings) -> None:
        require_safe_bind(settings)
        self._keys = tuple(key.encode() for key in settings.api_keys)

    @property
    def dev_keys_accepted(self) -> bool:
        return not self._keys

    def accepts(self, key: str) -> bool:
        if not self._keys:
            return key == DEV_KEY or key.startswith(DEV_KEY_PREFIX)
        presented = key.encode()
        # Compare against every key so the time taken does not reveal which one nearly matched.
        matches = [hmac.compare_digest(presented, known) for known in self._keys]
        return any(matches)

    def check(self, headers: Headers) -> str:
        """The valid key in ``x-api-key`` or ``Authorization: Bearer``; AuthenticationError if none."""
        presented = [key for key in (headers.get("x-api-key"), _bearer(headers.get("authorization"))) if key]
        if not presented:
            raise AuthenticationError(
                "missing API key: send it as 'x-api-key: KEY' or 'Authorization: Bearer KEY'"
            )
        for key in presented:
            if self.accepts(key):
                return key
        raise AuthenticationError("invalid API key")


class ApiKeyGuard:
    """Route middleware: a request reaches its endpoint only with a valid key within its rate limit."""

    def __init__(self, app: ASGIApp, policy: KeyPolicy, limiter: RateLimiter | None = None) -> None:
        self._app = app
        self._policy = policy
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = self._policy.check(Headers(scope=scope))
            if self._limiter is not None:
                self._limiter.acquire(key)
        await self._app(scope, receive, send)


def _bearer(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None

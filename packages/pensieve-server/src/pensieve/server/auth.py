"""Who may call ``/v1/*``: configured API keys, or the seed's development keys on loopback only."""

from __future__ import annotations

import hmac
import ipaddress

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from pensieve.core.config import ServerSettings
from pensieve.core.errors import AuthenticationError, ConfigError, ConfigProblem

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
    """Refuse to listen beyond loopback without configured keys: the dev keys are public knowledge."""
    if not settings.api_keys and not is_loopback(settings.host):
        raise ConfigError(
            [
                ConfigProblem(
                    "server.api_keys",
                    f"binding to {settings.host} (not loopback) requires at least one API key; set "
                    "server.api_keys in the config file or PENSIEVE_SERVER_API_KEYS, or bind to 127.0.0.1",
                )
            ]
        )


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

    def check(self, headers: Headers) -> None:
        """Raise AuthenticationError unless ``x-api-key`` or ``Authorization: Bearer`` holds a valid key."""
        presented = [key for key in (headers.get("x-api-key"), _bearer(headers.get("authorization"))) if key]
        if not presented:
            raise AuthenticationError(
                "missing API key: send it as 'x-api-key: KEY' or 'Authorization: Bearer KEY'"
            )
        if not any(self.accepts(key) for key in presented):
            raise AuthenticationError("invalid API key")


class ApiKeyGuard:
    """Route middleware: rejects a request before its endpoint runs unless its key is valid."""

    def __init__(self, app: ASGIApp, policy: KeyPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self._policy.check(Headers(scope=scope))
        await self._app(scope, receive, send)


def _bearer(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None

"""Winding down: refuse new work, let open answers finish, then end the rest with an error.

``serve`` calls :meth:`Drain.begin` when a stop is requested and :meth:`Drain.abort` once
``server.shutdown_grace_seconds`` have passed. Open answers wait in :meth:`Drain.abortable`
scopes, so an abort ends them cleanly (an SSE ``error`` event, or a 529) before Hypercorn's own
deadline would cut their connections mid-frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from starlette.applications import Starlette
from starlette.types import ASGIApp

from pensieve.core.errors import OverloadedError

__all__ = ["Drain", "drain_of", "shutting_down"]


def shutting_down() -> OverloadedError:
    return OverloadedError("the server is shutting down")


class Drain:
    """Shutdown state shared by an app and the server running it (one event loop)."""

    def __init__(self) -> None:
        self.draining = False
        self.aborted = False
        self._scopes: set[anyio.CancelScope] = set()

    def begin(self) -> None:
        """Stop admitting requests; those already open carry on."""
        self.draining = True

    def abort(self) -> None:
        """End every open answer now. Call it on the loop that serves the app."""
        self.draining = self.aborted = True
        for scope in self._scopes:
            scope.cancel()

    @contextmanager
    def abortable(self, deadline: float) -> Iterator[anyio.CancelScope]:
        """A cancel scope ending at ``deadline`` (loop time) or at an abort, whichever comes first."""
        scope = anyio.CancelScope(deadline=deadline)
        if self.aborted:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)


def drain_of(app: ASGIApp) -> Drain | None:
    """The drain of an app made by ``create_app``; None for any other ASGI app."""
    drain = getattr(app.state, "drain", None) if isinstance(app, Starlette) else None
    return drain if isinstance(drain, Drain) else None

"""Pensieve cli: the ``pensieve-cli`` command (start, stop, status, validate, models)."""

from pensieve.cli.main import main

__all__ = ["main"]

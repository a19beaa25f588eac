"""Assembling the configuration a command runs with: flags > ``PENSIEVE_*`` env > file > defaults."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from pensieve.core.config import Config, build_config, env_overrides, read_config_file

__all__ = ["config_option", "load_config", "location_options", "model_path"]

F = TypeVar("F", bound=Callable[..., Any])


def load_config(config_file: str | None, flags: Mapping[str, Any]) -> Config:
    """The effective configuration; ``flags`` are dotted keys, None meaning "not given"."""
    file_data = read_config_file(config_file) if config_file else None
    return build_config(file_data, env_overrides(os.environ), flags)


def model_path(config: Config) -> Path | None:
    """The configured model file (``~`` expanded), or None for the embedded default."""
    return Path(config.model.path).expanduser() if config.model.path else None


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="Config file (JSON, or TOML for any other extension).",
    )(func)


def location_options(func: F) -> F:
    """``--host``/``--port``/``--config``: where a server listens (shared by start, stop and status)."""
    func = click.option("--port", type=int, help="Port (default 8080).")(func)
    func = click.option("--host", help="Host or address (default 127.0.0.1).")(func)
    return config_option(func)

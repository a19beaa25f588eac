"""``pensieve-cli ps``: the models a running server has loaded, from its ``GET /api/ps``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

from pensieve.cli.settings import load_config, location_options
from pensieve.core.config import ServerSettings
from pensieve.device import format_bytes
from pensieve.server import DEV_KEY

__all__ = ["loaded_models", "ps"]


@click.command()
@location_options
def ps(config_file: str | None, host: str | None, port: int | None) -> None:
    """Show the models the running server has loaded: memory, requests in flight, keep-alive."""
    settings = load_config(config_file, {"server.host": host, "server.port": port}).server
    loaded = loaded_models(settings)
    if loaded is None:
        click.echo(f"No Pensieve server is running on {settings.host}:{settings.port}.")
        raise SystemExit(1)
    if not loaded:
        click.echo("No model is loaded.")
        return
    rows = [
        ("NAME", "ARCHITECTURE", "QUANT", "WEIGHTS", "MEMORY", "RESERVED", "RUNNING", "LOADED AT", "UNTIL")
    ]
    for model in loaded:
        memory = model.get("memory_bytes")
        reserved = model.get("reserved_bytes")
        rows.append(
            (
                str(model["name"]),
                str(model.get("architecture", "?")),
                str(model.get("quantization", "?")),
                str(model.get("weight_layout", "?")),
                "?" if memory is None else format_bytes(int(memory)),
                "?" if reserved is None else format_bytes(int(reserved)),
                str(model.get("running", "?")),
                str(model.get("loaded_at", "?")),
                str(model.get("expires_at") or "forever"),
            )
        )
    echo_table(rows)


def loaded_models(settings: ServerSettings) -> list[dict[str, Any]] | None:
    """The server's ``/api/ps`` list, or None when nothing answers on the configured address.

    Sends the first configured API key, or the development key (accepted on loopback when no
    keys are configured).
    """
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    key = settings.api_keys[0] if settings.api_keys else DEV_KEY
    request = urllib.request.Request(f"http://{host}:{settings.port}/api/ps", headers={"x-api-key": key})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise click.ClickException(
            f"the server on port {settings.port} answered /api/ps with {exc.code}"
            + (": it does not accept the API key (configure server.api_keys)" if exc.code == 401 else "")
        ) from exc
    except (OSError, ValueError):
        return None
    models: list[dict[str, Any]] = body.get("models", [])
    return models


def echo_table(rows: list[tuple[str, ...]]) -> None:
    """Left-aligned columns, two spaces apart; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

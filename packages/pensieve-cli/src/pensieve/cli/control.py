"""``pensieve-cli stop`` and ``status``: find a running server by its pid file and its /health."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import click

from pensieve.cli.pidfile import PidFile, pid_path, process_alive
from pensieve.cli.settings import load_config, location_options
from pensieve.core.config import ServerSettings

__all__ = ["status", "stop"]


@click.command()
@location_options
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the exit.")
def stop(config_file: str | None, host: str | None, port: int | None, timeout: float) -> None:
    """Stop the server running on this port (SIGTERM, then wait for it to exit)."""
    settings = load_config(config_file, {"server.host": host, "server.port": port}).server
    pid_file = PidFile(pid_path(settings))
    pid = pid_file.running_pid()
    if pid is None:
        click.echo(f"No Pensieve server is running on port {settings.port} (no live pid in {pid_file.path}).")
        pid_file.path.unlink(missing_ok=True)  # a stale file from a server that did not clean up
        raise SystemExit(1)
    click.echo(f"Stopping Pensieve server (pid {pid})...")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # The server removes its pid file as its last act; a crashed one is caught by the liveness check.
    while pid_file.path.exists() and process_alive(pid):
        if time.monotonic() > deadline:
            click.echo(f"The server (pid {pid}) did not exit within {timeout:g} s.", err=True)
            raise SystemExit(1)
        time.sleep(0.1)
    click.echo("Server stopped.")


@click.command()
@location_options
def status(config_file: str | None, host: str | None, port: int | None) -> None:
    """Show whether the server is running, with its model, device and uptime (exit 1 if not)."""
    settings = load_config(config_file, {"server.host": host, "server.port": port}).server
    pid = PidFile(pid_path(settings)).running_pid()
    health = _health(settings)
    if health is None:
        where = f" (pid {pid} is alive but not answering)" if pid is not None else ""
        click.echo(f"Pensieve server is not running on {settings.host}:{settings.port}{where}.")
        raise SystemExit(1)
    device = health.get("device") or {}
    click.echo(f"Pensieve server is {health.get('status')} on {settings.host}:{settings.port}")
    click.echo(f"  pid:     {pid if pid is not None else 'unknown (no pid file)'}")
    click.echo(f"  model:   {health.get('model')}")
    click.echo(f"  device:  {device.get('backend', '?')} ({device.get('name', '?')})")
    click.echo(f"  uptime:  {_duration(float(health.get('uptime_seconds', 0)))}")
    if health.get("status") != "healthy":
        raise SystemExit(1)


def _health(settings: ServerSettings) -> dict[str, Any] | None:
    """The /health body, or None when nothing answers on the configured address."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    try:
        try:
            with urllib.request.urlopen(f"http://{host}:{settings.port}/health", timeout=5) as response:
                body: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:  # 503: running, but the engine is down
            body = json.load(exc)
    except (OSError, ValueError):
        return None
    return body


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"

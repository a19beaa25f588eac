"""``pensieve-cli start``: load the model, then serve the API until Ctrl+C or SIGTERM."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import click
from rich.console import Console

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.cli.pidfile import PidFile, pid_path
from pensieve.cli.settings import load_config, location_options
from pensieve.core.config import Config
from pensieve.device import cpu_kernels_for, format_bytes
from pensieve.server import bind_socket, create_app, require_safe_bind, serve

if TYPE_CHECKING:
    from pensieve.engine import LocalModel, ModelPool

__all__ = ["start"]

_KEY_WARNING = (
    "Warning: API keys given with --api-key are visible to other users of this machine (ps, /proc); "
    "prefer server.api_keys in a config file or PENSIEVE_SERVER_API_KEYS."
)


@click.command()
@click.option(
    "--model", "model_file", type=click.Path(dir_okay=False), help="GGUF file (default: embedded SmolLM2)."
)
@location_options
@click.option("--api-key", "api_keys", multiple=True, help="Accepted API key (repeatable; see the warning).")
@click.option("--device", type=click.Choice(["auto", "gpu", "cpu"]), help="MLX device (default auto).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Log level of the server log (stderr).",
)
def start(
    model_file: str | None,
    config_file: str | None,
    host: str | None,
    port: int | None,
    api_keys: tuple[str, ...],
    device: str | None,
    log_level: str,
) -> None:
    """Load the model and serve the Anthropic Messages API until Ctrl+C or SIGTERM."""
    if api_keys:
        click.echo(_KEY_WARNING, err=True)
    flags = {
        "model.path": model_file,
        "server.host": host,
        "server.port": port,
        "server.api_keys": list(api_keys) or None,
        "device.device": device,
    }
    config = load_config(config_file, flags)
    require_safe_bind(config.server)  # before spending seconds on loading the model
    pid_file = PidFile(pid_path(config.server))
    running = pid_file.running_pid()
    if running is not None:
        raise click.ClickException(
            f"a server is already running on port {config.server.port} (pid {running}, pid file {pid_file.path})"
        )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo("Starting Pensieve server...")
    try:
        with pid_file, _sigterm_interrupts():
            pool = _load(config)
            try:
                _describe(pool)
                _serve(pool, config)
            finally:
                pool.close()
    except KeyboardInterrupt:
        click.echo("Stopped before the server started.")
        return
    click.echo("Server stopped.")


def _load(config: Config) -> ModelPool:
    """The models this server can serve, with the default one loaded so the first request is fast."""
    # Imported here: mlx-lm pulls in transformers (~1.5 s), which stop/status/--help never need.
    from pensieve.engine import ModelPool

    console = Console(stderr=True)
    pool = ModelPool.from_config(config)
    try:
        ModelCatalog(pool, aliases=config.model.aliases)  # alias mistakes surface before the load
        with console.status("Preparing CPU kernels (compiled on the first start only, ~15 s)..."):
            cpu_kernels_for(config.device, pool.device)
        with console.status(f"Loading model {pool.default}..."):
            pool.load(pool.default)
        return pool
    except (MemoryError, RuntimeError) as exc:
        pool.close()
        # The budget check (ModelTooLargeError) runs first; this is memory running out anyway.
        # MLX reports a failed allocation as a RuntimeError naming it.
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower():
            raise
        raise click.ClickException(
            f"out of memory while loading the model ({type(exc).__name__}: {exc or 'no details'}); "
            "free memory, choose a smaller model, or lower model.context_length"
        ) from exc
    except BaseException:
        pool.close()
        raise


def _describe(pool: ModelPool) -> None:
    model: LocalModel = pool.model(pool.default)
    info, device = model.info, model.device
    click.echo(
        f"Model: {info.id} ({info.architecture}, {info.quantization}, {info.parameter_count:,} parameters)"
    )
    click.echo(
        f"  file: {info.file_path} ({format_bytes(info.file_size)}), context {info.context_length} tokens"
    )
    click.echo(
        f"Device: {device.backend} ({device.name}), memory budget {format_bytes(device.memory_budget_bytes)}"
        f" of {format_bytes(device.total_memory_bytes)}, MLX {device.mlx_version}"
    )
    kernels = f", CPU kernels: {device.cpu_kernels}" if device.cpu_kernels else ""
    click.echo(f"Weights: {device.weight_layout} {device.compute_dtype}, BLAS {device.blas}{kernels}")
    others = [name for name in pool.names() if name != pool.default]
    click.echo(f"Also available (loaded on first request): {', '.join(others) or 'none'}")


def _serve(pool: ModelPool, config: Config) -> None:
    """Serve ``pool``'s models until stopped; the caller closes the pool."""
    catalog = ModelCatalog(pool, aliases=config.model.aliases)
    service = MessagesService(catalog, config.limits, sampling=config.sampling)
    device = pool.model(pool.default).device.to_dict()
    app = create_app(service, config, engine=pool, device=device)
    host = config.server.host
    click.echo(f"Starting server on {host}:{config.server.port}")
    sock = bind_socket(host, config.server.port)
    try:
        click.echo(f"Server started successfully on {host}:{sock.getsockname()[1]}")
        click.echo("Press Ctrl+C to stop the server")
        serve(app, config, sock=sock)  # Hypercorn handles SIGINT/SIGTERM while serving
    except KeyboardInterrupt:
        pass  # a signal that came just before Hypercorn took over: an ordinary stop


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Until serving starts, SIGTERM stops start-up like Ctrl+C does (so the pid file is removed)."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

"""``pensieve-cli models``: the model a server with this configuration would load, read from its GGUF header."""

from __future__ import annotations

from pathlib import Path

import click

from pensieve.cli.settings import config_option, load_config, model_path
from pensieve.device import format_bytes
from pensieve.formats import default_model_path, open_gguf

__all__ = ["models"]


@click.command()
@config_option
@click.option(
    "--model", "model_file", type=click.Path(dir_okay=False), help="GGUF file (default: embedded SmolLM2)."
)
def models(config_file: str | None, model_file: str | None) -> None:
    """Show the configured model (id, aliases, file, architecture, quantization, context, size).

    Reads only the GGUF header and tensor table; no weights are loaded.
    """
    config = load_config(config_file, {"model.path": model_file})
    gguf = open_gguf(model_path(config) or default_model_path())
    spec = gguf.spec
    context = min(config.model.context_length or spec.context_length, spec.context_length)
    shortened = "" if context == spec.context_length else f" (model: {spec.context_length})"
    rows = [
        ("id", config.model.id or Path(gguf.path).name.removesuffix(".gguf")),
        ("aliases", ", ".join(config.model.aliases) or "-"),
        ("name", spec.name or "-"),
        ("path", str(gguf.path)),
        ("architecture", spec.architecture),
        ("quantization", spec.quantization),
        ("parameters", f"{spec.parameter_count:,}"),
        ("context", f"{context} tokens{shortened}"),
        ("size", format_bytes(gguf.file_size)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")

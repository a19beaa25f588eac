"""``pensieve-cli models``: the models a server with this configuration can serve, read from their
GGUF headers, and whether a server running on the port has them loaded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import click

from pensieve.cli.ps import echo_table, loaded_models
from pensieve.cli.settings import load_config, location_options
from pensieve.device import format_bytes
from pensieve.formats import ModelFile, describe_model, find_models, models_dir

__all__ = ["models"]


@click.command()
@location_options
@click.option(
    "--model", "model_file", type=click.Path(dir_okay=False), help="GGUF file (default: embedded SmolLM2)."
)
def models(config_file: str | None, host: str | None, port: int | None, model_file: str | None) -> None:
    """List the available models: the default, the bundled ones and the models directory's.

    Reads only GGUF headers; no weights are loaded. LOADED asks a server running on --port.
    Exits 1 when the default model cannot be served.
    """
    config = load_config(config_file, {"model.path": model_file, "server.host": host, "server.port": port})
    settings = config.model
    found = [
        describe_model(name, path, settings.context_length) for name, path in find_models(settings).items()
    ]
    running = loaded_models(config.server)
    loaded = {model["name"] for model in running or []}
    directory = models_dir(settings)
    click.echo(f"Models directory: {directory}{'' if directory.is_dir() else ' (does not exist)'}")
    rows = [("NAME", "ARCHITECTURE", "QUANT", "SIZE", "CONTEXT", "LOADED")]
    rows += [_row(file, file.name in loaded, default=index == 0) for index, file in enumerate(found)]
    echo_table(rows)
    for file in found:
        if file.problem is not None:
            click.echo(f"{file.name}: cannot be served: {file.problem}")
    aliases = _aliases(settings.aliases, found[0].name)
    if aliases:
        click.echo("Aliases: " + ", ".join(f"{alias} -> {target}" for alias, target in aliases.items()))
    if found[0].problem is not None:
        raise click.ClickException(f"the default model {found[0].name} cannot be served: {found[0].problem}")


def _row(file: ModelFile, loaded: bool, *, default: bool) -> tuple[str, ...]:
    name = f"{file.name} (default)" if default else file.name
    info = file.info
    if info is None:
        return (name, "-", "-", "-", "-", "no")
    context = f"{info.context_length}"
    return (
        name,
        info.architecture,
        info.quantization,
        format_bytes(info.file_size),
        context,
        "yes" if loaded else "no",
    )


def _aliases(aliases: Mapping[str, str] | Sequence[str], default: str) -> dict[str, str]:
    return dict(aliases) if isinstance(aliases, Mapping) else dict.fromkeys(aliases, default)

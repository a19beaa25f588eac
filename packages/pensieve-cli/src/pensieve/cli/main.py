"""The ``pensieve-cli`` entry point."""

from __future__ import annotations

from typing import Any

import click

from pensieve.cli.control import status, stop
from pensieve.cli.convert import convert
from pensieve.cli.models import models
from pensieve.cli.ps import ps
from pensieve.cli.start import start
from pensieve.cli.validate import validate
from pensieve.core.errors import PensieveError

__all__ = ["main"]


class _Group(click.Group):
    """Reports Pensieve errors (bad config, missing model…) as one clear message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PensieveError as exc:
            raise click.ClickException(exc.message) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pensieve-cli", prog_name="pensieve-cli")
def main() -> None:
    """Pensieve: a local LLM server speaking the Anthropic Messages API."""


main.add_command(start)
main.add_command(stop)
main.add_command(status)
main.add_command(validate)
main.add_command(models)
main.add_command(ps)
main.add_command(convert)

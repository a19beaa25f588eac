"""The ``pensieve-cli`` entry point."""

import click


@click.group()
def main() -> None:
    """Pensieve: a local LLM server speaking the Anthropic Messages API."""

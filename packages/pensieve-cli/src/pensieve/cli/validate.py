"""``pensieve-cli validate``: every problem of a config file, each with its dotted key."""

from __future__ import annotations

from typing import Any

import click

from pensieve.cli.settings import model_path
from pensieve.core.config import Config, build_config, read_config_file
from pensieve.core.errors import ConfigError, ConfigProblem
from pensieve.server import require_safe_bind

__all__ = ["config_problems", "validate"]


def config_problems(data: dict[str, Any]) -> list[ConfigProblem]:
    """Problems of a parsed config file: schema problems, then what only makes sense once typed.

    The second kind (a missing model file, a public bind without keys) is checked per section,
    so a bad port does not hide a missing model file.
    """
    try:
        build_config(data)
        problems: list[ConfigProblem] = []
    except ConfigError as exc:
        problems = list(exc.problems)
    for section, check in (("server", _server_problems), ("model", _model_problems)):
        try:
            config = build_config({section: data[section]}) if section in data else None
        except ConfigError:
            continue  # already reported above
        if config is not None:
            problems.extend(check(config))
    return problems


def _server_problems(config: Config) -> list[ConfigProblem]:
    try:
        require_safe_bind(config.server)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def _model_problems(config: Config) -> list[ConfigProblem]:
    path = model_path(config)
    if path is not None and not path.is_file():
        return [ConfigProblem("model.path", f"no model file at {path}")]
    return []


@click.command()
@click.option(
    "--config", "config_file", required=True, type=click.Path(dir_okay=False), help="Config file to check."
)
def validate(config_file: str) -> None:
    """Check a config file (JSON or TOML) and list every problem; exit 1 if there is any."""
    try:
        problems = config_problems(read_config_file(config_file))
    except ConfigError as exc:
        problems = list(exc.problems)
    if not problems:
        click.echo(f"{config_file}: valid")
        return
    click.echo(f"{config_file}: {len(problems)} problem(s)", err=True)
    for problem in problems:
        click.echo(f"  - {problem.key}: {problem.message}", err=True)
    raise SystemExit(1)

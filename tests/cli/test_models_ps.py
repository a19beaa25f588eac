"""``pensieve-cli models`` and ``ps`` against a running server (tiny models), and without one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.cli import main
from pensieve.core import build_config
from pensieve.engine import ModelPool
from pensieve.server import create_app
from tests.server.conftest import running
from tests.support.models_dir import write_models_dir
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A server on tiny models with ``alpha`` (the default) loaded; yields its port and models dir."""
    models = write_models_dir(tmp_path_factory.mktemp("models"))
    config = build_config(
        flags={
            "model.path": str(models / "alpha.gguf"),
            "model.directory": str(models),
            "device.device": "cpu",
            "device.cache_dir": str(tmp_path_factory.mktemp("cache")),
        }
    )
    pool = ModelPool.from_config(config)
    try:
        pool.load(pool.default)
        app = create_app(MessagesService(ModelCatalog(pool), config.limits), config, engine=pool)
        with running(app, config) as base_url:
            yield int(base_url.rsplit(":", 1)[1]), models
    finally:
        pool.close()


def test_ps_shows_the_loaded_models(server: tuple[int, Path]) -> None:
    port, _ = server
    result = CliRunner().invoke(main, ["ps", "--port", str(port)])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:4] == ["NAME", "ARCHITECTURE", "QUANT", "WEIGHTS"]
    assert [row.split()[:3] for row in rows] == [["alpha", "llama", "F32"]]
    assert rows[0].split()[-1] == "forever"  # the default model does not expire


def test_models_marks_what_the_server_has_loaded(server: tuple[int, Path]) -> None:
    port, models = server
    args = ["models", "--port", str(port), "--model", str(models / "alpha.gguf")]
    result = CliRunner().invoke(main, args, env={"PENSIEVE_MODEL_DIRECTORY": str(models)})
    assert result.exit_code == 0, result.output
    loaded = {line.split()[0]: line.split()[-1] for line in result.output.splitlines()[2:]}
    assert loaded["alpha"] == "yes"
    assert loaded["beta"] == loaded["gamma"] == "no"


def test_ps_without_a_server_says_so() -> None:
    port = free_port()
    result = CliRunner().invoke(main, ["ps", "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.strip() == f"No Pensieve server is running on 127.0.0.1:{port}."

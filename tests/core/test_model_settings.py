"""The [model] section: aliases as a mapping (or the older list), the models directory, keep-alive."""

from __future__ import annotations

import pytest

from pensieve.core import build_config, env_overrides
from pensieve.core.errors import ConfigError


def test_aliases_map_names_to_models_in_files_and_the_environment() -> None:
    from_file = build_config({"model": {"aliases": {"claude-sonnet-4-5": "gemma-3-270m-q4_k_m"}}})
    assert from_file.model.aliases == {"claude-sonnet-4-5": "gemma-3-270m-q4_k_m"}
    env = env_overrides({"PENSIEVE_MODEL_ALIASES": "claude-sonnet-4-5=gemma, fast = smol"})
    assert build_config(env=env).model.aliases == {"claude-sonnet-4-5": "gemma", "fast": "smol"}


def test_the_list_form_of_aliases_still_works() -> None:
    assert build_config({"model": {"aliases": ["local"]}}).model.aliases == ["local"]
    assert build_config(env=env_overrides({"PENSIEVE_MODEL_ALIASES": "a,b"})).model.aliases == ["a", "b"]


def test_an_alias_without_a_target_is_reported() -> None:
    with pytest.raises(ConfigError, match="model.aliases"):
        build_config(env=env_overrides({"PENSIEVE_MODEL_ALIASES": "a=b,c"}))


def test_directory_and_keep_alive() -> None:
    env = env_overrides({"PENSIEVE_MODEL_DIRECTORY": "~/models", "PENSIEVE_MODEL_KEEP_ALIVE_SECONDS": "30"})
    model = build_config(env=env).model
    assert (model.directory, model.keep_alive_seconds) == ("~/models", 30.0)
    assert (build_config().model.directory, build_config().model.keep_alive_seconds) == (None, 300.0)
    with pytest.raises(ConfigError, match="model.keep_alive_seconds"):
        build_config({"model": {"keep_alive_seconds": -1}})

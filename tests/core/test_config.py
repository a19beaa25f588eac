"""Configuration: precedence, coercion of environment text, and every problem reported with its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pensieve.core import ConfigError, build_config, env_overrides, read_config_file


def test_defaults_bind_loopback_on_the_seed_port() -> None:
    config = build_config()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.api_keys == []
    assert config.model.path is None


def test_flags_beat_env_beat_file() -> None:
    file_data = {"server": {"port": 7000, "host": "127.0.0.2"}, "model": {"aliases": ["a"]}}
    env = env_overrides({"PENSIEVE_SERVER_PORT": "7100", "PENSIEVE_MODEL_ALIASES": "x, y"})
    config = build_config(file_data, env, flags={"server.port": 7200, "server.host": None})
    assert config.server.port == 7200
    assert config.server.host == "127.0.0.2"  # a flag left unset does not override
    assert config.model.aliases == ["x", "y"]


def test_every_problem_is_listed_with_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(
            {
                "server": {"port": 70000, "colour": "red"},
                "nonsense": {},
                "limits": {"max_concurrent_requests": 0},
            },
            flags={"device.device": "tpu"},
        )
    keys = {problem.key for problem in caught.value.problems}
    assert keys == {
        "server.port",
        "server.colour",
        "nonsense",
        "limits.max_concurrent_requests",
        "device.device",
    }
    assert "server.port" in str(caught.value)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_files_in_json_and_toml(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"pensieve{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"server": {"port": 9001, "api_keys": ["k1"]}}))
    else:
        path.write_text('[server]\nport = 9001\napi_keys = ["k1"]\n')
    config = build_config(read_config_file(path))
    assert config.server.port == 9001
    assert config.server.api_keys == ["k1"]


def test_unreadable_or_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid"):
        read_config_file(bad)


def test_sampling_defaults_are_the_apis_and_can_be_set_from_the_environment() -> None:
    defaults = build_config().sampling
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (1.0, 1.0, 0)
    env = env_overrides({"PENSIEVE_SAMPLING_TEMPERATURE": "0.3", "PENSIEVE_SAMPLING_TOP_K": "40"})
    sampling = build_config(env=env).sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.3, 1.0, 40)
    with pytest.raises(ConfigError) as caught:
        build_config({"sampling": {"temperature": 1.5, "top_p": 0}})
    assert {problem.key for problem in caught.value.problems} == {"sampling.temperature", "sampling.top_p"}

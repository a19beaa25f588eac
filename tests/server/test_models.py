"""Several models behind one server: the anthropic SDK alternates between two tiny models whose
budget holds only one at a time, and /v1/models, /api/ps and /health describe them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import httpx
import pytest

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.core import build_config
from pensieve.core.config import Config
from pensieve.engine import ModelPool
from pensieve.server import DEV_KEY, create_app
from tests.server.conftest import running
from tests.support.models_dir import mlx_limits_restored, reserved_bytes, write_models_dir

HELLO = [{"role": "user", "content": "the quick brown fox"}]
AUTH = {"x-api-key": DEV_KEY}
GREEDY = {"temperature": 0}  # the anthropic SDK 2.x has no temperature argument


@dataclass
class PoolServer:
    base_url: str
    pool: ModelPool
    config: Config


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolServer]:
    models = write_models_dir(tmp_path_factory.mktemp("models"))
    cache = str(tmp_path_factory.mktemp("cache"))
    with mlx_limits_restored():
        device = {"device.device": "cpu", "device.cache_dir": cache}
        one_model = reserved_bytes(models / "alpha.gguf", build_config(flags=device).device)
        config = build_config(
            flags={
                **device,
                "device.memory_limit_bytes": one_model * 3 // 2,  # room for one tiny model at a time
                "model.path": str(models / "alpha.gguf"),
                "model.directory": str(models),
                "model.aliases": {"claude-sonnet-4-5": "beta", "fast": "alpha"},
                "limits.rate_limit_per_minute": 0,
            }
        )
        pool = ModelPool.from_config(config)
        try:
            pool.load(pool.default)
            service = MessagesService(ModelCatalog(pool, aliases=config.model.aliases), config.limits)
            app = create_app(service, config, engine=pool, device=pool.model(pool.default).device.to_dict())
            with running(app, config) as base_url:
                yield PoolServer(base_url, pool, config)
        finally:
            pool.close()


@pytest.fixture
def client(pool_server: PoolServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=pool_server.base_url, api_key=DEV_KEY, max_retries=0) as c:
        yield c


def _answer(client: anthropic.Anthropic, model: str) -> str:
    message = client.messages.create(model=model, max_tokens=8, messages=HELLO, extra_body=GREEDY)
    assert message.model == model
    return "".join(block.text for block in message.content if block.type == "text")


def _loaded(pool_server: PoolServer) -> list[str]:
    return [model.name for model in pool_server.pool.loaded_models()]


def test_alternating_models_unloads_and_reloads_each_with_its_own_answer(
    client: anthropic.Anthropic, pool_server: PoolServer
) -> None:
    answers: dict[str, list[str]] = {"alpha": [], "beta": []}
    for model in ("alpha", "beta", "alpha", "beta"):
        answers[model].append(_answer(client, model))
        assert _loaded(pool_server) == [model]  # the budget holds one: the other was unloaded
    assert answers["alpha"][0] == answers["alpha"][1]  # reloaded, greedy: the same answer
    assert answers["beta"][0] == answers["beta"][1]
    assert answers["alpha"][0] != answers["beta"][0]  # two different models answered
    # Aliases map to their model; unmapped claude-* names go to the default (alpha).
    assert _answer(client, "claude-sonnet-4-5") == answers["beta"][0]
    assert _answer(client, "claude-3-5-haiku-latest") == answers["alpha"][0]
    assert _answer(client, "fast") == answers["alpha"][0]


def test_streaming_loads_the_requested_model(client: anthropic.Anthropic, pool_server: PoolServer) -> None:
    expected = _answer(client, "gamma")
    with client.messages.stream(model="beta", max_tokens=8, messages=HELLO, extra_body=GREEDY) as stream:
        streamed = stream.get_final_text()
    assert _loaded(pool_server) == ["beta"]
    with client.messages.stream(model="gamma", max_tokens=8, messages=HELLO, extra_body=GREEDY) as stream:
        assert stream.get_final_text() == expected
    assert streamed != expected


def test_models_lists_every_available_model_and_alias(client: anthropic.Anthropic) -> None:
    ids = [model.id for model in client.models.list(limit=100)]
    assert ids[0] == "alpha"
    assert {"alpha", "beta", "gamma", "SmolLM2-135M-Instruct.Q4_1", "claude-sonnet-4-5", "fast"} <= set(ids)
    beta = client.models.retrieve("beta")
    assert beta.id == "beta" and beta.display_name == "beta"
    assert client.models.retrieve("claude-sonnet-4-5").display_name == "beta"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("delta")


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="delta", max_tokens=4, messages=HELLO)


def test_ps_and_health_report_the_loaded_models(client: anthropic.Anthropic, pool_server: PoolServer) -> None:
    _answer(client, "beta")
    with httpx.Client(base_url=pool_server.base_url) as http:
        assert http.get("/api/ps").status_code == 401  # authenticated like /v1
        [beta] = http.get("/api/ps", headers=AUTH).json()["models"]
        health = http.get("/health").json()
    assert beta["name"] == "beta" and beta["architecture"] == "llama"
    assert 0 < beta["memory_bytes"] <= beta["reserved_bytes"] <= pool_server.pool.budget_bytes
    assert beta["loaded_at"].endswith("Z") and beta["expires_at"].endswith("Z") and beta["running"] == 0
    assert health["status"] == "healthy"
    assert health["model"] == "alpha"  # the default model, loaded or not
    assert health["loaded_models"] == ["beta"]
    assert {"device", "uptime_seconds"} <= set(health)

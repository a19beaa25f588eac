"""SmolLM2 and Gemma 3 270M behind one server whose budget holds one of them at a time: the
anthropic SDK alternates between them, each answer comes from its own model, and the loaded
models stay within the budget. Outputs are greedy and at most 16 tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.core import build_config
from pensieve.engine import ModelPool
from pensieve.server import DEV_KEY, create_app
from tests.server.conftest import running
from tests.support.models_dir import mlx_limits_restored

pytestmark = pytest.mark.real_model

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1"
GEMMA = "gemma-3-270m-q4_k_m"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelPool]:
    flags = {
        "model.directory": str(tmp_path_factory.mktemp("empty-models")),
        "model.context_length": 512,
    }
    with mlx_limits_restored():
        sizes = ModelPool.from_config(build_config(flags=flags))
        try:
            needs = [sizes.required_bytes(SMOLLM2), sizes.required_bytes(GEMMA)]
        finally:
            sizes.close()
        # Room for the larger model alone, not for both.
        budget = max(needs) + min(needs) // 2
        pool = ModelPool.from_config(build_config(flags={**flags, "device.memory_limit_bytes": budget}))
        try:
            yield pool
        finally:
            pool.close()


@pytest.fixture(scope="module")
def base_url(pool: ModelPool) -> Iterator[str]:
    config = build_config(flags={"limits.rate_limit_per_minute": 0})
    pool.load(pool.default)
    catalog = ModelCatalog(pool, aliases={"claude-haiku-4-5": GEMMA})
    app = create_app(MessagesService(catalog, config.limits), config, engine=pool)
    with running(app, config) as url:
        yield url


def test_alternating_smollm2_and_gemma_unloads_and_reloads_them(pool: ModelPool, base_url: str) -> None:
    assert Path(pool.describe(GEMMA).file_path).is_file()
    answers: dict[str, list[str]] = {SMOLLM2: [], GEMMA: []}
    with anthropic.Anthropic(base_url=base_url, api_key=DEV_KEY, max_retries=0, timeout=600) as client:
        for name in (SMOLLM2, "claude-haiku-4-5", SMOLLM2, GEMMA):
            message = client.messages.create(
                model=name, max_tokens=16, messages=FRANCE, extra_body={"temperature": 0}
            )
            served = GEMMA if name == "claude-haiku-4-5" else name
            answers[served].append("".join(b.text for b in message.content if b.type == "text"))
            loaded = pool.loaded_models()
            assert [model.name for model in loaded] == [served]  # the other one was unloaded
            assert sum(model.reserved_bytes for model in loaded) <= pool.budget_bytes
            assert 0 < loaded[0].memory_bytes <= loaded[0].reserved_bytes
    assert "Paris" in answers[SMOLLM2][0]
    assert answers[SMOLLM2][0] == answers[SMOLLM2][1]  # reloaded, greedy: the same answer
    assert answers[GEMMA][0] == answers[GEMMA][1]
    assert answers[GEMMA][0] != answers[SMOLLM2][0]

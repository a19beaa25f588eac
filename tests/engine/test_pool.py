"""ModelPool on tiny synthetic models: listing, on-demand loads, LRU unloads within the budget,
keep-alive, nothing unloaded under a running request, and one load shared by its waiters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pensieve.core import (
    DeviceSettings,
    EngineSettings,
    GenerationEvent,
    GenerationRequest,
    ModelSettings,
    SamplingParams,
    TextDelta,
)
from pensieve.core.errors import ModelTooLargeError, NotFoundError, OverloadedError
from pensieve.engine import ModelPool, PooledEngine
from pensieve.formats import find_models
from tests.support.models_dir import mlx_limits_restored, reserved_bytes, write_models_dir

MakePool = Callable[..., ModelPool]


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module", autouse=True)
def _restore_mlx_limits() -> Iterator[None]:
    with mlx_limits_restored():
        yield


@pytest.fixture(scope="module")
def reserved(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """What one tiny model counts against the budget (they are all the same size)."""
    cache = tmp_path_factory.mktemp("cache")
    return reserved_bytes(models_dir / "alpha.gguf", DeviceSettings(device="cpu", cache_dir=str(cache)))


def _pool(
    models_dir: Path,
    cache: Path,
    budget: int | None,
    keep_alive: float = 300.0,
    clock: Callable[[], float] | None = None,
) -> ModelPool:
    settings = ModelSettings(path=str(models_dir / "alpha.gguf"), directory=str(models_dir))
    return ModelPool(
        find_models(settings),
        default="alpha",
        device=DeviceSettings(device="cpu", memory_limit_bytes=budget, cache_dir=str(cache)),
        keep_alive_seconds=keep_alive,
        clock=clock or Clock(),
    )


@pytest.fixture
def make_pool(models_dir: Path, tmp_path: Path) -> Iterator[MakePool]:
    pools: list[ModelPool] = []

    def make(
        budget: int | None, keep_alive: float = 300.0, clock: Callable[[], float] | None = None
    ) -> ModelPool:
        pools.append(_pool(models_dir, tmp_path / "cache", budget, keep_alive, clock))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


def _request(engine: PooledEngine, max_tokens: int = 6) -> GenerationRequest:
    return GenerationRequest(
        prompt_tokens=tuple(engine.tokenizer.encode("the quick brown fox")),
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=0.0),
    )


async def _answer(pool: ModelPool, name: str) -> str:
    engine = await pool.acquire(name)
    return await _text(engine.stream(_request(engine)))


async def _text(events: AsyncIterator[GenerationEvent]) -> str:
    return "".join([event.text async for event in events if isinstance(event, TextDelta)])


def _loaded(pool: ModelPool) -> set[str]:
    return {model.name for model in pool.loaded_models()}


def test_lists_the_default_the_bundled_and_the_directory_models(make_pool: MakePool) -> None:
    pool = make_pool(budget=None)
    names = pool.names()
    assert names[0] == "alpha" and pool.default == "alpha"
    assert {"beta", "gamma", "SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m-q4_k_m"} <= set(names)
    assert names.count("alpha") == 1  # the default is also in the directory: listed once
    beta = pool.describe("beta")
    assert (beta.architecture, beta.quantization, beta.context_length) == ("llama", "F32", 512)
    assert beta.file_size == (Path(beta.file_path)).stat().st_size and beta.parameter_count > 0
    assert _loaded(pool) == set()  # listing loads nothing
    with pytest.raises(NotFoundError):
        pool.describe("delta")


def test_loads_on_demand_and_reports_memory(make_pool: MakePool) -> None:
    pool = make_pool(budget=None)
    text = asyncio.run(_answer(pool, "beta"))
    assert text
    [beta] = pool.loaded_models()
    assert beta.name == "beta" and beta.architecture == "llama"
    assert 0 < beta.memory_bytes < beta.reserved_bytes <= pool.budget_bytes
    assert beta.running == 0 and beta.expires_at is not None
    assert asyncio.run(_answer(pool, "beta")) == text  # loaded once, greedy: the same answer


def test_the_reservation_counts_the_prefix_cache_budget(
    models_dir: Path, tmp_path: Path, make_pool: MakePool
) -> None:
    """The engine may fill its prefix cache up to its budget: a load reserves that memory too."""

    def required(prefix_cache_bytes: int) -> int:
        pool = ModelPool(
            {"alpha": models_dir / "alpha.gguf"},
            default="alpha",
            device=DeviceSettings(device="cpu", cache_dir=str(tmp_path)),
            engine_options={"settings": EngineSettings(prefix_cache_bytes=prefix_cache_bytes)},
        )
        try:
            return pool.required_bytes("alpha")
        finally:
            pool.close()

    assert required(64 * 1024 * 1024) - required(0) == 64 * 1024 * 1024
    without_options = make_pool(budget=None).required_bytes("alpha")  # the engine's default budget
    assert required(EngineSettings().prefix_cache_bytes) == without_options


def test_least_recently_used_model_is_unloaded_to_fit_the_budget(make_pool: MakePool, reserved: int) -> None:
    clock = Clock()
    pool = make_pool(budget=int(2.5 * reserved), clock=clock)
    first = {name: asyncio.run(_answer(pool, name)) for name in ("alpha", "beta")}
    assert _loaded(pool) == {"alpha", "beta"}
    clock.now += 1
    asyncio.run(_answer(pool, "beta"))  # alpha is now the least recently used
    clock.now += 1
    asyncio.run(_answer(pool, "gamma"))
    assert _loaded(pool) == {"beta", "gamma"}
    clock.now += 1
    assert asyncio.run(_answer(pool, "alpha")) == first["alpha"]  # reloaded, beta made room
    assert _loaded(pool) == {"gamma", "alpha"}
    assert sum(model.reserved_bytes for model in pool.loaded_models()) <= pool.budget_bytes


def test_keep_alive_unloads_idle_models_but_not_the_default(make_pool: MakePool) -> None:
    clock = Clock()
    pool = make_pool(budget=None, keep_alive=60.0, clock=clock)
    pool.load("alpha")
    asyncio.run(_answer(pool, "beta"))
    clock.now += 59
    assert _loaded(pool) == {"alpha", "beta"}
    clock.now += 2
    assert _loaded(pool) == {"alpha"}


def test_a_model_with_a_request_in_flight_is_never_unloaded(make_pool: MakePool, reserved: int) -> None:
    pool = make_pool(budget=int(1.5 * reserved))

    async def scenario() -> None:
        alpha = await pool.acquire("alpha")
        events = alpha.stream(_request(alpha, max_tokens=4))  # admitted, not read yet
        with pytest.raises(OverloadedError, match="beta"):
            await pool.acquire("beta")
        assert _loaded(pool) == {"alpha"}
        assert await _text(events)  # the running request finishes on its model
        await pool.acquire("beta")  # now alpha is idle and makes room
        assert _loaded(pool) == {"beta"}

    asyncio.run(scenario())


def test_a_model_larger_than_the_budget_is_refused(make_pool: MakePool, reserved: int) -> None:
    pool = make_pool(budget=reserved // 2)
    with pytest.raises(ModelTooLargeError):
        asyncio.run(pool.acquire("beta"))
    assert _loaded(pool) == set()


def test_concurrent_requests_for_one_model_share_one_load(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(budget=None)

    async def together() -> list[PooledEngine]:
        return list(await asyncio.gather(*(pool.acquire("gamma") for _ in range(4))))

    with caplog.at_level(logging.INFO, logger="pensieve.engine.pool"):
        engines = asyncio.run(together())
    assert all(engine is engines[0] for engine in engines)
    loads = [record for record in caplog.records if record.getMessage().startswith("loaded model gamma")]
    assert len(loads) == 1


def test_keep_alive_unloads_without_further_requests(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(budget=None, keep_alive=0.2, clock=time.monotonic)  # the reaper acts alone

    def unloaded() -> bool:
        return any(r.getMessage() == "unloading model beta after 0.2 s idle" for r in caplog.records)

    async def scenario() -> None:
        await _answer(pool, "beta")
        for _ in range(600):  # wait for the reaper (generously: the machine may be busy)
            if unloaded():
                return
            await asyncio.sleep(0.05)

    with caplog.at_level(logging.INFO, logger="pensieve.engine.pool"):
        asyncio.run(scenario())
    assert unloaded()
    assert _loaded(pool) == set()

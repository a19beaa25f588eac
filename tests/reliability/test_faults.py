"""Faults: one request failing leaves the others alone; a dead generation thread shows on /health
and fails requests instead of hanging them; a model too large for memory is one clear CLI error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from pensieve.claude import MessagesService, ModelCatalog
from pensieve.cli import main
from pensieve.core import (
    GenerationError,
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    GenerationStarted,
    TextDelta,
    build_config,
)
from pensieve.engine import Engine
from pensieve.server import create_app
from tests.reliability.apps import BODY, DEV, fake_app
from tests.server.conftest import running
from tests.server.fakes import FakeBackend
from tests.server.sse import parse_sse

CLI = str(Path(sys.executable).with_name("pensieve-cli"))


def test_a_failing_request_ends_alone_while_another_streams() -> None:
    app, backend, config = fake_app(**{"limits.rate_limit_per_minute": 0})
    backend.words = [f" w{i}" for i in range(30)]
    backend.delay = 0.03
    backend.poison = ("POISON", GenerationError("generation failed: the device is gone"))
    poisoned = {**BODY, "max_tokens": 30, "messages": [{"role": "user", "content": "POISON"}]}
    healthy = {**BODY, "max_tokens": 30, "stream": True}
    with (
        running(app, config) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
        client.stream("POST", "/v1/messages", json=healthy, headers=DEV) as long_stream,
    ):
        lines = long_stream.iter_lines()
        first: list[str] = []
        while not first or first[-1] != "event: content_block_delta":  # the stream is under way
            first.append(next(lines))
        with httpx.Client(base_url=base_url, timeout=30) as other:
            with other.stream("POST", "/v1/messages", json={**poisoned, "stream": True}, headers=DEV) as bad:
                bad_events = parse_sse(bad.iter_lines())
            failed = other.post("/v1/messages", json=poisoned, headers=DEV)
            assert other.get("/health").status_code == 200
        events = parse_sse([*first, *lines])
    assert bad_events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "generation failed: the device is gone"}},
    )
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "api_error"
    assert [name for name, _ in events][-1] == "message_stop"
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "".join(
        backend.words
    )


class _ThreadKiller(BaseException):
    """What no ``except Exception`` catches: the generation thread dies of it."""


class _FragileScheduler:
    """A batch scheduler whose second request kills the generation thread."""

    def __init__(self) -> None:
        self.requests: list[tuple[object, GenerationRequest]] = []
        self.calls = 0
        self.running = self.waiting = self.prefix_cache_bytes = 0

    @property
    def busy(self) -> bool:
        return bool(self.requests)

    def add(self, key: object, request: GenerationRequest, _max_tokens: int) -> None:
        self.requests.append((key, request))

    def cancel(self, key: object) -> None:
        self.requests = [(k, r) for k, r in self.requests if k != key]

    def step(self) -> list[tuple[object, list[GenerationEvent], bool]]:
        key, request = self.requests.pop(0)
        self.calls += 1
        if self.calls > 1:
            raise _ThreadKiller
        finished = GenerationFinished(
            stop_reason="end_turn", stop_sequence=None, prompt_tokens=len(request.prompt_tokens), completion_tokens=1
        )
        return [(key, [GenerationStarted(len(request.prompt_tokens)), TextDelta("Hi"), finished], True)]

    def close(self) -> None:
        pass


class _FragileModel:
    """A model (the layer under the engine) whose scheduler dies on its second request."""

    def __init__(self) -> None:
        fake = FakeBackend()
        self.info, self.tokenizer, self.chat_template = fake.info, fake.tokenizer, fake.chat_template
        self._scheduler = _FragileScheduler()

    def room_for(self, request: GenerationRequest) -> int:
        return request.max_tokens

    def scheduler(self, **_settings: int) -> _FragileScheduler:
        return self._scheduler


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the test
def test_a_dead_generation_thread_fails_requests_and_shows_on_health() -> None:
    config = build_config(flags={"limits.request_timeout_seconds": 10})  # a hang would end as a 504
    engine = Engine(_FragileModel(), max_waiting=4)  # type: ignore[arg-type]
    app = create_app(MessagesService(ModelCatalog(engine), config.limits), config, engine=engine)
    try:
        with running(app, config) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            assert client.post("/v1/messages", json=BODY, headers=DEV).status_code == 200
            assert client.get("/health").json()["status"] == "healthy"
            # The request during which the thread dies ends with an error, not a hang.
            with client.stream("POST", "/v1/messages", json={**BODY, "stream": True}, headers=DEV) as dying:
                events = parse_sse(dying.iter_lines())
            assert events[-1][0] == "error"
            assert events[-1][1]["error"]["type"] == "api_error"
            assert "generation thread" in events[-1][1]["error"]["message"]
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "unhealthy"
            after = client.post("/v1/messages", json=BODY, headers=DEV)
            assert after.status_code == 500
            assert "generation thread is not running" in after.json()["error"]["message"]
    finally:
        engine.close()


def test_a_model_too_large_for_memory_is_one_clear_cli_error(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PENSIEVE_")},
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PENSIEVE_DEVICE_MEMORY_LIMIT_BYTES": str(1024 * 1024),
    }
    result = subprocess.run(
        [CLI, "start", "--port", "0"], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, result.stderr
    assert "memory budget" in error_lines[0] and "device.memory_limit_bytes" in error_lines[0], error_lines
    assert not list((tmp_path / "cache" / "pensieve").glob("*.pid"))  # the pid file went with it


@pytest.mark.parametrize(
    "failure",
    [MemoryError(), RuntimeError("[malloc_or_wait] Unable to allocate 4294967296 bytes.")],
    ids=["MemoryError", "mlx-allocation"],
)
def test_running_out_of_memory_while_loading_is_one_clear_cli_error(
    failure: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import pensieve.engine.pool

    def load_model(*_args: object, **_kwargs: object) -> None:
        raise failure

    # The layer below the CLI: the model pool loads the default model on its worker thread.
    monkeypatch.setattr(pensieve.engine.pool, "load_model", load_model)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["start", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.count("Error: out of memory while loading the model") == 1, result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("pensieve/*.pid"))

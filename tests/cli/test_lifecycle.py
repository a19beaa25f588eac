"""start → status → stop, as a user types them: real subprocesses, a real model, a free port."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pensieve.device import cpu_kernels

CLI = str(Path(sys.executable).with_name("pensieve-cli"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private HOME and cache dir, so the default pid file cannot collide with anyone's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PENSIEVE_")}
    return {
        **clean,
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
    }


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], check=False, env=env, capture_output=True, text=True, timeout=timeout)


class Server:
    """A ``pensieve-cli start`` subprocess whose stdout is read line by line."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log.open("w")  # stderr (the server log) goes to a file: an unread pipe could fill up
        self.process = subprocess.Popen(
            [CLI, "start", *args], env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"start exited before {text!r}: {self.output}")
            self.output.append(line)
            if text in line:
                return

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.log.close()


@pytest.fixture
def started(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Server, int]]:
    port = _free_port()
    server = Server(env, tmp_path / "server.log", "--port", str(port))
    try:
        server.wait_for("Press Ctrl+C to stop the server")
        yield server, port
    finally:
        server.close()


@pytest.mark.real_model
def test_start_status_stop(started: tuple[Server, int], env: dict[str, str], tmp_path: Path) -> None:
    server, port = started
    assert server.output[0] == "Starting Pensieve server..."
    assert any(line.startswith("Model: ") and "llama" in line for line in server.output)
    assert any(line.startswith("Device: cpu") for line in server.output)
    weights = next(line for line in server.output if line.startswith("Weights: "))
    kernels = cpu_kernels()
    if kernels is not None:  # the server built its own in its fresh cache: a real first start
        assert weights.startswith("Weights: hybrid float32")
        assert f"CPU kernels: {kernels.description}" in weights
    assert f"Server started successfully on 127.0.0.1:{port}" in server.output
    pid_file = tmp_path / "cache" / "pensieve" / f"pensieve-{port}.pid"
    assert pid_file.read_text().strip() == str(server.process.pid)

    status = _cli(env, "status", "--port", str(port))
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"healthy on 127.0.0.1:{port}" in status.stdout
    assert f"pid:     {server.process.pid}" in status.stdout
    assert "model:   " in status.stdout and "device:  cpu" in status.stdout

    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/messages",
        headers={"x-api-key": "test-api-key-12345"},
        json={"model": "claude-sonnet-4-5", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["output_tokens"] <= 2

    stop = _cli(env, "stop", "--port", str(port))
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "Server stopped." in stop.stdout
    assert server.process.wait(timeout=30) == 0
    assert not pid_file.exists()

    after = _cli(env, "status", "--port", str(port))
    assert after.returncode == 1
    assert "not running" in after.stdout


@pytest.mark.real_model
def test_ctrl_c_stops_cleanly(started: tuple[Server, int], tmp_path: Path) -> None:
    server, port = started
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=30) == 0
    server.wait_for("Server stopped.", timeout=10)
    assert not (tmp_path / "cache" / "pensieve" / f"pensieve-{port}.pid").exists()


def test_start_refuses_a_public_bind_without_keys(env: dict[str, str]) -> None:
    result = _cli(env, "start", "--host", "0.0.0.0", "--port", str(_free_port()))
    assert result.returncode == 1
    assert "server.api_keys" in result.stderr
    assert "Starting Pensieve server" not in result.stdout  # refused before loading the model


def test_api_key_flag_warns_about_visibility(env: dict[str, str]) -> None:
    result = _cli(env, "start", "--host", "0.0.0.0", "--port", "70000", "--api-key", "k1")
    assert "visible to other users" in result.stderr
    assert result.returncode == 1
    assert "server.port" in result.stderr


def test_stop_and_status_without_a_server(env: dict[str, str]) -> None:
    port = str(_free_port())
    stop = _cli(env, "stop", "--port", port)
    assert stop.returncode == 1
    assert "No Pensieve server is running" in stop.stdout
    status = _cli(env, "status", "--port", port)
    assert status.returncode == 1
    assert "not running" in status.stdout


def test_env_overrides_the_config_file(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\n')
    refused = _cli(env, "start", "--config", str(config), "--port", str(_free_port()))
    assert refused.returncode == 1 and "server.api_keys" in refused.stderr
    allowed_by_env = _cli(
        {**env, "PENSIEVE_SERVER_HOST": "127.0.0.1", "PENSIEVE_SERVER_PORT": "notaport"},
        "start",
        "--config",
        str(config),
    )
    assert allowed_by_env.returncode == 1
    assert "server.port" in allowed_by_env.stderr and "server.api_keys" not in allowed_by_env.stderr


def test_stop_removes_a_stale_pid_file(env: dict[str, str], tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    port = str(_free_port())
    pid_file = tmp_path / "custom.pid"
    pid_file.write_text(finished.stdout)  # the pid of a process that has exited
    stop = _cli({**env, "PENSIEVE_SERVER_PID_FILE": str(pid_file)}, "stop", "--port", port)
    assert stop.returncode == 1
    assert "No Pensieve server is running" in stop.stdout
    assert not pid_file.exists()

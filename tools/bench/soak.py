"""Soak test: bounded mixed load on a real ``pensieve-cli start`` it launches on 127.0.0.1.

Clients send, at random: streaming and plain answers, streams they abandon after the first
token, malformed bodies, and token counts. Every response must either complete (a message, a
stream ending in ``message_stop``, a count) or end with a proper error (a JSON error body, or an
SSE ``error`` event); anything else (a cut stream, broken JSON, a reset, a timeout) is *lost*.
The load stops at ``--duration`` seconds or ``--max-requests`` requests, whichever comes first.

Prints JSON: requests sent/ok/failed/lost by kind, the server's RSS (start, after warm-up, peak,
end, from /proc/PID/status), and the error rate per window. Exits 1 if any response was lost or
the server did not stop cleanly.

    python tools/bench/soak.py --clients 8 --duration 1800            # the 30-minute soak
    python tools/bench/soak.py --clients 4 --duration 120 --warmup 30  # the test suite's version
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

KINDS = {"stream": 0.35, "plain": 0.25, "disconnect": 0.15, "malformed": 0.15, "count": 0.10}
PROMPTS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
]
MALFORMED: list[bytes] = [
    b'{"model": "claude-sonnet-4-5", ',
    b"\xff\xfe\x00not json",
    b'{"model": "claude-sonnet-4-5", "max_tokens": "ten", "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "claude-sonnet-4-5", "max_tokens": 8}',
    b'{"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}',
    b'{"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "robot", "content": "x"}]}',
    b'{"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "?"}]}]}',
    b'{"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"[]",
    b"",
]
CLI = str(Path(sys.executable).with_name("pensieve-cli"))


@dataclass
class Tally:
    """Outcomes by kind and by time window; shared by the client threads."""

    window: float
    started: float = field(default_factory=time.monotonic)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    by_window: dict[int, Counter[str]] = field(default_factory=dict)
    lost_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.by_kind.setdefault(kind, Counter()).update(["sent", outcome])
            slot = int((time.monotonic() - self.started) // self.window)
            self.by_window.setdefault(slot, Counter()).update(["sent", outcome])
            if outcome == "lost" and len(self.lost_samples) < 20:
                self.lost_samples.append(f"{kind}: {detail}")

    def sent(self) -> int:
        with self.lock:
            return sum(counts["sent"] for counts in self.by_kind.values())


class RssSampler:
    """Samples a process's resident memory once a second (VmRSS in /proc/PID/status)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        self.peak = self.read()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.peak = max(self.peak, self.read())
            except OSError:
                return  # the process is gone


def _body(max_tokens: int, rng: random.Random, *, stream: bool) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "temperature": rng.choice([0.0, 0.7, 1.0]),
        "stream": stream,
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
    }


def _is_error_body(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return bool(body.get("type") == "error" and body.get("error", {}).get("message"))


def _stream(client: httpx.Client, body: dict[str, Any], *, abandon: bool) -> tuple[str, str]:
    """Read an SSE answer: ok at message_stop (or, abandoning, at the first delta), failed at an error."""
    with client.stream("POST", "/v1/messages", json=body) as response:
        if response.status_code != 200:
            response.read()
            return ("failed", "") if _is_error_body(response) else ("lost", f"status {response.status_code}")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])  # a cut frame raises: lost
                if data.get("type") != name:
                    return "lost", f"event {name} carries {data.get('type')}"
                if name == "message_stop" or (abandon and name == "content_block_delta"):
                    return "ok", ""  # leaving the block closes the connection mid-stream
                if name == "error":
                    return "failed", data["error"]["type"]
        return ("ok", "") if abandon and name is not None else ("lost", f"stream ended after {name}")


def _request(client: httpx.Client, kind: str, max_tokens: int, rng: random.Random) -> tuple[str, str]:
    if kind in ("stream", "disconnect"):
        return _stream(client, _body(max_tokens, rng, stream=True), abandon=kind == "disconnect")
    if kind == "malformed":
        response = client.post("/v1/messages", content=rng.choice(MALFORMED))
        return _judge(response, answered=lambda _: False, expected=range(400, 500))
    path = "/v1/messages/count_tokens" if kind == "count" else "/v1/messages"
    response = client.post(path, json=_body(max_tokens, rng, stream=False))
    return _judge(response, answered=lambda body: "input_tokens" in body or body.get("type") == "message")


def _judge(
    response: httpx.Response, answered: Callable[[dict[str, Any]], bool], expected: range = range(0)
) -> tuple[str, str]:
    """ok: an answer (or an error whose status is ``expected``); failed: another proper error; lost: the rest."""
    try:
        body = response.json()
    except ValueError:
        return "lost", f"status {response.status_code}, not JSON: {response.text[:80]!r}"
    if response.status_code == 200 and answered(body):
        return "ok", ""
    if body.get("type") == "error" and body.get("error", {}).get("message"):
        return ("ok", "") if response.status_code in expected else ("failed", body["error"]["type"])
    return "lost", f"status {response.status_code}: {response.text[:80]!r}"


def _client(
    number: int,
    base_url: str,
    tally: Tally,
    deadline: float,
    max_requests: int,
    max_tokens: int,
    timeout: float,
) -> None:
    rng = random.Random(number)
    kinds, weights = list(KINDS), list(KINDS.values())
    headers = {"x-api-key": f"sk-ant-api-soak-{number}"}  # a key (and rate-limit bucket) per client
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as client:
        while time.monotonic() < deadline and tally.sent() < max_requests:
            kind = rng.choices(kinds, weights)[0]
            try:
                outcome, detail = _request(client, kind, max_tokens, rng)
            except (httpx.HTTPError, ValueError) as exc:
                outcome, detail = "lost", f"{type(exc).__name__}: {exc}"
            tally.add(kind, outcome, detail)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(port: int, log: IO[str], extra_env: dict[str, str]) -> subprocess.Popen[str]:
    """``pensieve-cli start`` on ``port``, its output in ``log``; returns once /health answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENSIEVE_")}
    env.update({"XDG_CACHE_HOME": str(Path(log.name).parent), **extra_env})
    command = [CLI, "start", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    server.wait()
    raise RuntimeError(f"the server did not start:\n{Path(log.name).read_text()[-2000:]}")


def soak(
    *,
    clients: int,
    duration: float,
    port: int,
    max_requests: int,
    max_tokens: int,
    warmup: float,
    window: float,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the soak and return its report (see the module docstring)."""
    with (
        tempfile.TemporaryDirectory(prefix="pensieve-soak-") as tmp,
        (Path(tmp) / "server.log").open("w") as log,
    ):
        port = port or _free_port()
        server = _start_server(port, log, extra_env or {})
        rss = RssSampler(server.pid)
        try:
            rss_start = rss.read()
            rss.start()
            tally = Tally(window=window)
            deadline = time.monotonic() + duration
            threads = [
                threading.Thread(
                    target=_client,
                    args=(n, f"http://127.0.0.1:{port}", tally, deadline, max_requests, max_tokens, timeout),
                )
                for n in range(clients)
            ]
            for thread in threads:
                thread.start()
            rss_warm = _after(min(warmup, duration), rss.read)
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - tally.started
            time.sleep(2)  # let the last cancelled generations wind down
            rss_end = rss.read()
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code
        finally:
            rss.stop()
            server.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            try:
                exit_code: int | None = server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                exit_code = None
        report = _report(tally, elapsed, clients, rss_start, rss_warm, rss.peak, rss_end, health, exit_code)
        report["shutdown_seconds"] = round(time.monotonic() - stopping, 1)
        if exit_code != 0:
            report["server_log_tail"] = Path(log.name).read_text()[-3000:]
        return report


def _after(seconds: float, read: Callable[[], int]) -> int:
    time.sleep(seconds)
    return read()


def _report(
    tally: Tally,
    elapsed: float,
    clients: int,
    rss_start: int,
    rss_warm: int,
    rss_peak: int,
    rss_end: int,
    health: int,
    exit_code: int | None,
) -> dict[str, Any]:
    kinds = {
        kind: {k: counts[k] for k in ("sent", "ok", "failed", "lost")}
        for kind, counts in tally.by_kind.items()
    }
    totals = {k: sum(counts[k] for counts in kinds.values()) for k in ("sent", "ok", "failed", "lost")}
    windows = [
        {
            "start_s": slot * tally.window,
            "sent": counts["sent"],
            "failed": counts["failed"],
            "lost": counts["lost"],
            "error_rate": round((counts["failed"] + counts["lost"]) / counts["sent"], 4),
        }
        for slot, counts in sorted(tally.by_window.items())
    ]
    mib = 1024 * 1024
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": totals,
        "requests_per_second": round(totals["sent"] / elapsed, 2) if elapsed else 0.0,
        "by_kind": kinds,
        "lost_responses": totals["lost"],
        "lost_samples": tally.lost_samples,
        "rss_mib": {
            "start": round(rss_start / mib, 1),
            "after_warmup": round(rss_warm / mib, 1),
            "peak": round(rss_peak / mib, 1),
            "end": round(rss_end / mib, 1),
            "end_vs_warmup": round(rss_end / rss_warm - 1, 4) if rss_warm else None,
        },
        "error_rate_by_window": windows,
        "health_after": health,
        "server_exit_code": exit_code,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each answer (default 8)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the warm RSS sample")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per error-rate window")
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout per request")
    args = parser.parse_args()
    report = soak(
        clients=args.clients,
        duration=args.duration,
        port=args.port,
        max_requests=args.max_requests,
        max_tokens=args.max_tokens,
        warmup=args.warmup,
        window=args.window,
        timeout=args.timeout,
    )
    print(json.dumps(report, indent=2))
    return 0 if report["lost_responses"] == 0 and report["server_exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Many clients at once, in one run: Pensieve's server against mlx-lm's own server on the same GGUF.

Each server runs alone in turn (a subprocess on 127.0.0.1), driven by the same workloads:

- ``concurrency``: N streaming clients (N = 1, 4, 8 by default), each sending requests one after
  another with distinct prompts; aggregate output tokens/s over the wall time, median and p95
  time to first token.
- ``shared_prefix``: conversations that share a ~2k-token system prompt, several turns each;
  the first request reads the system prompt cold, later ones should find it in the prefix cache.
  Reports cold TTFT, warm TTFT (median of the later requests) and their ratio.

``mlx_lm.server`` gets the GGUF converted by ``pensieve.engine.convert_to_mlx`` (quantized as in
the file, as mlx-lm users run it; ``--mlx-dense`` dequantizes it like Pensieve's CPU layout does).
Prints JSON with both servers' figures and the ratios.

``--rounds N`` repeats the concurrency sweep N times, interleaved (1, 4, 8, 1, 4, 8, ...), and
reports for each client count the round with the median aggregate tok/s, with every round's figure
alongside: on a shared VM one sweep's ratios swing by +-15% as the neighbours come and go.

    python tools/bench/serve.py [--model PATH] [--clients 1,4,8] [--requests 3] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

KEY = "test-api-key-12345"
TOPICS = [
    "the printing press", "tides", "bread", "volcanoes", "the violin", "bees", "glass", "maps",
    "clocks", "paper", "rivers", "salt", "bridges", "honey", "the moon", "coffee",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _system_prompt(target_tokens: int) -> str:
    """A long, non-repeating system prompt (~1.3 tokens per word for SmolLM2's tokenizer)."""
    rules = []
    for i in range(target_tokens // 14):
        topic = TOPICS[i % len(TOPICS)]
        rules.append(f"Rule {i + 1}: when asked about {topic}, mention fact number {i * 7 % 97}.")
    return "You are a reference librarian. " + " ".join(rules)


class Stream:
    """One streamed answer: time to first text, output tokens, and the text."""

    def __init__(self, ttft: float, tokens: int, text: str) -> None:
        self.ttft, self.tokens, self.text = ttft, tokens, text


async def _sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            yield json.loads(line[5:])


async def _pensieve_stream(
    client: httpx.AsyncClient, system: str | None, messages: list[dict[str, str]], max_tokens: int
) -> Stream:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5", "max_tokens": max_tokens, "stream": True,
        "temperature": 0.0, "messages": messages,
    }
    if system:
        body["system"] = system
    start = time.perf_counter()
    ttft, tokens, parts = 0.0, 0, []
    async with client.stream("POST", "/v1/messages", json=body, headers={"x-api-key": KEY}) as response:
        response.raise_for_status()
        async for event in _sse(response):
            if event["type"] == "content_block_delta" and not ttft:
                ttft = time.perf_counter() - start
            if event["type"] == "content_block_delta":
                parts.append(event["delta"].get("text", ""))
            if event["type"] == "message_delta":
                tokens = event["usage"]["output_tokens"]
    return Stream(ttft or time.perf_counter() - start, tokens, "".join(parts))


async def _mlx_lm_stream(
    client: httpx.AsyncClient, system: str | None, messages: list[dict[str, str]], max_tokens: int
) -> Stream:
    body: dict[str, Any] = {
        "model": "default_model", "max_tokens": max_tokens, "stream": True, "temperature": 0.0,
        "messages": ([{"role": "system", "content": system}] if system else []) + messages,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft, tokens, parts = 0.0, 0, []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for event in _sse(response):
            for choice in event.get("choices", []):
                text = (choice.get("delta") or {}).get("content") or ""
                if text and not ttft:
                    ttft = time.perf_counter() - start
                parts.append(text)
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return Stream(ttft or time.perf_counter() - start, tokens, "".join(parts))


StreamFn = Callable[[httpx.AsyncClient, str | None, list[dict[str, str]], int], Any]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def _concurrency(base_url: str, stream: StreamFn, clients: int, requests: int, new_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def one_client(index: int) -> list[Stream]:
            results = []
            for turn in range(requests):
                topic = TOPICS[(index * requests + turn) % len(TOPICS)]
                question = [{"role": "user", "content": f"Write a short essay about {topic}."}]
                results.append(await stream(client, None, question, new_tokens))
            return results

        start = time.perf_counter()
        streams = [s for batch in await asyncio.gather(*(one_client(i) for i in range(clients))) for s in batch]
        wall = time.perf_counter() - start
    ttfts = [s.ttft for s in streams]
    tokens = sum(s.tokens for s in streams)
    return {
        "clients": clients,
        "requests": len(streams),
        "output_tokens": tokens,
        "wall_s": round(wall, 2),
        "aggregate_tok_s": round(tokens / wall, 2),
        "ttft_median_s": round(statistics.median(ttfts), 3),
        "ttft_p95_s": round(_percentile(ttfts, 0.95), 3),
    }


async def _shared_prefix(
    base_url: str, stream: StreamFn, system: str, conversations: int, turns: int, new_tokens: int
) -> dict[str, Any]:
    cold: list[float] = []
    warm: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        for c in range(conversations):
            history: list[dict[str, str]] = []
            for t in range(turns):
                topic = TOPICS[(c * turns + t) % len(TOPICS)]
                history.append({"role": "user", "content": f"What do the rules say about {topic}?"})
                result = await stream(client, system, history, new_tokens)
                (cold if c == 0 and t == 0 else warm).append(result.ttft)
                history.append({"role": "assistant", "content": result.text or "I do not know."})
    return {
        "conversations": conversations,
        "turns": turns,
        "cold_ttft_s": round(cold[0], 3),
        "warm_ttft_median_s": round(statistics.median(warm), 3),
        "warm_over_cold": round(statistics.median(warm) / cold[0], 3),
    }


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    try:
        _poll_ready(url, process, timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise


def _poll_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready within {timeout:g} s")


def _start_pensieve(model: Path, port: int, home: Path) -> subprocess.Popen[bytes]:
    cli = str(Path(sys.executable).with_name("pensieve-cli"))
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")}
    env["PENSIEVE_LIMITS_RATE_LIMIT_PER_MINUTE"] = "0"
    process = subprocess.Popen(
        [cli, "start", "--model", str(model), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait_ready(f"http://127.0.0.1:{port}/health", process)
    return process


def _start_mlx_lm(model_dir: Path, port: int, decode_concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir), "--port", str(port),
         "--temp", "0", "--decode-concurrency", str(decode_concurrency)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait_ready(f"http://127.0.0.1:{port}/v1/models", process)
    return process


def _measure(name: str, base_url: str, args: argparse.Namespace, system: str) -> dict[str, Any]:
    stream: StreamFn = _pensieve_stream if name == "pensieve" else _mlx_lm_stream
    asyncio.run(stream_warmup(base_url, stream))
    rounds: dict[int, list[dict[str, Any]]] = {clients: [] for clients in args.clients}
    for round_ in range(args.rounds):
        for clients in args.clients:
            print(f"[{name}] {clients} client(s), round {round_ + 1}/{args.rounds}...", file=sys.stderr)
            rounds[clients].append(asyncio.run(_concurrency(base_url, stream, clients, args.requests, args.new_tokens)))
    figures: dict[str, Any] = {"concurrency": {str(clients): _median_round(runs) for clients, runs in rounds.items()}}
    if args.conversations > 0:  # --conversations 0 measures concurrency only
        print(f"[{name}] shared prefix...", file=sys.stderr)
        figures["shared_prefix"] = asyncio.run(
            _shared_prefix(base_url, stream, system, args.conversations, args.turns, args.prefix_new_tokens)
        )
    return figures


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median aggregate tok/s, and every run's aggregate tok/s."""
    ordered = sorted(runs, key=lambda run: run["aggregate_tok_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds_tok_s": [run["aggregate_tok_s"] for run in runs]}


async def stream_warmup(base_url: str, stream: StreamFn) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await stream(client, None, [{"role": "user", "content": "Hi"}], 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--clients", type=lambda s: [int(n) for n in s.split(",")], default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    parser.add_argument("--rounds", type=int, default=1, help="concurrency sweeps, interleaved; the median is kept")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--system-tokens", type=int, default=2000)
    parser.add_argument("--conversations", type=int, default=2)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--prefix-new-tokens", type=int, default=16)
    parser.add_argument("--only", choices=["pensieve", "mlx_lm"], default=None)
    parser.add_argument("--mlx-dense", action="store_true", help="dequantize the weights for mlx_lm.server")
    args = parser.parse_args()

    from pensieve.engine import convert_to_mlx
    from pensieve.formats import default_model_path

    model = Path(args.model or default_model_path())
    system = _system_prompt(args.system_tokens)
    results: dict[str, Any] = {"model": model.name, "new_tokens": args.new_tokens}
    with tempfile.TemporaryDirectory(prefix="pensieve-bench-") as scratch:
        work = Path(scratch)
        for name in ("pensieve", "mlx_lm"):
            if args.only not in (None, name):
                continue
            port = _free_port()
            if name == "pensieve":
                process = _start_pensieve(model, port, work)
            else:
                converted = convert_to_mlx(model, work / "mlx-model", dequantize=args.mlx_dense)
                process = _start_mlx_lm(converted, port, max(args.clients))
            try:
                results[name] = _measure(name, f"http://127.0.0.1:{port}", args, system)
            finally:
                process.terminate()
                process.wait(timeout=60)
    results["summary"] = _summary(results, args.clients)
    print(json.dumps(results, indent=2))


def _summary(results: dict[str, Any], clients: list[int]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    most, fewest = str(max(clients)), str(min(clients))
    ours = results.get("pensieve")
    theirs = results.get("mlx_lm")
    if ours:
        agg = {n: ours["concurrency"][n]["aggregate_tok_s"] for n in ours["concurrency"]}
        summary[f"pensieve_{most}_clients_over_{fewest}"] = round(agg[most] / agg[fewest], 2)
        if "shared_prefix" in ours:
            summary["pensieve_warm_over_cold_ttft"] = ours["shared_prefix"]["warm_over_cold"]
    if theirs and "shared_prefix" in theirs:
        summary["mlx_lm_warm_over_cold_ttft"] = theirs["shared_prefix"]["warm_over_cold"]
    if ours and theirs:
        for n in ours["concurrency"]:
            summary[f"aggregate_tok_s_ratio_at_{n}"] = round(
                ours["concurrency"][n]["aggregate_tok_s"] / theirs["concurrency"][n]["aggregate_tok_s"], 2
            )
    return summary


if __name__ == "__main__":
    main()

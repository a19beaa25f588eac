"""Single-stream speed on one GGUF, in one run: Pensieve's engine, raw mlx-lm, and llama.cpp.

Contenders, each in its own worker process (so each gets its own BLAS), timed in interleaved
rounds so that drift in machine load hits all alike:

- ``pensieve``: ``LocalModel.generate`` on the layout the device layer picks (on a Linux x86-64
  CPU: hybrid, decode on Pensieve's AVX2 kernel over the 4-bit weights, prompts on dense float32
  weights on oneMKL), with our detokenizer, stop matching and events.
- ``mlx_lm``: mlx-lm's ``stream_generate`` on the quantized module, as stock mlx-lm runs it
  (the file's dtypes, mlx's own reference BLAS).
- ``llama_cpp``: llama-cpp-python, when an interpreter with it is found (``--llama-python``, or
  this one). It is a bench-only extra that compiles llama.cpp on install (~20 CPU-minutes here):
  ``python -m venv /tmp/llama && /tmp/llama/bin/pip install llama-cpp-python``.

Prints JSON: median prefill and decode tokens/s per contender, ratios, whether the greedy tokens
agree, Pensieve's peak MLX memory against its budget, and decode as a fraction of the
memory-bandwidth bound (weight bytes read per token against a measured copy bandwidth).

    hatch run bench-engine [--model PATH] [--prompt-tokens 256] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

PROMPT_TEXT = "The history of the printing press "  # plain text to continue: no early end-of-turn


# --- workers (each runs in its own process; imports stay inside so llama.cpp's needs no Pensieve) ---


def _timed(tokens: Iterator[int], prompt_tokens: int) -> dict[str, Any]:
    """Prefill is timed to the first token; decode over the tokens after it."""
    start = time.perf_counter()
    first = 0.0
    produced: list[int] = []
    for token in tokens:
        if not produced:
            first = time.perf_counter() - start
        produced.append(token)
    total = time.perf_counter() - start
    return {
        "prefill_tok_s": prompt_tokens / first,
        "decode_tok_s": (len(produced) - 1) / (total - first),
        "tokens": produced,
    }


def _pensieve_worker(model_path: str | None, new_tokens: int) -> tuple[dict[str, Any], Any]:
    from pensieve.core import GenerationFinished, GenerationRequest, SamplingParams, TextDelta
    from pensieve.engine import load_model

    model = load_model(model_path)
    import mlx.core as mx  # only after pensieve.engine, which must load the BLAS before mlx

    greedy = SamplingParams(temperature=0.0)

    def run(prompt: list[int]) -> dict[str, Any]:
        request = GenerationRequest(prompt_tokens=tuple(prompt), max_tokens=new_tokens, sampling=greedy)
        start = time.perf_counter()
        first = 0.0
        parts: list[str] = []
        completion_tokens = 0
        for event in model.generate(request):
            if isinstance(event, TextDelta):
                first = first or time.perf_counter() - start
                parts.append(event.text)
            elif isinstance(event, GenerationFinished):
                completion_tokens = event.completion_tokens
        total = time.perf_counter() - start
        return {
            "prefill_tok_s": len(prompt) / first,
            "decode_tok_s": (completion_tokens - 1) / (total - first),
            "text": "".join(parts),
            "peak_memory_bytes": mx.get_peak_memory(),
        }

    device = model.device
    info = {
        "blas": device.blas,
        "weight_layout": device.weight_layout,
        "compute_dtype": device.compute_dtype,
        "memory_budget_bytes": device.memory_budget_bytes,
    }
    return info, run


def _mlx_lm_worker(model_path: str | None, new_tokens: int) -> tuple[dict[str, Any], Any]:
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from transformers import PreTrainedTokenizerFast

    from pensieve.device import load_blas
    from pensieve.engine import build_model
    from pensieve.formats import default_model_path, load_weights, open_gguf

    mx.set_default_device(mx.cpu)
    gguf = open_gguf(model_path or default_model_path())
    module = build_model(gguf, load_weights(gguf))  # quantized, the file's dtypes: mlx-lm's own setup
    wrapper = TokenizerWrapper(PreTrainedTokenizerFast(tokenizer_object=gguf.tokenizer().backend))

    def run(prompt: list[int]) -> dict[str, Any]:
        steps = stream_generate(module, wrapper, mx.array(prompt), max_tokens=new_tokens)
        return _timed((response.token for response in steps), len(prompt))

    return {"blas": load_blas().name, "weight_layout": "quantized", "compute_dtype": "float32"}, run


def _llama_cpp_worker(model_path: str, new_tokens: int) -> tuple[dict[str, Any], Any]:
    from llama_cpp import Llama, __version__

    threads = int(os.environ.get("BENCH_LLAMA_THREADS") or os.cpu_count() or 1)
    llm = Llama(model_path, n_ctx=4096, n_batch=512, n_threads=threads, verbose=False)

    def run(prompt: list[int]) -> dict[str, Any]:
        llm.reset()  # no prompt-cache reuse between rounds

        def tokens() -> Iterator[int]:
            for count, token in enumerate(llm.generate(prompt, top_k=1, temp=0.0, reset=True), start=1):
                yield token
                if count == new_tokens:
                    return

        return _timed(tokens(), len(prompt))

    return {"llama_cpp_python": __version__, "threads": threads}, run


WORKERS = {"pensieve": _pensieve_worker, "mlx_lm": _mlx_lm_worker, "llama_cpp": _llama_cpp_worker}


def _serve_worker(kind: str, model_path: str | None, new_tokens: int) -> None:
    """Load once, answer ``ready``, then run one timed generation per prompt read from stdin."""
    info, run = WORKERS[kind](model_path, new_tokens)
    run(json.loads(sys.stdin.readline()))  # warm-up
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


# --- coordinator ---------------------------------------------------------------------------------


class _Worker:
    def __init__(self, kind: str, python: str, model_path: str, new_tokens: int, env: dict[str, str]) -> None:
        command = [python, __file__, "--worker", kind, "--model", model_path, "--new-tokens", str(new_tokens)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
        )

    def request(self, prompt: list[int]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(prompt) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker {self.process.args} died")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def _has_llama_cpp(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import llama_cpp"], check=False, capture_output=True)
    return probe.returncode == 0


def _copy_bandwidth() -> float:
    """Bytes moved per second (read + write) by a large numpy copy, best of five."""
    import numpy as np

    source = np.ones(64 * 1024 * 1024, dtype=np.float32)  # 256 MiB, far beyond the caches
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def _weight_bytes_per_token(gguf: Any, dense: bool) -> int:
    """Weight bytes a decode step reads: every matrix once; an untied embedding is only looked up.

    Quantized and hybrid layouts read the file's bytes (the hybrid's dense copy serves prompts)."""
    import math

    untied = any(t.name == "output.weight" for t in gguf.tensors)
    total = 0
    for tensor in gguf.tensors:
        if untied and tensor.name == "token_embd.weight":
            continue
        total += 4 * math.prod(tensor.shape) if dense else tensor.n_bytes
    return total


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from pensieve.formats import default_model_path, open_gguf

    model_path = str(args.model or default_model_path())
    gguf = open_gguf(model_path)
    prompt = gguf.tokenizer().encode(PROMPT_TEXT * args.prompt_tokens)[: args.prompt_tokens]
    llama_python = args.llama_python or sys.executable
    kinds = {
        "pensieve": (sys.executable, {}),
        "mlx_lm": (sys.executable, {"PENSIEVE_BLAS": "reference"}),
    }
    if _has_llama_cpp(llama_python):
        kinds["llama_cpp"] = (llama_python, {"BENCH_LLAMA_THREADS": str(args.llama_threads or "")})
    workers = {
        kind: _Worker(kind, python, model_path, args.new_tokens, env) for kind, (python, env) in kinds.items()
    }
    try:
        for worker in workers.values():
            assert worker.process.stdin is not None
            worker.process.stdin.write(json.dumps(prompt[:16]) + "\n")  # warm-up request
            worker.process.stdin.flush()
        setup = {}
        for kind, worker in workers.items():
            assert worker.process.stdout is not None
            setup[kind] = json.loads(worker.process.stdout.readline())
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in workers}
        for _ in range(args.repeats):
            for kind, worker in workers.items():
                runs[kind].append(worker.request(prompt))
    finally:
        for worker in workers.values():
            worker.close()

    summary: dict[str, Any] = {}
    for kind, results in runs.items():
        summary[kind] = {
            **setup[kind],
            "prefill_tok_s": round(statistics.median(r["prefill_tok_s"] for r in results), 1),
            "decode_tok_s": round(statistics.median(r["decode_tok_s"] for r in results), 1),
        }
    pensieve = summary["pensieve"]
    pensieve["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in runs["pensieve"])
    for other in ("mlx_lm", "llama_cpp"):
        if other in summary:
            summary[f"pensieve_vs_{other}"] = {
                key: round(pensieve[key] / summary[other][key], 2)
                for key in ("prefill_tok_s", "decode_tok_s")
            }
    # Greedy answers, compared as text (Pensieve streams text, the others token ids).
    tokenizer = gguf.tokenizer()
    answers = {
        kind: results[0].get("text") or tokenizer.decode(results[0]["tokens"])
        for kind, results in runs.items()
    }
    summary["greedy_text_equal"] = {
        f"pensieve_{other}": answers["pensieve"] == answers[other] for other in answers if other != "pensieve"
    }

    bandwidth = _copy_bandwidth()
    bound: dict[str, Any] = {"copy_bandwidth_gb_s": round(bandwidth / 1e9, 1)}
    for kind in summary.keys() & runs.keys():
        dense = summary[kind].get("weight_layout") == "dense"
        per_token = _weight_bytes_per_token(gguf, dense)
        # A copy moves each byte twice (read + write); a decode step mostly reads.
        ceiling = bandwidth / 2 / per_token
        bound[kind] = {
            "weight_bytes_per_token": per_token,
            "decode_bound_tok_s": round(ceiling, 1),
            "fraction_of_bound": round(summary[kind]["decode_tok_s"] / ceiling, 2),
        }
    summary["memory_bandwidth_bound"] = bound
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--llama-python", default=None, help="a Python with llama-cpp-python (default: this one)"
    )
    parser.add_argument(
        "--llama-threads",
        type=int,
        default=None,
        help="llama.cpp threads (default: all CPUs; on a busy machine 1 can be faster, its threads spin)",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _serve_worker(args.worker, args.model, args.new_tokens)
        return
    print(
        json.dumps(
            {
                "model": os.path.basename(str(args.model or "default (SmolLM2-135M-Instruct Q4_1)")),
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": args.new_tokens,
                "repeats": args.repeats,
                "cpu_count": os.cpu_count(),
                **bench(args),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

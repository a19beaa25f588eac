"""Engine speed next to raw mlx-lm, on the same weights in the same run.

Prints JSON: prefill and decode tokens/s of Pensieve's engine (``LocalModel.generate``: our
detokenizer, stop matching and events on top of mlx-lm) and of mlx-lm's own
``stream_generate`` driving the very same module, and their ratios (target >= 1.0).

    hatch run bench-engine [--model PATH] [--prompt-tokens 256] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator

import mlx.core as mx
from mlx_lm.generate import stream_generate
from mlx_lm.tokenizer_utils import TokenizerWrapper
from transformers import PreTrainedTokenizerFast

from pensieve.core import GenerationRequest, SamplingParams
from pensieve.engine import LocalModel, load_model


def _timed(events: Iterator[object]) -> tuple[float, float, list[object]]:
    """(seconds to the first item, seconds in all, the items) of an iterator."""
    start = time.perf_counter()
    first = None
    items = []
    for item in events:
        items.append(item)
        if first is None:
            first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start, items


def _rates(prompt_tokens: int, new_tokens: int, first: float, total: float) -> dict[str, float]:
    """Prefill is timed to the first token; decode over the tokens after it."""
    return {
        "prefill_tok_s": prompt_tokens / first,
        "decode_tok_s": (new_tokens - 1) / (total - first),
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def bench(model: LocalModel, prompt_tokens: int, new_tokens: int, repeats: int) -> dict[str, object]:
    # Plain text to continue (not a chat turn), so neither side meets an end-of-turn token early.
    prompt = tuple(model.tokenizer.encode("The history of the printing press " * prompt_tokens))[:prompt_tokens]
    greedy = SamplingParams(temperature=0.0)

    def ours() -> dict[str, float]:
        request = GenerationRequest(prompt_tokens=prompt, max_tokens=new_tokens, sampling=greedy)
        first, total, events = _timed(model.generate(request))
        return _rates(prompt_tokens, events[-1].completion_tokens, first, total)  # type: ignore[attr-defined]

    wrapper = TokenizerWrapper(PreTrainedTokenizerFast(tokenizer_object=model.tokenizer.backend))

    def raw() -> dict[str, float]:
        steps = stream_generate(model.module, wrapper, mx.array(prompt), max_tokens=new_tokens)
        first, total, responses = _timed(steps)
        return _rates(prompt_tokens, len(responses), first, total)

    results: dict[str, list[dict[str, float]]] = {"pensieve": [], "mlx_lm": []}
    runners: dict[str, Callable[[], dict[str, float]]] = {"pensieve": ours, "mlx_lm": raw}
    for name, run in runners.items():
        run()  # warm-up
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        for name, run in runners.items():
            results[name].append(run())
    summary = {name: _median(runs) for name, runs in results.items()}
    summary["ratio"] = {
        key: round(summary["pensieve"][key] / summary["mlx_lm"][key], 3) for key in summary["pensieve"]
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = load_model(args.model)
    figures = bench(model, args.prompt_tokens, args.new_tokens, args.repeats)
    info = model.info
    print(
        json.dumps(
            {
                "model": info.id,
                "quantization": info.quantization,
                "device": model.device.backend,
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": args.new_tokens,
                "repeats": args.repeats,
                **figures,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Grammar-constrained decoding speed next to unconstrained decoding, in one run.

Prints JSON: decode tokens/s of the same model on the same prompt with no constraint, with a
tool-call trigger armed that never fires (what every ``tool_choice: auto`` request pays until the
model starts a call), and under a JSON-schema grammar from the first token (what a forced or
started tool call pays); then their ratios to unconstrained (target >= 0.9).

    python tools/bench/constrained.py [--model PATH] [--new-tokens 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from pensieve.core import GenerationFinished, GenerationRequest, GrammarConstraint, SamplingParams
from pensieve.engine import LocalModel, load_model

# An array that cannot end within the bench's tokens, so every step is masked by the grammar.
SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["admin", "user", "guest"]},
        },
        "required": ["name", "age", "role"],
        "additionalProperties": False,
    },
    "minItems": 100,
}
GRAMMAR = "start: %json " + json.dumps({**SCHEMA, "x-guidance": {"whitespace_flexible": False}}) + "\n"


def _decode_rate(model: LocalModel, request: GenerationRequest) -> tuple[float, int]:
    """Tokens/s after the first token (prefill excluded), and how many tokens were generated."""
    first: float | None = None
    finished: GenerationFinished | None = None
    for event in model.generate(request):
        if first is None:
            first = time.perf_counter()
        if isinstance(event, GenerationFinished):
            finished = event
    end = time.perf_counter()
    assert finished is not None and first is not None
    return (finished.completion_tokens - 1) / max(end - first, 1e-9), finished.completion_tokens


def bench(model: LocalModel, new_tokens: int, repeats: int) -> dict[str, object]:
    prompt = model.chat_template.render(
        [{"role": "user", "content": "List people with a name, an age and a role, as JSON."}]
    )
    tokens = tuple(model.tokenizer.encode(prompt))
    sampling = SamplingParams(temperature=1.0, seed=0)

    def request(constraint: GrammarConstraint | None) -> GenerationRequest:
        return GenerationRequest(
            prompt_tokens=tokens, max_tokens=new_tokens, sampling=sampling, constraint=constraint
        )

    variants: dict[str, Callable[[], tuple[float, int]]] = {
        "unconstrained": lambda: _decode_rate(model, request(None)),
        "trigger_armed": lambda: _decode_rate(
            model, request(GrammarConstraint(grammar=GRAMMAR, trigger="<tool_call>"))
        ),
        "constrained": lambda: _decode_rate(model, request(GrammarConstraint(grammar=GRAMMAR))),
    }
    for run in variants.values():
        run()  # warm-up (also builds the llguidance tokenizer once)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    counts: dict[str, list[int]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved, so drift in machine load hits all alike
        for name, run in variants.items():
            rate, count = run()
            rates[name].append(rate)
            counts[name].append(count)
    decode = {name: round(statistics.median(values), 2) for name, values in rates.items()}
    return {
        "decode_tok_s": decode,
        "tokens_generated": {name: statistics.median(values) for name, values in counts.items()},
        "ratio_to_unconstrained": {
            name: round(decode[name] / decode["unconstrained"], 3)
            for name in ("trigger_armed", "constrained")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = load_model(args.model)
    figures = bench(model, args.new_tokens, args.repeats)
    info = model.info
    print(
        json.dumps(
            {
                "model": info.id,
                "quantization": info.quantization,
                "device": model.device.backend,
                "new_tokens": args.new_tokens,
                "repeats": args.repeats,
                **figures,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""200 forced tool calls on the real 135M model, sampled at temperature 1: every input validates.

The calls run in-process on the engine (no HTTP), each with the grammar the service builds for a
forced call and the prompt prefilled up to the call opener; the answer is read back with the
service's parser and checked with jsonschema. Schemas are short and bounded (maxLength, maxItems)
so that every call fits its token budget on this slow CPU.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jsonschema
import pytest

from pensieve.claude import ToolCallParser, tool_call_grammar
from pensieve.claude.tool_calls import GENERIC, ToolCallEnd, ToolCallStart
from pensieve.core import GenerationRequest, GrammarConstraint, SamplingParams
from pensieve.engine import LocalModel

pytestmark = pytest.mark.real_model

# The full 200-call run takes ~15 minutes on a 2-core CPU: PENSIEVE_CONSTRAINED_CALLS=200 pytest this file.
CALLS = int(os.environ.get("PENSIEVE_CONSTRAINED_CALLS", "20"))
NAME = {"type": "string", "maxLength": 8}
SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("get_weather", {"type": "object", "properties": {"city": NAME}, "required": ["city"]}),
    (
        "set_unit",
        {
            "type": "object",
            "properties": {
                "unit": {"enum": ["celsius", "fahrenheit", "kelvin"]},
                "precise": {"type": "boolean"},
            },
            "required": ["unit", "precise"],
            "additionalProperties": False,
        },
    ),
    (
        "add_tags",
        {
            "type": "object",
            "properties": {"tags": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 2}},
            "required": ["tags"],
        },
    ),
    (
        "move",
        {
            "type": "object",
            "properties": {
                "to": {
                    "type": "object",
                    "properties": {
                        "x": {"type": "integer", "minimum": 0, "maximum": 99},
                        "y": {"type": "integer"},
                    },
                    "required": ["x", "y"],
                    "additionalProperties": False,
                }
            },
            "required": ["to"],
            "additionalProperties": False,
        },
    ),
    (
        "rate",
        {
            "type": "object",
            "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5}, "note": NAME},
            "required": ["stars"],
            "additionalProperties": False,
        },
    ),
    (
        "schedule",
        {
            "type": "object",
            "properties": {
                "day": {"enum": ["mon", "tue", "wed"]},
                "slots": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}},
                        "required": ["hour"],
                        "additionalProperties": False,
                    },
                    "maxItems": 2,
                },
            },
            "required": ["day", "slots"],
            "additionalProperties": False,
        },
    ),
    (
        "lookup",
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z]{2}[0-9]{2}$"},
                "exact": {"type": "boolean"},
            },
            "required": ["id"],
            "additionalProperties": False,
        },
    ),
    (
        "convert",
        {
            "type": "object",
            "properties": {
                "amount": {"type": "number", "minimum": 0, "maximum": 1000},
                "to": {"enum": ["EUR", "USD"]},
            },
            "required": ["amount", "to"],
            "additionalProperties": False,
        },
    ),
]
MAX_TOKENS = 48


@pytest.mark.timeout(0 if CALLS > 20 else 900)  # the full run outlasts the suite's per-test timeout
def test_forced_calls_all_validate(default_model: LocalModel) -> None:
    started = time.monotonic()
    failures: list[str] = []
    for index in range(CALLS):
        name, schema = SCHEMAS[index % len(SCHEMAS)]
        grammar = tool_call_grammar(GENERIC, [(name, schema)], parallel=False)
        prompt = default_model.chat_template.render(
            [{"role": "user", "content": f"Call {name}."}], add_generation_prompt=True
        )
        request = GenerationRequest(
            prompt_tokens=tuple(default_model.tokenizer.encode(prompt + GENERIC.opener)),
            max_tokens=MAX_TOKENS,
            sampling=SamplingParams(temperature=1.0, seed=index),
            constraint=GrammarConstraint(grammar=grammar),
        )
        completion = default_model.complete(request)
        parser = ToolCallParser(GENERIC, [name], inside_call=True)
        parts = parser.feed(completion.text) + parser.finish()
        starts = [p for p in parts if isinstance(p, ToolCallStart)]
        ends = [p for p in parts if isinstance(p, ToolCallEnd)]
        if completion.finished.stop_reason != "end_turn" or len(starts) != 1 or not ends[0].complete:
            failures.append(f"call {index} ({name}): {completion.finished.stop_reason} {completion.text!r}")
            continue
        try:
            jsonschema.validate(ends[0].input, schema)
        except jsonschema.ValidationError as exc:
            failures.append(f"call {index} ({name}): {exc.message} in {completion.text!r}")
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)}/{CALLS} invalid after {elapsed:.0f}s:\n" + "\n".join(failures[:10])

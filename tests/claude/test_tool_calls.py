"""Tool calls in model text: format detection, the streaming parser, and the call grammars.

The grammars are checked with llguidance against the default model's real vocabulary (its GGUF
is opened for the tokenizer only; no weights are loaded).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve.claude import ToolCallParser, detect_tool_format, tool_call_grammar
from pensieve.claude.tool_calls import (
    GENERIC,
    HERMES,
    LLAMA3,
    MISTRAL,
    ToolCallEnd,
    ToolCallStart,
    ToolFormat,
    ToolInputDelta,
    ToolText,
)
from pensieve.core import GrammarConstraint, InvalidRequestError
from pensieve.engine.constraint import ConstraintCompiler
from pensieve.formats import GGUFFile, default_model_path, open_gguf

NAMES = ("get_weather", "search")
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
SEARCH = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def _chunks(text: str, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    i = 0
    while i < len(text):
        size = rng.randint(1, 6)
        yield text[i : i + size]
        i += size


def _blocks(fmt: ToolFormat, text: str, *, seed: int = 0, inside: bool = False) -> list[Any]:
    """The parts folded into blocks: ["text", t] or ["tool", name, joined_input_json, input, complete]."""
    parser = ToolCallParser(fmt, NAMES, inside_call=inside)
    parts = [part for chunk in _chunks(text, seed) for part in parser.feed(chunk)] + parser.finish()
    blocks: list[Any] = []
    for part in parts:
        if isinstance(part, ToolText):
            if blocks and blocks[-1][0] == "text":
                blocks[-1][1] += part.text
            else:
                blocks.append(["text", part.text])
        elif isinstance(part, ToolCallStart):
            blocks.append(["tool", part.name, ""])
        elif isinstance(part, ToolInputDelta):
            assert blocks[-1][0] == "tool", "input for a call that was never started"
            blocks[-1][2] += part.partial_json
        else:
            assert isinstance(part, ToolCallEnd)
            blocks[-1] += [part.input, part.complete]
    return blocks


CASES = [
    (
        HERMES,
        (
            'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "n": [1, {"a": "}"}]}}\n'
            '</tool_call>\n<tool_call>\n{"name": "search", "arguments": {"q": "x\\"y"}}\n</tool_call>\nDone.'
        ),
        [
            ["text", "Let me check."],
            [
                "tool",
                "get_weather",
                '{"city": "Paris", "n": [1, {"a": "}"}]}',
                {"city": "Paris", "n": [1, {"a": "}"}]},
                True,
            ],
            ["tool", "search", '{"q": "x\\"y"}', {"q": 'x"y'}, True],
            ["text", "Done."],
        ],
    ),
    (
        HERMES,
        "Hello <tool_call> not json </tool_call> bye",
        [["text", "Hello <tool_call> not json </tool_call> bye"]],
    ),
    (
        HERMES,
        'use <tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        [["text", 'use <tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>']],
    ),
    (HERMES, "ends with a partial opener <tool", [["text", "ends with a partial opener <tool"]]),
    (
        HERMES,
        'a <tool_call> oops <tool_call>{"name": "search", "arguments": {"q": "a"}}',
        [["text", "a <tool_call> oops"], ["tool", "search", '{"q": "a"}', {"q": "a"}, True]],
    ),
    (
        HERMES,
        '<tool_call>{"arguments": {"q": "z"}, "name": "search"}</tool_call>',
        [["tool", "search", '{"q": "z"}', {"q": "z"}, True]],
    ),
    (
        LLAMA3,
        ' {"name": "get_weather", "parameters": {"city": "Rome"}}',
        [["tool", "get_weather", '{"city": "Rome"}', {"city": "Rome"}, True]],
    ),
    (LLAMA3, "The set is {1, 2}.", [["text", "The set is {1, 2}."]]),
    (
        MISTRAL,
        (
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "a1b2c3d4e"}, '
            '{"name": "search", "arguments": {"q": "z"}}]'
        ),
        [
            ["tool", "get_weather", '{"city": "Oslo"}', {"city": "Oslo"}, True],
            ["tool", "search", '{"q": "z"}', {"q": "z"}, True],
        ],
    ),
]


@pytest.mark.parametrize(("fmt", "text", "expected"), CASES)
def test_parser_splits_text_and_calls_however_the_text_is_chunked(
    fmt: ToolFormat, text: str, expected: list[Any]
) -> None:
    for seed in range(12):
        assert _blocks(fmt, text, seed=seed) == expected


def test_a_forced_call_starts_inside_the_call() -> None:
    text = '\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
    assert _blocks(HERMES, text, inside=True) == [
        [
            "tool",
            "get_weather",
            '{"city": "Paris", "unit": "celsius"}',
            {"city": "Paris", "unit": "celsius"},
            True,
        ]
    ]
    llama = '"name": "search", "parameters": {"q": "a"}}'
    assert _blocks(LLAMA3, llama, inside=True) == [["tool", "search", '{"q": "a"}', {"q": "a"}, True]]


def test_a_call_cut_off_is_reported_incomplete_with_what_parses() -> None:
    cut = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'
    assert _blocks(HERMES, cut) == [["tool", "get_weather", '{"city": "Par', {"city": "Par"}, False]]
    before_input = '<tool_call>\n{"name": "search", "argu'
    assert _blocks(HERMES, before_input) == [["tool", "search", "", {}, False]]


def test_whitespace_between_calls_makes_no_text_block() -> None:
    text = '  \n<tool_call>{"name": "search", "arguments": {"q": "a"}}</tool_call>\n\n  '
    assert _blocks(HERMES, text) == [["tool", "search", '{"q": "a"}', {"q": "a"}, True]]


@settings(max_examples=60, deadline=None)
@given(
    before=st.text(st.characters(blacklist_characters="<"), max_size=20),
    city=st.text(max_size=12),
    seed=st.integers(0, 1000),
)
def test_any_call_roundtrips_through_the_parser(before: str, city: str, seed: int) -> None:
    arguments = {"city": city, "unit": "celsius"}
    text = f"{before}<tool_call>\n{json.dumps({'name': 'get_weather', 'arguments': arguments})}\n</tool_call>"
    blocks = _blocks(HERMES, text, seed=seed)
    tool = blocks[-1]
    assert tool[:2] == ["tool", "get_weather"]
    assert json.loads(tool[2]) == arguments == tool[3]
    assert tool[4] is True
    if before.strip():
        assert blocks[0] == ["text", before.strip()]


def test_formats_are_detected_from_the_template() -> None:
    assert detect_tool_format("{% for m in messages %}{{ m.content }}{% endfor %}") is GENERIC
    qwen = "{% if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools> <tool_call>{% endif %}"
    assert detect_tool_format(qwen) is HERMES
    assert detect_tool_format("{% if tools %}[AVAILABLE_TOOLS]{{ tools }}{% endif %}[TOOL_CALLS]") is MISTRAL
    llama = (
        '{% if tools %}{{ \'ipython\' }} respond as {"name": name, "parameters": …}<|python_tag|>{% endif %}'
    )
    assert detect_tool_format(llama) is LLAMA3
    # A template mentioning <tool_call> but taking no tools list gets the generic prompt.
    assert detect_tool_format("<tool_call>") is GENERIC


@pytest.fixture(scope="module")
def gguf() -> GGUFFile:
    return open_gguf(default_model_path())


@pytest.fixture(scope="module")
def compiler(gguf: GGUFFile) -> ConstraintCompiler:
    tokenizer = gguf.tokenizer()
    return ConstraintCompiler(
        gguf.metadata, tokenizer.encode, tokenizer.eos_token_ids, tokenizer.bos_token_id, gguf.spec.vocab_size
    )


def _accepts(gguf: GGUFFile, compiler: ConstraintCompiler, grammar: str, text: str) -> bool:
    """Whether the grammar takes ``text`` whole: every token allowed, and then the end of turn."""
    processor = compiler.processor(GrammarConstraint(grammar=grammar), prompt_length=0)
    tokens = gguf.tokenizer().encode(text)
    logits = processor(mx.array(tokens), mx.zeros((1, gguf.spec.vocab_size)))
    (eos,) = gguf.spec.eos_token_ids
    return processor.active and logits[0, eos].item() == 0.0


@pytest.mark.parametrize("fmt", [HERMES, GENERIC, LLAMA3, MISTRAL])
def test_grammars_accept_well_formed_calls_only(
    gguf: GGUFFile, compiler: ConstraintCompiler, fmt: ToolFormat
) -> None:
    tools = [("get_weather", WEATHER), ("search", SEARCH)]
    grammar = tool_call_grammar(fmt, tools, parallel=True)
    compiler.check(GrammarConstraint(grammar=grammar))
    good = {"name": "get_weather", fmt.arguments_key: {"city": "Paris", "unit": "celsius"}}
    bad_enum = {"name": "get_weather", fmt.arguments_key: {"city": "Paris", "unit": "kelvin"}}
    missing = {"name": "get_weather", fmt.arguments_key: {"city": "Paris"}}
    unknown = {"name": "delete_all", fmt.arguments_key: {}}

    def written(call: dict[str, Any]) -> str:
        body = json.dumps(call)
        if fmt.opener_in_json:
            return body[1:]
        if fmt.array:
            return f"[{body}]"
        return f"\n{body}\n{fmt.closer}"

    assert _accepts(gguf, compiler, grammar, written(good))
    for wrong in (bad_enum, missing, unknown):
        assert not _accepts(gguf, compiler, grammar, written(wrong))
    if fmt.parallel and not fmt.opener_in_json:
        second = {"name": "search", fmt.arguments_key: {"q": "x"}}
        both = (
            f"[{json.dumps(good)}, {json.dumps(second)}]"
            if fmt.array
            else (f"{written(good)}\n{fmt.opener}{written(second)}")
        )
        assert _accepts(gguf, compiler, grammar, both)
        single = tool_call_grammar(fmt, tools, parallel=False)
        assert not _accepts(gguf, compiler, single, both)


def test_generic_format_allows_one_call_per_answer(gguf: GGUFFile, compiler: ConstraintCompiler) -> None:
    grammar = tool_call_grammar(GENERIC, [("search", SEARCH)], parallel=True)
    one = '\n{"name": "search", "arguments": {"q": "a"}}\n</tool_call>'
    assert _accepts(gguf, compiler, grammar, one)
    assert not _accepts(
        gguf,
        compiler,
        grammar,
        one + '\n<tool_call>\n{"name": "search", "arguments": {"q": "b"}}\n</tool_call>',
    )


def test_schemas_the_grammar_cannot_express_are_refused(compiler: ConstraintCompiler) -> None:
    with pytest.raises(InvalidRequestError, match="cannot decode under this grammar"):
        compiler.check(GrammarConstraint(grammar='start: %json {"type": "object", "minProperties": "x"}'))
    with pytest.raises(InvalidRequestError, match="trigger is not a valid regular expression"):
        compiler.check(GrammarConstraint(grammar='start: "a"', trigger="("))


def test_unlisted_keys_are_left_out_unless_the_schema_allows_them(
    gguf: GGUFFile, compiler: ConstraintCompiler
) -> None:
    listed = {
        "type": "object",
        "properties": {"q": {"type": "string"}, "at": {"type": "object", "properties": {}}},
    }
    allowing = {**listed, "additionalProperties": True}

    def call(arguments: dict[str, Any]) -> str:
        return f"\n{json.dumps({'name': 'search', 'arguments': arguments})}\n</tool_call>"

    grammar = tool_call_grammar(HERMES, [("search", listed)], parallel=False)
    assert _accepts(gguf, compiler, grammar, call({"q": "a", "at": {}}))
    assert not _accepts(gguf, compiler, grammar, call({"q": "a", "extra": 1}))
    assert not _accepts(gguf, compiler, grammar, call({"at": {"x": 1}}))
    open_grammar = tool_call_grammar(HERMES, [("search", allowing)], parallel=False)
    assert _accepts(gguf, compiler, open_grammar, call({"q": "a", "extra": 1}))

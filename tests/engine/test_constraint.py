"""Grammar-constrained decoding: the logits processor on the real vocabulary, and on the real model."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from pensieve.core import GenerationRequest, GrammarConstraint, InvalidRequestError, SamplingParams
from pensieve.engine import LocalModel
from pensieve.engine.constraint import ConstraintCompiler, token_bytes
from pensieve.formats import GGUFFile, default_model_path, open_gguf

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
GRAMMAR = 'start: "{\\"city\\": " %json ' + json.dumps({**SCHEMA["properties"]["city"]}) + ' "}"\n'
CALL = "start: NL? %json " + json.dumps(SCHEMA) + ' NL? "</tool_call>"\nNL: "\\n"\n'


@pytest.fixture(scope="module")
def gguf() -> GGUFFile:
    return open_gguf(default_model_path())


@pytest.fixture(scope="module")
def compiler(gguf: GGUFFile) -> ConstraintCompiler:
    tokenizer = gguf.tokenizer()
    return ConstraintCompiler(
        gguf.metadata, tokenizer.encode, tokenizer.eos_token_ids, tokenizer.bos_token_id, gguf.spec.vocab_size
    )


def _allowed(processor, tokens: list[int], vocab: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    logits = processor(mx.array(tokens, dtype=mx.uint32), mx.zeros((1, vocab)))
    return np.isfinite(np.array(logits[0]))


def test_token_bytes_spell_every_token_as_the_tokenizer_decodes_it(gguf: GGUFFile) -> None:
    table = token_bytes(gguf.metadata)
    tokenizer = gguf.tokenizer()
    text = 'Héllo wörld — {"a": 1}\n\t<|im_end|> 東京 🙂'
    ids = tokenizer.encode(text)
    assert b"".join(table[i] for i in ids).decode("utf-8") == tokenizer.decode(ids) == text


def test_without_trigger_the_first_token_is_already_constrained(
    gguf: GGUFFile, compiler: ConstraintCompiler
) -> None:
    vocab = gguf.spec.vocab_size
    prompt = [1, 2, 3]
    processor = compiler.processor(GrammarConstraint(grammar=GRAMMAR), prompt_length=len(prompt))
    allowed = _allowed(processor, prompt, vocab)
    assert processor.active
    assert 0 < allowed.sum() < 10  # only spellings of the forced '{"city": '
    (eos,) = gguf.spec.eos_token_ids
    assert not allowed[eos]


def test_a_trigger_lets_text_run_free_until_it_appears(gguf: GGUFFile, compiler: ConstraintCompiler) -> None:
    tokenizer = gguf.tokenizer()
    vocab = gguf.spec.vocab_size
    processor = compiler.processor(GrammarConstraint(grammar=CALL, trigger="<tool_call>"), prompt_length=0)
    before = tokenizer.encode("Let me look that up. <tool_")
    assert _allowed(processor, before, vocab).all() and not processor.active
    # The trigger completes mid-token ('>\n' is one token here): the newline past it counts too.
    after = tokenizer.encode('call>\n{"city')
    allowed = _allowed(processor, before + after, vocab)
    assert processor.active
    assert allowed[tokenizer.encode('":')[0]] and not allowed[tokenizer.encode("Hello")[0]]


def test_text_past_the_trigger_that_breaks_the_grammar_leaves_decoding_free(
    gguf: GGUFFile, compiler: ConstraintCompiler
) -> None:
    tokenizer = gguf.tokenizer()
    processor = compiler.processor(GrammarConstraint(grammar=CALL, trigger="<tool_call>"), prompt_length=0)
    tokens = tokenizer.encode("<tool_call>Sure")
    assert _allowed(processor, tokens, gguf.spec.vocab_size).all()
    assert not processor.active


def test_an_anchored_trigger_only_fires_at_the_start(gguf: GGUFFile, compiler: ConstraintCompiler) -> None:
    tokenizer = gguf.tokenizer()
    late = compiler.processor(GrammarConstraint(grammar=GRAMMAR, trigger=r"^\s*\{"), prompt_length=0)
    _allowed(late, tokenizer.encode("The set {"), gguf.spec.vocab_size)
    assert not late.active
    after_brace = 'start: "\\"city\\": " %json {"type": "string"} "}"\n'
    early = compiler.processor(GrammarConstraint(grammar=after_brace, trigger=r"^\s*\{"), prompt_length=0)
    allowed = _allowed(early, tokenizer.encode(' {"'), gguf.spec.vocab_size)
    assert early.active
    assert allowed[tokenizer.encode("city")[0]] and not allowed[tokenizer.encode("name")[0]]


def test_bad_constraints_are_request_errors(compiler: ConstraintCompiler) -> None:
    with pytest.raises(InvalidRequestError, match="cannot decode under this grammar"):
        compiler.check(GrammarConstraint(grammar="start: undefined_rule"))


@pytest.mark.real_model
def test_the_model_writes_schema_valid_json_under_the_grammar(default_model: LocalModel) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    prompt = (
        default_model.chat_template.render([{"role": "user", "content": "Weather in Paris?"}]) + "<tool_call>"
    )
    request = GenerationRequest(
        prompt_tokens=tuple(default_model.tokenizer.encode(prompt)),
        max_tokens=32,
        sampling=SamplingParams(temperature=1.0, seed=7),
        constraint=GrammarConstraint(grammar=CALL),
    )
    completion = default_model.complete(request)
    assert completion.finished.stop_reason == "end_turn"
    body = completion.text.strip().removesuffix("</tool_call>")
    jsonschema.validate(json.loads(body), SCHEMA)
    with pytest.raises(InvalidRequestError):
        default_model.room_for(
            GenerationRequest(prompt_tokens=(1,), max_tokens=1, constraint=GrammarConstraint(grammar="x"))
        )

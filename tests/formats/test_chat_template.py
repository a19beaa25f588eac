"""Chat templates from GGUF files, rendered in a Jinja sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from pensieve.core.errors import InvalidRequestError, ModelFileError
from pensieve.core.protocols import ChatTemplate
from pensieve.formats import CHATML_TEMPLATE, GGUFFile, JinjaChatTemplate, open_gguf
from tests.support.gguf_factory import write_llama_gguf

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_default_model_renders_chatml_with_its_system_prompt(smollm2: GGUFFile) -> None:
    template = smollm2.chat_template()
    assert isinstance(template, ChatTemplate) and not template.is_fallback
    assert template.render(QUESTION) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_default_model_keeps_a_given_system_prompt(smollm2: GGUFFile) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        *QUESTION,
        {"role": "assistant", "content": "Paris."},
    ]
    assert smollm2.chat_template().render(messages, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
    )


def test_file_without_template_falls_back_to_chatml(tmp_path: Path) -> None:
    template = open_gguf(write_llama_gguf(tmp_path / "m.gguf", chat_template=None)).chat_template()
    assert template.is_fallback and template.source == CHATML_TEMPLATE
    assert (
        template.render(QUESTION)
        == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_sees_tokens_tools_and_helpers(tmp_path: Path) -> None:
    source = (
        "{{ bos_token }}|{{ eos_token }}|{{ tools | map(attribute='name') | join(',') }}|"
        "{{ tools[0] | tojson }}|{{ strftime_now('%Y') | length }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}"
    )
    template = open_gguf(write_llama_gguf(tmp_path / "m.gguf", chat_template=source)).chat_template()
    tools = [{"name": "météo", "description": "<weather>"}, {"name": "clock"}]
    rendered = template.render(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], tools=tools
    )
    assert rendered == '<|im_start|>|<|im_end|>|météo,clock|{"name": "météo", "description": "<weather>"}|4|a'


def test_tools_are_none_when_not_given() -> None:
    assert JinjaChatTemplate("{{ tools is none }}").render(QUESTION) == "True"


def test_trim_and_lstrip_blocks_as_hf_does() -> None:
    source = "{% for m in messages %}\n    {% if true %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}"
    assert JinjaChatTemplate(source).render([{"content": "x"}, {"content": "y"}]) == "[x]\n[y]\n"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ messages.append({'role': 'user'}) }}",
        "{{ raise_exception.__globals__['os'] }}",
    ],
)
def test_sandbox_refuses_python_internals(source: str) -> None:
    with pytest.raises(ModelFileError, match="unsafe"):
        JinjaChatTemplate(source).render(QUESTION)


def test_raise_exception_rejects_the_request() -> None:
    source = (
        "{% if messages[0]['role'] != 'system' %}"
        "{{ raise_exception('a system message is required') }}"
        "{% endif %}"
    )
    with pytest.raises(InvalidRequestError, match="a system message is required"):
        JinjaChatTemplate(source).render(QUESTION)


def test_messages_the_template_cannot_handle_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequestError, match="cannot render"):
        JinjaChatTemplate("{{ messages[0]['content'] + 1 }}").render(QUESTION)


def test_broken_template_is_a_file_error(tmp_path: Path) -> None:
    gguf_file = open_gguf(
        write_llama_gguf(tmp_path / "m.gguf", chat_template="{% for m in messages %}{{ m }")
    )
    with pytest.raises(ModelFileError, match="not valid Jinja"):
        gguf_file.chat_template()


def test_a_gemma_vocabulary_without_a_template_gets_gemma_turns() -> None:
    from pensieve.formats.chat_template import chat_template_from_metadata

    tokens = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "a"]
    metadata = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1}
    template = chat_template_from_metadata(metadata, "gemma.gguf")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    assert template.is_fallback
    assert template.render(messages) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )

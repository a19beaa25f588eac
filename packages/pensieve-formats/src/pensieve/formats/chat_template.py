"""The model's chat template (``tokenizer.chat_template``), rendered in a Jinja sandbox.

GGUF files are untrusted, so the template runs in jinja2's ``ImmutableSandboxedEnvironment``:
it cannot reach Python internals or mutate its inputs, and ``*``/``**`` cannot build values
large enough to exhaust memory (the sandbox already caps ``range``). The environment otherwise
matches what Hugging Face templates are written for: ``trim_blocks``/``lstrip_blocks``, loop
controls, a ``tojson`` that keeps non-ASCII text, and ``raise_exception``/``strftime_now`` helpers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pensieve.core.errors import InvalidRequestError, ModelFileError

__all__ = ["CHATML_TEMPLATE", "JinjaChatTemplate", "chat_template_from_metadata"]

# llama.cpp's fallback when a file carries no template, too.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class _TemplateRaised(Exception):
    """The template called ``raise_exception``: it refuses these messages."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; prompts need the plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


# Bounds on what ``*`` and ``**`` may build: far beyond any prompt, far below the memory of a machine.
# Gemma's turn format, for Gemma files without a template (base models): system text opens the
# first user turn, as Gemma has no system role.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set system = namespace(text='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set system.text = system.text + message['content'] + '\n\n' %}"
    "{% else %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% if message['role'] == 'user' %}{{ system.text }}{% set system.text = '' %}{% endif %}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def fallback_template(tokens: Sequence[str]) -> str:
    """The template for a file without one: Gemma's turns when its vocabulary has them, else ChatML."""
    vocabulary = set(tokens)
    if {"<start_of_turn>", "<end_of_turn>"} <= vocabulary:
        return GEMMA_TEMPLATE
    return CHATML_TEMPLATE


_MAX_REPEATED_ITEMS = 1 << 24
_MAX_POWER_BITS = 1 << 16


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for items, count in ((left, right), (right, left)):
                sized = isinstance(items, (str, list, tuple)) and isinstance(count, int)
                if sized and len(items) * count > _MAX_REPEATED_ITEMS:
                    raise jinja2.exceptions.SecurityError("repetition result too large")
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and max(left.bit_length(), 1) * right > _MAX_POWER_BITS
        ):
            raise jinja2.exceptions.SecurityError("power result too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class JinjaChatTemplate:
    """A chat template from a model file (implements ``pensieve.core.protocols.ChatTemplate``)."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        is_fallback: bool = False,
        origin: str = "chat template",
    ) -> None:
        self._source = source
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._is_fallback = is_fallback
        self._origin = origin
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ModelFileError(
                f"{origin}: the chat template is not valid Jinja (line {exc.lineno}): {exc.message}"
            ) from exc

    @property
    def source(self) -> str:
        return self._source

    @property
    def is_fallback(self) -> bool:
        """True when the file had no template and ChatML stands in."""
        return self._is_fallback

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text for ``messages`` (and ``tools``), ending with the assistant's turn opener."""
        try:
            return self._template.render(
                messages=[dict(message) for message in messages],
                tools=[dict(tool) for tool in tools] if tools is not None else None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
            )
        except _TemplateRaised as exc:
            raise InvalidRequestError(f"the model's chat template rejected the conversation: {exc}") from exc
        except (jinja2.exceptions.SecurityError, OverflowError) as exc:  # OverflowError: a range too big
            raise ModelFileError(
                f"{self._origin}: the chat template tried an unsafe operation: {exc}"
            ) from exc
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise InvalidRequestError(
                f"the model's chat template cannot render this conversation: {exc}"
            ) from exc


def chat_template_from_metadata(metadata: Mapping[str, Any], source: str) -> JinjaChatTemplate:
    """The template stored in ``tokenizer.chat_template``, or ``fallback_template`` (``is_fallback``) without one."""
    tokens = metadata.get("tokenizer.ggml.tokens") or []

    def token_text(key: str) -> str:
        token_id = metadata.get(key)
        return tokens[token_id] if isinstance(token_id, int) and 0 <= token_id < len(tokens) else ""

    bos, eos = token_text("tokenizer.ggml.bos_token_id"), token_text("tokenizer.ggml.eos_token_id")
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        return JinjaChatTemplate(template, bos_token=bos, eos_token=eos, origin=source)
    return JinjaChatTemplate(
        fallback_template(tokens), bos_token=bos, eos_token=eos, is_fallback=True, origin=source
    )

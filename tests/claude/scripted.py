"""A scripted GenerationBackend with a real chat template, for the claude layer's agent features.

The "model" answers whatever ``respond(prompt_text)`` returns, one character per token, honouring
``max_tokens`` and stop sequences as the engine does; every request is recorded. Constraints are
recorded, not enforced (the engine's tests cover enforcement).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from pensieve.core import (
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    GenerationStarted,
    PromptTooLongError,
    TextDelta,
)
from pensieve.formats import CHATML_TEMPLATE, JinjaChatTemplate
from tests.server.fakes import CharTokenizer, fake_model_info

# A compact Qwen2.5-style template: tools in the system turn, <tool_call> calls, a tool role
# rendered as <tool_response>. QWEN3_LIKE adds <think> reasoning replayed from reasoning_content.
QWEN_LIKE = """{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
For each function call, return a json object within <tool_call></tool_call> XML tags.<|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{{ message.content }}{% for call in message.tool_calls or [] %}{{ '\n' }}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

QWEN3_LIKE = QWEN_LIKE.replace(
    "<|im_start|>assistant\n{{ message.content }}",
    "<|im_start|>assistant\n{% if message.reasoning_content %}<think>\n{{ message.reasoning_content }}\n"
    "</think>\n\n{% endif %}{{ message.content }}",
)


class ScriptedBackend:
    def __init__(
        self, respond: Callable[[str], str], template: str = CHATML_TEMPLATE, context: int = 8192
    ) -> None:
        self.info = fake_model_info("scripted", "Scripted", context)
        self.tokenizer = CharTokenizer()
        self.chat_template = JinjaChatTemplate(template)
        self.respond = respond
        self.requests: list[GenerationRequest] = []
        self.alive = True  # what a server's /health asks
        self.queue_depth = 0

    def prompt_text(self, index: int = -1) -> str:
        return self.tokenizer.decode(self.requests[index].prompt_tokens)

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if len(request.prompt_tokens) >= self.info.context_length:
            raise PromptTooLongError(len(request.prompt_tokens), self.info.context_length - 1)
        self.requests.append(request)
        return self._events(request)

    async def _events(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        script = self.respond(self.tokenizer.decode(request.prompt_tokens))
        text, reason, matched = script[: request.max_tokens], "max_tokens", None
        if len(script) < request.max_tokens:
            reason = "end_turn"
        hits = [(text.find(stop), stop) for stop in request.stop_sequences if stop in text]
        if hits:
            at, matched = min(hits)
            text, reason = text[:at], "stop_sequence"
        yield GenerationStarted(len(request.prompt_tokens))
        for i in range(0, len(text), 3):
            yield TextDelta(text[i : i + 3])
        used = len(text) + (len(matched) if matched else 0) + (1 if reason == "end_turn" else 0)
        yield GenerationFinished(
            stop_reason=reason,  # type: ignore[arg-type]
            stop_sequence=matched,
            prompt_tokens=len(request.prompt_tokens),
            completion_tokens=min(used, request.max_tokens),
        )

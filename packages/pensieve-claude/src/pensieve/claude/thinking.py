"""Extended thinking on reasoning models (templates that write ``<think>…</think>``).

The answer is generated in two steps. The prompt is prefilled up to an open ``<think>`` and the
model thinks until it writes ``</think>`` (a stop sequence) or the budget runs out; then
``</think>`` is appended — closing the section ourselves when the budget was hit — and the
answer is generated after it. With thinking off, an empty ``<think></think>`` is prefilled, as
Qwen3's own template does, so the model answers at once.

Signatures are HMAC-SHA256 of the thinking text under a key held by the server (random per
process unless one is given), base64-encoded. Thinking sent back in a conversation is replayed to
the model only when its signature verifies: text edited by a client, or signed by another server
(or before a restart), is dropped rather than trusted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = [
    "THINK_CLOSE",
    "THINK_OPEN",
    "ThinkingSigner",
    "is_reasoning_template",
    "thinking_prefill",
]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class ThinkingSigner:
    """Signs thinking text so that this server can later recognise it as its own, unaltered."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def sign(self, thinking: str) -> str:
        digest = hmac.new(self._key, thinking.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    def verify(self, thinking: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(thinking), signature)


def is_reasoning_template(template_source: str) -> bool:
    """Whether the template belongs to a model that thinks in ``<think>`` sections."""
    return THINK_OPEN in template_source


def thinking_prefill(prompt_text: str, *, enabled: bool) -> str:
    """What to append to a reasoning model's prompt: an open think section, or an empty closed one.

    Some templates (DeepSeek-R1 distills) already end the generation prompt inside ``<think>``.
    """
    inside = prompt_text.rstrip().endswith(THINK_OPEN)
    if enabled:
        return "" if inside else f"{THINK_OPEN}\n"
    return f"\n{THINK_CLOSE}\n\n" if inside else f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"

"""Pensieve claude: Anthropic Messages semantics on a local model.

Model names (any ``claude-*`` or a configured alias) resolve to a loaded model; a conversation is
rendered with the model's chat template; engine events become content blocks, stop reasons and
usage, or the SSE events of a stream.
"""

from pensieve.claude.catalog import ModelCatalog
from pensieve.claude.prompt import Prompt, render_prompt
from pensieve.claude.service import MessagesService

__all__ = ["MessagesService", "ModelCatalog", "Prompt", "render_prompt"]

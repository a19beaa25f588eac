"""Pensieve claude: Anthropic Messages semantics on a local model.

Model names (a model's, a configured alias or any ``claude-*``) resolve to a model, loaded on demand; a conversation is
rendered with the model's chat template, tools included; engine events become content blocks
(text, tool_use, thinking), stop reasons and usage, or the SSE events of a stream. Tool calls the
model writes are parsed into tool_use blocks, and their input is grammar-constrained to the tool's
input_schema while it is decoded.
"""

from pensieve.claude.catalog import ModelCatalog, ModelSource
from pensieve.claude.prompt import ACCEPTED_ROLES, Prompt, ToolPlan, render_prompt
from pensieve.claude.service import MessagesService
from pensieve.claude.thinking import ThinkingSigner
from pensieve.claude.tool_calls import ToolCallParser, ToolFormat, detect_tool_format, tool_call_grammar

__all__ = [
    "ACCEPTED_ROLES",
    "MessagesService",
    "ModelCatalog",
    "ModelSource",
    "Prompt",
    "ThinkingSigner",
    "ToolCallParser",
    "ToolFormat",
    "ToolPlan",
    "detect_tool_format",
    "render_prompt",
    "tool_call_grammar",
]

"""Content blocks a client may send inside ``messages`` (and ``system``).

Each block kind is its own Struct; a union of them is decoded by its ``type`` tag. Fields the API
defines but a local model cannot use (``citations``) are accepted and kept opaque, so requests
written for the hosted API decode unchanged. Unknown fields are ignored; unknown ``type`` values
are an error naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Base64ImageSource",
    "Base64PDFSource",
    "CacheControl",
    "ContentBlockParam",
    "ContentBlockSource",
    "DocumentBlockParam",
    "DocumentSource",
    "ImageBlockParam",
    "ImageSource",
    "PlainTextSource",
    "RedactedThinkingBlockParam",
    "TextBlockParam",
    "ThinkingBlockParam",
    "ToolReferenceBlockParam",
    "ToolResultBlockParam",
    "ToolResultContent",
    "ToolUseBlockParam",
    "URLImageSource",
    "URLPDFSource",
]


class CacheControl(msgspec.Struct, frozen=True, kw_only=True):
    """A prompt-cache breakpoint (``{"type": "ephemeral", "ttl": "5m"}``); accepted anywhere, advisory here."""

    type: str
    ttl: str | None = None


class _Block(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    cache_control: CacheControl | None = None


class _Source(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class TextBlockParam(_Block, frozen=True, tag="text"):
    text: str
    citations: list[dict[str, Any]] | None = None


class Base64ImageSource(_Source, frozen=True, tag="base64"):
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLImageSource(_Source, frozen=True, tag="url"):
    url: str


ImageSource = Base64ImageSource | URLImageSource


class ImageBlockParam(_Block, frozen=True, tag="image"):
    source: ImageSource


class Base64PDFSource(_Source, frozen=True, tag="base64"):
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(_Source, frozen=True, tag="text"):
    media_type: Literal["text/plain"]
    data: str


class URLPDFSource(_Source, frozen=True, tag="url"):
    url: str


class ContentBlockSource(_Source, frozen=True, tag="content"):
    """A document given as content blocks (text and images) rather than a file."""

    content: str | list[TextBlockParam | ImageBlockParam]


DocumentSource = Base64PDFSource | PlainTextSource | URLPDFSource | ContentBlockSource


class DocumentBlockParam(_Block, frozen=True, tag="document"):
    source: DocumentSource
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None


class ToolUseBlockParam(_Block, frozen=True, tag="tool_use"):
    """A tool call the assistant made earlier in the conversation."""

    id: str
    name: str
    input: dict[str, Any]


class ToolReferenceBlockParam(_Block, frozen=True, tag="tool_reference"):
    """Names a deferred tool (``defer_loading``) that a tool search made available."""

    tool_name: str


ToolResultContent = TextBlockParam | ImageBlockParam | DocumentBlockParam | ToolReferenceBlockParam


class ToolResultBlockParam(_Block, frozen=True, tag="tool_result"):
    """The outcome of a tool call, sent back in a user message."""

    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool = False


class ThinkingBlockParam(_Block, frozen=True, tag="thinking"):
    thinking: str
    signature: str


class RedactedThinkingBlockParam(_Block, frozen=True, tag="redacted_thinking"):
    data: str


ContentBlockParam = (
    TextBlockParam
    | ImageBlockParam
    | DocumentBlockParam
    | ToolUseBlockParam
    | ToolResultBlockParam
    | ThinkingBlockParam
    | RedactedThinkingBlockParam
)

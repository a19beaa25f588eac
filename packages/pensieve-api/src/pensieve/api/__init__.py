"""Pensieve api: Anthropic Messages wire types, validation, SSE encoding and error bodies"""

__all__: list[str] = []

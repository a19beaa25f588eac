"""Pensieve claude: Anthropic Messages semantics on a local model"""

__all__: list[str] = []

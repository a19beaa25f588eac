"""Pensieve cli: the pensieve-cli command"""

__all__: list[str] = []

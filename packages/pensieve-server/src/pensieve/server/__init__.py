"""Pensieve server: the Starlette/Hypercorn HTTP server"""

__all__: list[str] = []

"""Pensieve device: MLX device choice, memory limits and device reports"""

__all__: list[str] = []

"""Pensieve engine: model build on mlx-lm, generation, sampling and stop sequences"""

__all__: list[str] = []

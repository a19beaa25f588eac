"""Pensieve formats: GGUF reading, model specs, weights for MLX, tokenizer and chat template"""

__all__: list[str] = []

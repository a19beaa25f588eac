"""A models directory of tiny synthetic GGUFs, and a guard for MLX's process-wide memory limits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx

from pensieve.core import DeviceSettings
from pensieve.engine import ModelPool
from tests.support.gguf_factory import TinyLlamaConfig, write_tiny_gguf

__all__ = ["TINY_NAMES", "mlx_limits_restored", "reserved_bytes", "write_models_dir"]

TINY_NAMES = ("alpha", "beta", "gamma")
_TINY = TinyLlamaConfig(hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128)


def write_models_dir(directory: Path, names: tuple[str, ...] = TINY_NAMES) -> Path:
    """``directory`` holding ``<name>.gguf`` for each name: tiny llamas that answer differently (one seed each)."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        write_tiny_gguf(directory / f"{name}.gguf", config=_TINY, seed=seed, metadata={"general.name": name})
    return directory


@contextmanager
def mlx_limits_restored() -> Iterator[None]:
    """A pool with a small budget sets MLX's memory and cache limits; later tests get theirs back."""
    # The setters return the previous value: set a placeholder to read it, then put it back.
    previous_memory = mx.set_memory_limit(1 << 62)
    mx.set_memory_limit(previous_memory)
    previous_cache = mx.set_cache_limit(1 << 62)
    mx.set_cache_limit(previous_cache)
    try:
        yield
    finally:
        mx.set_memory_limit(previous_memory)
        mx.set_cache_limit(previous_cache)


def reserved_bytes(path: Path, device: DeviceSettings) -> int:
    """What the model at ``path`` counts against a pool's budget on ``device`` (measured by loading it)."""
    pool = ModelPool({"model": path}, default="model", device=device)
    try:
        pool.load("model")
        return pool.loaded_models()[0].reserved_bytes
    finally:
        pool.close()

"""Two minutes of mixed load on a real server (tools/bench/soak.py): nothing lost, memory flat.

Deselect with ``-m "not soak"``; the 30-minute version is documented in docs/reliability.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.soak, pytest.mark.real_model]

SOAK = Path(__file__).parents[2] / "tools" / "bench" / "soak.py"


def _soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pensieve_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_two_minutes_of_mixed_load_lose_nothing() -> None:
    # The prefix cache and MLX's buffer cache grow to their byte limits, then stay there; small
    # limits fill within the warm-up, so what the end-vs-warm-up check sees is what keeps growing.
    small_caches = {
        "PENSIEVE_ENGINE_PREFIX_CACHE_BYTES": str(32 * 1024 * 1024),
        "PENSIEVE_DEVICE_CACHE_LIMIT_BYTES": str(64 * 1024 * 1024),
    }
    report = _soak_module().soak(
        clients=4, duration=120, port=0, max_requests=10_000, max_tokens=8, warmup=45, window=30, timeout=120,
        extra_env=small_caches,
    )
    print(json.dumps(report, indent=2))
    assert report["lost_responses"] == 0, report["lost_samples"]
    assert report["health_after"] == 200
    assert report["server_exit_code"] == 0
    assert report["requests"]["failed"] == 0, report["by_kind"]
    assert report["requests"]["ok"] > 0
    assert abs(report["rss_mib"]["end_vs_warmup"]) <= 0.10, report["rss_mib"]

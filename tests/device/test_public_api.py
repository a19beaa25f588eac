"""The package exports exactly its public names."""

from __future__ import annotations

from pensieve import device


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(device.__all__) == [
        "Backend",
        "DeviceInfo",
        "DeviceReport",
        "check_model_fits",
        "configure_device",
        "estimate_model_bytes",
        "format_bytes",
        "plan_device",
        "probe_device",
        "select_backend",
    ]

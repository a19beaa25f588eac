"""probe_device on the real machine running the tests."""

from __future__ import annotations

import os
import platform

import mlx.core as mx
import msgspec

from pensieve.device import DeviceReport, probe_device, select_backend


def test_probe_describes_this_machine() -> None:
    report = probe_device()
    assert report.system == platform.system()
    assert report.machine == platform.machine()
    assert report.metal_available == mx.metal.is_available()
    assert report.system_memory_bytes > 0
    assert 1 <= report.cpu_count <= (os.cpu_count() or 1)
    assert report.cpu_name


def test_probe_on_a_machine_without_gpu_chooses_cpu() -> None:
    report = probe_device()
    if report.metal_available or report.cuda_available:
        assert report.gpu_memory_bytes and report.gpu_memory_bytes > 0
        assert select_backend(report) in ("metal", "cuda")
    else:
        assert (report.gpu_name, report.gpu_memory_bytes, report.gpu_working_set_bytes) == (None, None, None)
        assert select_backend(report) == "cpu"


def test_report_round_trips_through_json() -> None:
    report = probe_device()
    assert msgspec.json.decode(msgspec.json.encode(report), type=DeviceReport) == report

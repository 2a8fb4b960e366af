"""GPU readings through NVML, or none; the front door's metrics and their bounded labels.

NVML needs a GPU and its driver, which this machine lacks, so `pynvml` is replaced by an
in-memory module with NVML's calls and error class: what is tested is what `Nvml` does
with NVML's answers (bytes, percent, errors). A worker's real ``/metrics`` on a host
without a GPU is checked in ``tests/serving/test_serving_frontdoor_metrics.py``.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sllm.runtime.gpu import Nvml
from sllm.runtime.metrics import OTHER_MODEL, FrontDoorMetrics, GpuCollector

GIB = 1024**3


class NVMLError(Exception):
    pass


@dataclass
class Memory:
    used: int
    total: int


@dataclass
class Rates:
    gpu: int
    memory: int


def fake_nvml(devices: list[tuple[int, int, int] | None], init_fails: bool = False) -> Any:
    """A `pynvml` whose devices answer (used bytes, total bytes, percent), or fail (None)."""
    module: Any = types.ModuleType("pynvml")
    module.NVMLError = NVMLError

    def init() -> None:
        if init_fails:
            raise NVMLError("NVML Shared Library Not Found")

    def reading(handle: int) -> tuple[int, int, int]:
        device = devices[handle]
        if device is None:
            raise NVMLError("GPU is lost")
        return device

    module.nvmlInit = init
    module.nvmlDeviceGetCount = lambda: len(devices)
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    module.nvmlDeviceGetMemoryInfo = lambda handle: Memory(*reading(handle)[:2])
    module.nvmlDeviceGetUtilizationRates = lambda handle: Rates(gpu=reading(handle)[2], memory=0)
    return module


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_nvml_readings_are_the_devices_bytes_and_utilization(monkeypatch) -> None:
    devices: list[tuple[int, int, int] | None] = [(30 * GIB, 141 * GIB, 87), (1 * GIB, 80 * GIB, 5)]
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(devices))
    nvml = Nvml.start()
    assert nvml is not None
    registry = CollectorRegistry()
    registry.register(GpuCollector(nvml))
    found = samples(registry)
    assert found[("sllm_worker_gpu_memory_used_bytes", (("gpu", "0"),))] == 30 * GIB
    assert found[("sllm_worker_gpu_memory_total_bytes", (("gpu", "0"),))] == 141 * GIB
    assert found[("sllm_worker_gpu_utilization_ratio", (("gpu", "0"),))] == pytest.approx(0.87)
    assert found[("sllm_worker_gpu_memory_total_bytes", (("gpu", "1"),))] == 80 * GIB
    assert found[("sllm_worker_gpu_utilization_ratio", (("gpu", "1"),))] == pytest.approx(0.05)

    devices[0] = None  # the first device stops answering: left out, not zero
    found = samples(registry)
    assert ("sllm_worker_gpu_memory_used_bytes", (("gpu", "0"),)) not in found
    assert found[("sllm_worker_gpu_memory_used_bytes", (("gpu", "1"),))] == 1 * GIB


def test_no_nvml_means_no_gpu(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([(1, 2, 3)], init_fails=True))
    assert Nvml.start() is None
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([]))
    assert Nvml.start() is None  # a driver and no device
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    assert Nvml.start() is None


def test_front_door_labels_stay_bounded_and_rejections_count() -> None:
    registry = CollectorRegistry()
    metrics = FrontDoorMetrics(registry)
    gap = metrics.first_event(model="m", first_event_s=0.5, queued_s=0.1, cold_start_s=None)
    gap(0.02)
    gap(0.03)
    metrics.usage(model="m", prompt_tokens=12, generation_tokens=3)
    metrics.finished(model="m", status=200, code=None, seconds=0.6)
    metrics.finished(model=None, status=404, code="model_not_found", seconds=0.001)
    metrics.finished(model=None, status=400, code="invalid_request_error", seconds=0.001)
    metrics.finished(model="m", status=429, code="overloaded", seconds=0.01)
    metrics.finished(model="m", status=503, code="no_worker", seconds=0.01)
    metrics.finished(model="m", status=502, code="worker_failed", seconds=2.0)
    found = samples(registry)

    def requests(model: str, status: str) -> float:
        return found[("sllm_frontdoor_requests_total", (("model", model), ("status", status)))]

    assert requests("m", "200") == 1
    assert requests(OTHER_MODEL, "404") == requests(OTHER_MODEL, "400") == 1
    rejected = "sllm_frontdoor_requests_rejected_total"
    assert found[(rejected, (("reason", "overloaded"), ("status", "429")))] == 1
    assert found[(rejected, (("reason", "no_worker"), ("status", "503")))] == 1
    assert sum(value for (name, _), value in found.items() if name == rejected) == 2
    model = (("model", "m"),)
    assert found[("sllm_frontdoor_prompt_tokens_total", model)] == 12
    assert found[("sllm_frontdoor_generation_tokens_total", model)] == 3
    assert found[("sllm_frontdoor_inter_token_latency_seconds_count", model)] == 2
    assert found[("sllm_frontdoor_inter_token_latency_seconds_sum", model)] == pytest.approx(0.05)
    assert found[("sllm_frontdoor_time_to_first_token_seconds_sum", model)] == 0.5
    assert found[("sllm_frontdoor_request_queue_time_seconds_sum", model)] == 0.1
    # Only answers that succeeded time the end-to-end latency; no cold start was waited on.
    assert found[("sllm_frontdoor_e2e_request_latency_seconds_count", model)] == 1
    assert ("sllm_frontdoor_cold_start_wait_seconds_count", model) not in found

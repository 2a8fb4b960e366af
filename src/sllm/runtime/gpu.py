"""The host's GPUs as NVML measures them, or nothing where there is no GPU.

Why it exists: a worker's ``/metrics`` must report the GPU memory and utilization the
hardware has, not a figure from the scheduler's model (`sllm.core.worker.WorkerResources`
budgets 141 GB, an H200, whatever the host), and on a host without a GPU it must report
no GPU metric at all rather than zeros. NVML (the library behind ``nvidia-smi``) answers
both through `nvidia-ml-py`, the optional ``gpu`` extra (``import pynvml``).

`Nvml.start` returns None when the module is not installed, when NVML does not start
(no driver: ``NVMLError_LibraryNotFound``, no device, no permission) or when it sees no
device; the caller then registers no GPU collector. A device that fails one reading (it
fell off the bus, say) is left out of that scrape, never reported as zero.

Not handled yet: only the devices a worker uses (NVML lists every device of the host and
ignores ``CUDA_VISIBLE_DEVICES``; one worker per host is the deployment we ship), and
``nvmlShutdown`` (NVML stays initialised for the life of the process, as a scraped
exporter's does).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# NVML reports utilization in percent of its sample period.
PERCENT = 100.0


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device at one moment."""

    index: int
    memory_used_bytes: int
    memory_total_bytes: int
    # Share of NVML's last sample period (1/6 s to 1 s, by device) in which a kernel ran.
    utilization: float


def gpu_count(configured: int | None) -> int:
    """A worker's GPUs: WORKER_GPUS when set, else the devices NVML sees, else 1 (a
    machine without a GPU serves the sim engine or CPU builds as one device)."""
    if configured is not None:
        return configured
    nvml = Nvml.start()
    return 1 if nvml is None else nvml.device_count


class Nvml:
    """The devices NVML sees, read on demand."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self.nvml = nvml
        self.handles = handles

    @classmethod
    def start(cls) -> Nvml | None:
        """NVML with at least one device, or None (module missing, NVML down, no device)."""
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return None
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            handles = [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except nvml.NVMLError:
            return None
        return cls(nvml, handles) if handles else None

    @property
    def device_count(self) -> int:
        return len(self.handles)

    def readings(self) -> list[GpuReading]:
        """Every device that answers now."""
        nvml = self.nvml
        found = []
        for index, handle in enumerate(self.handles):
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            except nvml.NVMLError:
                continue
            found.append(
                GpuReading(
                    index=index,
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                    utilization=float(rates.gpu) / PERCENT,
                )
            )
        return found

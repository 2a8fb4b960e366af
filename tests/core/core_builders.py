"""Hand-built inputs for the core's tests: a worker report, a schedule request and a view.

Every field is given by keyword, with defaults a test overrides by name (`report("w1",
queue_depth=3)`). The host is a name, never an address: nothing here is sent.
"""

from __future__ import annotations

from typing import Any

from sllm.core.view import ClusterView
from sllm.wire.messages import ScheduleRequest, WorkerReport

GB = 10**9
TIMEOUT = 5.0  # the views' worker timeout
MODEL = "llama-2-7b"  # 13.48 GB


def report(node_id: str, **overrides: Any) -> WorkerReport:
    """A ready, idle worker with an H200's memory and nothing loaded, unless overridden."""
    fields: dict[str, Any] = {
        "node_id": node_id,
        "host": f"host-{node_id}",
        "port": 9000,
        "http_port": 8000,
        "models": {},
        "models_omitted": 0,
        "queue_depth": 0,
        "queue_capacity": 64,
        "running": 0,
        "slots": 8,
        "gpu_utilization": 0.0,
        "memory_used": 0,
        "memory_total": 141 * GB,
        "load_backlog_s": 0.0,
        "ready": True,
        "seq": 1,
        "timestamp": 100.0,
    }
    fields.update(overrides)
    return WorkerReport(**fields)


def request(
    model: str = MODEL, prompt: int = 512, output: int = 128, rid: str = "r"
) -> ScheduleRequest:
    return ScheduleRequest(
        request_id=rid, model=model, priority=0, prompt_tokens=prompt, output_tokens=output
    )


def view_of(*reports: WorkerReport, now: float = 0.0) -> ClusterView:
    """A view that has taken in `reports` at `now`."""
    view = ClusterView(TIMEOUT)
    for item in reports:
        view.apply_report(item, now)
    return view

"""Asking a coordinator for its cluster state, page by page, and showing it.

`get_cluster_state` is what `sllm status` prints and what the simulation samples. A page
holds a handful of workers so that every reply fits one datagram; the client walks the
pages until it has every worker the coordinator counted.
"""

from __future__ import annotations

import secrets
from typing import Any

from sllm.core.tiers import Tier
from sllm.runtime.udp import Address, Endpoint
from sllm.wire import ClusterStateRequest, ClusterStateResponse, WorkerSummary
from sllm.wire.messages import STATE_PAGE_MAX_WORKERS

# Bounds a status call against a coordinator that keeps growing while we page.
MAX_PAGES = 10_000


async def get_cluster_state(
    endpoint: Endpoint, coordinator: Address, timeout: float = 2.0
) -> dict[str, Any]:
    """The whole cluster state as a JSON-ready dict (the `status --json` format)."""
    first: ClusterStateResponse | None = None
    workers: list[WorkerSummary] = []
    for _ in range(MAX_PAGES):
        request = ClusterStateRequest(secrets.token_hex(8), len(workers), STATE_PAGE_MAX_WORKERS)
        page = await endpoint.request(request, coordinator, ClusterStateResponse, timeout)
        first = first or page
        workers.extend(page.workers)
        if not page.workers or len(workers) >= page.active_workers:
            break
    assert first is not None
    return state_as_dict(first, workers)


def state_as_dict(summary: ClusterStateResponse, workers: list[WorkerSummary]) -> dict[str, Any]:
    placed = summary.cache_hits + summary.cold_starts
    return {
        "policy": summary.policy,
        "uptime_s": round(summary.uptime_s, 3),
        "active_workers": summary.active_workers,
        "total_requests": summary.total_requests,
        "cache_hits": summary.cache_hits,
        "cold_starts": summary.cold_starts,
        "rejected": summary.rejected,
        "cache_hit_rate": summary.cache_hits / placed if placed else 0.0,
        "queue_depth": {
            "mean": summary.queue_depth_mean,
            "max": summary.queue_depth_max,
            "per_worker": {w.worker_id: w.queue_depth for w in workers},
        },
        "gpu_utilization": {
            "mean": summary.gpu_utilization_mean,
            "per_worker": {w.worker_id: w.gpu_utilization for w in workers},
        },
        "workers": [
            {
                "id": w.worker_id,
                "address": f"{w.host}:{w.port}",
                "models": {name: Tier(tier).name.lower() for name, tier in w.models.items()},
                "queue_depth": w.queue_depth,
                "running": w.running,
                "gpu_utilization": w.gpu_utilization,
                "last_report_age_s": round(w.last_report_age_s, 3),
            }
            for w in workers
        ],
    }


def render_table(state: dict[str, Any]) -> str:
    """A human-readable `status`: the totals, then one line per worker."""
    lines = [
        f"policy {state['policy']}  up {state['uptime_s']:.0f}s  "
        f"active workers {state['active_workers']}  requests {state['total_requests']}  "
        f"cache hit rate {state['cache_hit_rate']:.1%}  cold starts {state['cold_starts']}  "
        f"rejected {state['rejected']}",
        f"queue depth mean {state['queue_depth']['mean']:.2f} max {state['queue_depth']['max']}  "
        f"gpu utilization mean {state['gpu_utilization']['mean']:.1%}",
    ]
    header = f"{'WORKER':<20} {'ADDRESS':<22} {'QUEUE':>5} {'RUN':>4} {'GPU':>5} {'AGE':>6}  MODELS"
    lines.append(header)
    for worker in state["workers"]:
        gpu_models = [name for name, tier in worker["models"].items() if tier == "gpu"]
        lines.append(
            f"{worker['id']:<20} {worker['address']:<22} {worker['queue_depth']:>5} "
            f"{worker['running']:>4} {worker['gpu_utilization']:>5.0%} "
            f"{worker['last_report_age_s']:>5.1f}s  {', '.join(gpu_models) or '-'}"
        )
    return "\n".join(lines)

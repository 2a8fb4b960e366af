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
from sllm.wire import (
    ClusterStateRequest,
    ClusterStateResponse,
    MemberStateRequest,
    MemberStateResponse,
    MemberSummary,
    WorkerSummary,
)
from sllm.wire.messages import MEMBER_PAGE_MAX, STATE_PAGE_MAX_WORKERS

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


# -- decentralized nodes ---------------------------------------------------------------

MEMBER_STATES = ("alive", "suspect", "dead", "left")  # index = the wire value


async def get_node_state(endpoint: Endpoint, node: Address, timeout: float = 2.0) -> dict[str, Any]:
    """A node's cluster state (its own view, same keys as a coordinator's) plus ``gossip``.

    The ``gossip`` section holds the node's membership: members by state, each member's
    state, incarnation and the age of what the node knows about it, false suspicions,
    bytes sent and received per second, and rejected datagrams.
    """
    state = await get_cluster_state(endpoint, node, timeout)
    summary, members = await get_members(endpoint, node, timeout)
    state["gossip"] = gossip_as_dict(summary, members)
    return state


async def get_members(
    endpoint: Endpoint, node: Address, timeout: float = 2.0, pages: int = MAX_PAGES
) -> tuple[MemberStateResponse, list[MemberSummary]]:
    """A node's gossip counters and its members sorted by id (at most `pages` pages)."""
    first: MemberStateResponse | None = None
    members: list[MemberSummary] = []
    for _ in range(pages):
        request = MemberStateRequest(secrets.token_hex(8), len(members), MEMBER_PAGE_MAX)
        page = await endpoint.request(request, node, MemberStateResponse, timeout)
        first = first or page
        members.extend(page.members)
        total = page.alive + page.suspect + page.dead + page.left
        if not page.members or len(members) >= total:
            break
    assert first is not None
    return first, members


def gossip_as_dict(summary: MemberStateResponse, members: list[MemberSummary]) -> dict[str, Any]:
    return {
        "node_id": summary.node_id,
        "incarnation": summary.incarnation,
        "members": {
            "alive": summary.alive,
            "suspect": summary.suspect,
            "dead": summary.dead,
            "left": summary.left,
        },
        "false_suspicions": summary.false_suspicions,
        "refuted": summary.refuted,
        "local_health": summary.local_health,
        "bytes_sent_per_s": round(summary.bytes_sent_per_s, 1),
        "bytes_received_per_s": round(summary.bytes_received_per_s, 1),
        "rejected_datagrams": summary.rejected_datagrams,
        "member_list": [
            {
                "id": m.node_id,
                "address": f"{m.host}:{m.port}",
                "state": MEMBER_STATES[m.state],
                "incarnation": m.incarnation,
                "info_age_s": round(m.info_age_s, 3),
                "report_age_s": round(m.report_age_s, 3) if m.reported else None,
            }
            for m in members
        ],
    }


def render_gossip(gossip: dict[str, Any]) -> str:
    """The ``gossip`` section of a node's state as a table."""
    counts = gossip["members"]
    lines = [
        f"node {gossip['node_id']}  incarnation {gossip['incarnation']}  members "
        + " ".join(f"{name} {counts[name]}" for name in MEMBER_STATES)
        + f"  false suspicions {gossip['false_suspicions']}  refuted {gossip['refuted']}  "
        f"local health {gossip['local_health']}",
        f"traffic out {gossip['bytes_sent_per_s']:.0f} B/s in "
        f"{gossip['bytes_received_per_s']:.0f} B/s  rejected datagrams "
        f"{gossip['rejected_datagrams']}",
        f"{'MEMBER':<20} {'ADDRESS':<22} {'STATE':<8} {'INC':>4} {'INFO AGE':>9} "
        f"{'REPORT AGE':>11}",
    ]
    for member in gossip["member_list"]:
        report_age = member["report_age_s"]
        shown = "-" if report_age is None else f"{report_age:.1f}s"
        lines.append(
            f"{member['id']:<20} {member['address']:<22} {member['state']:<8} "
            f"{member['incarnation']:>4} {member['info_age_s']:>8.1f}s {shown:>11}"
        )
    return "\n".join(lines)

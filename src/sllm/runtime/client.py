"""Asking a coordinator for its cluster state, page by page, and showing it.

`get_cluster_state` is what `sllm status` prints and what the simulation samples. A page
holds a handful of workers so that every reply fits one datagram; the client walks the
pages until it has every worker the coordinator counted.

A listing is never a silent subset. Pages are cut by offset from a list that may change
between two pages (workers join and expire), a page may go unanswered, and the walk stops
after `MAX_PAGES`. So the result says whether it is ``complete``: every page counted the
same number of workers, and the listing holds exactly that many distinct ones. When it is
not, ``incomplete`` says why, and `sllm status` prints that and exits non-zero.

The tables (`render_table`, `render_gossip`) size each column to its longest cell, so a
worker id of any length keeps the columns aligned. A worker's MODELS cell lists every
model its summary names, grouped by tier from the fastest (``gpu: a, b; host: c``);
a summary names at most `SUMMARY_MAX_MODELS`, the fastest-tier ones first.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sllm.core.measures import (
    COLD_PLACEMENTS,
    WARM_PLACEMENT_RATE,
    Placements,
    warm_placement_rate,
)
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
    endpoint: Endpoint, coordinator: Address, timeout: float = 2.0, pages: int = MAX_PAGES
) -> dict[str, Any]:
    """The whole cluster state as a JSON-ready dict (the `status --json` format).

    Raises TimeoutError when the first page goes unanswered; a later page that does is
    reported in ``incomplete`` with what was listed so far.
    """
    first: ClusterStateResponse | None = None
    workers: list[WorkerSummary] = []
    totals: list[int] = []
    stopped: str | None = None
    for _ in range(pages):
        request = ClusterStateRequest(
            request_id=secrets.token_hex(8), offset=len(workers), limit=STATE_PAGE_MAX_WORKERS
        )
        try:
            page = await endpoint.request(request, coordinator, ClusterStateResponse, timeout)
        except TimeoutError:
            if first is None:
                raise
            stopped = f"no answer for the page at offset {len(workers)} within {timeout:g}s"
            break
        first = first or page
        totals.append(page.active_workers)
        workers.extend(page.workers)
        if not page.workers or len(workers) >= page.active_workers:
            break
    else:
        stopped = f"stopped after {pages} pages"
    assert first is not None
    state = state_as_dict(first, workers)
    ids = [worker.worker_id for worker in workers]
    state.update(listing(ids, totals, stopped, "workers"))
    return state


def listing(ids: list[str], totals: list[int], stopped: str | None, what: str) -> dict[str, Any]:
    """Whether a paged listing of `ids` is complete, given the totals each page counted."""
    distinct = len(set(ids))
    incomplete = stopped
    if incomplete is None and len(set(totals)) > 1:
        incomplete = f"the {what} changed while paging (counted {totals[0]}, then {totals[-1]})"
    if incomplete is None and distinct != len(ids):
        incomplete = f"{len(ids) - distinct} {what} listed twice (the order moved while paging)"
    if incomplete is None and distinct != totals[-1]:
        incomplete = f"the pages held {distinct} {what} of {totals[-1]} counted"
    if incomplete is not None:
        incomplete = f"listed {distinct} of {totals[-1]} {what}: {incomplete}"
    return {"complete": incomplete is None, "listed": distinct, "incomplete": incomplete}


def state_as_dict(summary: ClusterStateResponse, workers: list[WorkerSummary]) -> dict[str, Any]:
    """The `status --json` shape. Its figures are the scheduler's placements
    (`sllm.core.measures`); ``cache_hits`` and ``cache_hit_rate`` are the seed's names for
    the warm placements and their rate, kept for the scripts that read them. There is no
    ``cold_starts`` key: that name is the run report's, for requests that waited for a load.
    """
    warm, cold = summary.cache_hits, summary.cold_starts  # the wire's names for placements
    rate = warm_placement_rate(warm, cold)
    return {
        "policy": summary.policy,
        "uptime_s": round(summary.uptime_s, 3),
        "active_workers": summary.active_workers,
        "total_requests": summary.total_requests,
        "warm_placements": warm,
        "cold_placements": cold,
        "warm_placement_rate": rate,
        "cache_hits": warm,
        "cache_hit_rate": rate,
        "rejected": summary.rejected,
        "max_workers": summary.max_workers,
        "refused_workers": summary.refused_workers,
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
                "ready": w.ready,
            }
            for w in workers
        ],
    }


def placements_in(state: Mapping[str, Any]) -> Placements:
    """The warm and cold placements of a `status --json` state."""
    return Placements(warm=state["warm_placements"], cold=state["cold_placements"])


def render_table(state: dict[str, Any]) -> str:
    """A human-readable `status`: the totals, then one line per worker."""
    lines = [
        f"policy {state['policy']}  up {state['uptime_s']:.0f}s  "
        f"active workers {state['active_workers']}  requests {state['total_requests']}  "
        f"{WARM_PLACEMENT_RATE} {state['warm_placement_rate']:.1%}  "
        f"{COLD_PLACEMENTS} {state['cold_placements']}  "
        f"rejected {state['rejected']}",
        f"queue depth mean {state['queue_depth']['mean']:.2f} max {state['queue_depth']['max']}  "
        f"gpu utilization mean {state['gpu_utilization']['mean']:.1%}",
    ]
    if state.get("refused_workers"):
        lines.append(
            f"refused {state['refused_workers']} new workers (at most {state['max_workers']} "
            "are held, and new ones per source address are rate-limited)"
        )
    if state.get("incomplete"):
        lines.append(f"INCOMPLETE: {state['incomplete']}")
    rows = [
        [
            worker["id"],
            worker["address"],
            "yes" if worker["ready"] else "no",
            str(worker["queue_depth"]),
            str(worker["running"]),
            f"{worker['gpu_utilization']:.0%}",
            f"{worker['last_report_age_s']:.1f}s",
            models_by_tier(worker["models"]),
        ]
        for worker in state["workers"]
    ]
    lines += columns(WORKER_COLUMNS, rows)
    return "\n".join(lines)


# (header, right-aligned): numbers align on the right, text on the left.
WORKER_COLUMNS = (
    ("WORKER", False),
    ("ADDRESS", False),
    ("READY", False),
    ("QUEUE", True),
    ("RUN", True),
    ("BUSY", True),  # busy slots over slots (the wire's gpu_utilization): no GPU measures it
    ("AGE", True),
    ("MODELS", False),
)
MEMBER_COLUMNS = (
    ("MEMBER", False),
    ("ADDRESS", False),
    ("STATE", False),
    ("INC", True),
    ("INFO AGE", True),
    ("REPORT AGE", True),
)
COLUMN_GAP = "  "


def columns(heads: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]]) -> list[str]:
    """The header line and one line per row, each column as wide as its longest cell."""
    widths = [max([len(head), *(len(row[i]) for row in rows)]) for i, (head, _) in enumerate(heads)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, (_, right) in zip(cells, widths, heads, strict=True)
        )
        return COLUMN_GAP.join(padded).rstrip()

    return [line([head for head, _ in heads]), *(line(row) for row in rows)]


def models_by_tier(models: Mapping[str, str]) -> str:
    """``gpu: a, b; host: c; disk: d``: every model named, by tier from the fastest; ``-``."""
    groups = []
    for tier in Tier:
        names = [name for name, held in models.items() if held == tier.name.lower()]
        if names:
            groups.append(f"{tier.name.lower()}: {', '.join(names)}")
    return "; ".join(groups) or "-"


# -- decentralized nodes ---------------------------------------------------------------

MEMBER_STATES = ("alive", "suspect", "dead", "left")  # index = the wire value


async def get_node_state(endpoint: Endpoint, node: Address, timeout: float = 2.0) -> dict[str, Any]:
    """A node's cluster state (its own view, same keys as a coordinator's) plus ``gossip``.

    The ``gossip`` section holds the node's membership: members by state, each member's
    state, incarnation and the age of what the node knows about it, false suspicions,
    bytes sent and received per second, and rejected datagrams.
    """
    state = await get_cluster_state(endpoint, node, timeout)
    summary, members, complete = await walk_members(endpoint, node, timeout)
    state["gossip"] = gossip_as_dict(summary, members) | complete
    return state


async def get_members(
    endpoint: Endpoint, node: Address, timeout: float = 2.0, pages: int = MAX_PAGES
) -> tuple[MemberStateResponse, list[MemberSummary]]:
    """A node's gossip counters and its members sorted by id (at most `pages` pages)."""
    summary, members, _ = await walk_members(endpoint, node, timeout, pages)
    return summary, members


async def walk_members(
    endpoint: Endpoint, node: Address, timeout: float = 2.0, pages: int = MAX_PAGES
) -> tuple[MemberStateResponse, list[MemberSummary], dict[str, Any]]:
    """`get_members`, plus whether the list is complete (`listing`)."""
    first: MemberStateResponse | None = None
    members: list[MemberSummary] = []
    totals: list[int] = []
    stopped: str | None = None
    for _ in range(pages):
        request = MemberStateRequest(
            request_id=secrets.token_hex(8), offset=len(members), limit=MEMBER_PAGE_MAX
        )
        try:
            page = await endpoint.request(request, node, MemberStateResponse, timeout)
        except TimeoutError:
            if first is None:
                raise
            stopped = f"no answer for the page at offset {len(members)} within {timeout:g}s"
            break
        first = first or page
        members.extend(page.members)
        total = page.alive + page.suspect + page.dead + page.left
        totals.append(total)
        if not page.members or len(members) >= total:
            break
    else:
        stopped = f"stopped after {pages} pages"
    assert first is not None
    ids = [member.node_id for member in members]
    return first, members, listing(ids, totals, stopped, "members")


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
        "max_members": summary.max_members,
        "refused_members": summary.refused_members,
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
    ]
    rows = [
        [
            member["id"],
            member["address"],
            member["state"],
            str(member["incarnation"]),
            f"{member['info_age_s']:.1f}s",
            "-" if member["report_age_s"] is None else f"{member['report_age_s']:.1f}s",
        ]
        for member in gossip["member_list"]
    ]
    lines += columns(MEMBER_COLUMNS, rows)
    if gossip.get("refused_members"):
        lines.append(
            f"refused {gossip['refused_members']} new members (at most "
            f"{gossip['max_members']} are held, and new ones per source address are rate-limited)"
        )
    if gossip.get("incomplete"):
        lines.append(f"INCOMPLETE: {gossip['incomplete']}")
    return "\n".join(lines)

"""What `sllm status` shows: each worker's readiness, every tier's models, aligned columns.

The readiness travels on the wire (`WorkerSummary.ready`, filled by the coordinator from
the worker's last report), so it is checked through a live coordinator on 127.0.0.1; the
table is a pure function of the `status --json` shape.
"""

from __future__ import annotations

import time
from typing import Any

from sllm.runtime.client import get_cluster_state, render_gossip, render_table
from sllm.wire import WorkerReport

MODELS = {"gpu-model": 0, "host-model": 1, "disk-model": 2}
LONG_ID = "worker-" + "x" * 33  # 40 characters, twice the width the table once assumed
REPLY_TIMEOUT_S = 2.0


def report(index: int, *, ready: bool) -> WorkerReport:
    return WorkerReport(
        node_id=f"synthetic-{index:02d}",
        host="127.0.0.1",
        port=20_000 + index,
        http_port=0,
        models=MODELS,
        models_omitted=0,
        queue_depth=index,
        queue_capacity=64,
        running=0,
        slots=8,
        gpu_utilization=0.0,
        memory_used=0,
        memory_total=141 * 10**9,
        load_backlog_s=0.0,
        ready=ready,
        seq=1,
        timestamp=time.time(),
    )


async def test_status_says_which_workers_are_ready(local_cluster, check_status) -> None:
    async with local_cluster(workers=0, worker_timeout=30.0) as cluster:
        for index in range(4):
            stopping = index == 2
            cluster.coordinator.core.handle(report(index, ready=not stopping), time.monotonic())
        state = await get_cluster_state(cluster.client, cluster.address, REPLY_TIMEOUT_S)
    check_status(state, [f"synthetic-{i:02d}" for i in range(4)])
    assert [worker["ready"] for worker in state["workers"]] == [True, True, False, True]
    assert state["workers"][0]["models"] == {
        "gpu-model": "gpu",
        "host-model": "host",
        "disk-model": "disk",
    }


def worker(worker_id: str, *, ready: bool, models: dict[str, str]) -> dict[str, Any]:
    return {
        "id": worker_id,
        "address": "127.0.0.1:20001",
        "models": models,
        "queue_depth": 12,
        "running": 3,
        "gpu_utilization": 0.5,
        "last_report_age_s": 0.25,
        "ready": ready,
    }


def state_of(*workers: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": "least-loaded",
        "uptime_s": 12.0,
        "active_workers": len(workers),
        "total_requests": 7,
        "warm_placement_rate": 0.5,
        "cold_placements": 1,
        "rejected": 0,
        "queue_depth": {"mean": 1.0, "max": 2},
        "gpu_utilization": {"mean": 0.5},
        "workers": list(workers),
    }


def table_rows(table: str) -> list[str]:
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("WORKER"))
    return lines[start:]


def test_the_table_sizes_columns_to_the_longest_id() -> None:
    state = state_of(
        worker(LONG_ID, ready=True, models={"m": "gpu"}),
        worker("w2", ready=False, models={}),
    )
    header, first, second = table_rows(render_table(state))
    # Every column starts at the same place on every line, whatever the id's length.
    for name in ("ADDRESS", "READY", "MODELS"):
        at = header.index(name)
        assert first[at - 2 : at] == second[at - 2 : at] == "  ", name
    assert first.split()[:3] == [LONG_ID, "127.0.0.1:20001", "yes"]
    assert second.split()[:3] == ["w2", "127.0.0.1:20001", "no"]
    # Right-aligned numbers end under their header.
    for name, value in (("QUEUE", "12"), ("AGE", "0.2s")):
        end = header.index(name) + len(name)
        assert first[end - len(value) : end] == second[end - len(value) : end] == value


def test_the_table_lists_every_tiers_models_fastest_first() -> None:
    models = {"d1": "disk", "g1": "gpu", "h1": "host", "g2": "gpu"}
    state = state_of(worker("w1", ready=True, models=models), worker("w2", ready=True, models={}))
    header, first, second = table_rows(render_table(state))
    assert header.split()[-1] == "MODELS"
    assert first.endswith("gpu: g1, g2; host: h1; disk: d1")
    assert second.endswith("-")


def test_the_gossip_table_sizes_columns_too() -> None:
    members = [
        {"id": LONG_ID, "address": "127.0.0.2:7946", "state": "alive", "incarnation": 12,
         "info_age_s": 0.0, "report_age_s": 0.5},
        {"id": "n1", "address": "127.0.0.3:7946", "state": "suspect", "incarnation": 3,
         "info_age_s": 4.0, "report_age_s": None},
    ]  # fmt: skip
    gossip = {
        "node_id": "n0",
        "incarnation": 2,
        "members": {"alive": 1, "suspect": 1, "dead": 0, "left": 0},
        "false_suspicions": 0,
        "refuted": 0,
        "local_health": 0,
        "bytes_sent_per_s": 0.0,
        "bytes_received_per_s": 0.0,
        "rejected_datagrams": 0,
        "member_list": members,
    }
    lines = render_gossip(gossip).splitlines()
    header = next(line for line in lines if line.startswith("MEMBER"))
    first, second = lines[lines.index(header) + 1 :]
    at = header.index("STATE")
    assert first[at:].startswith("alive") and second[at:].startswith("suspect")

"""The decentralized script's status block: every node's counters summed, on hand-built states.

Each node counts only its own decisions, so the block sums them (`ClusterState`); a node
that gave no state is named, with why, and its counts are left out. Every node below has
a distinct value in every field, so a sum that reads the wrong key, or a row that shows
another node's figures, fails. The live run is in
``tests/integration/test_integration_decentralized_status.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sllm.core.measures import Placements
from sllm.experiments.decentralized import Cluster, ClusterState, render_cluster_state, spread
from sllm.runtime.client import state_as_dict
from sllm.runtime.udp import Address
from sllm.wire import ClusterStateResponse, WorkerSummary


def node_state(
    node: str, *, requests: int, warm: int, cold: int, rejected: int, queue: int, sees: int
) -> dict[str, Any]:
    """`node`'s state as `get_cluster_state` returns it: its own row, and `sees` workers."""
    own = WorkerSummary(
        worker_id=node,
        host="127.0.0.1",
        port=7000 + queue,
        models={"llama-3.2-1b": 0},
        queue_depth=queue,
        running=queue + 1,
        gpu_utilization=queue / 10,
        last_report_age_s=queue / 100,
        ready=True,
    )
    summary = ClusterStateResponse(
        request_id="r",
        policy="startup-aware",
        active_workers=sees,
        total_requests=requests,
        cache_hits=warm,
        cold_starts=cold,
        rejected=rejected,
        queue_depth_mean=0.0,
        queue_depth_max=0,
        gpu_utilization_mean=0.0,
        uptime_s=float(requests),
        offset=0,
        workers=(own,),
        max_workers=1000,
        refused_workers=0,
    )
    return state_as_dict(summary, [own])


ANSWERS: dict[str, dict[str, Any] | None] = {
    "node-10": node_state("node-10", requests=31, warm=23, cold=5, rejected=3, queue=2, sees=4),
    "node-0": node_state("node-0", requests=17, warm=11, cold=4, rejected=2, queue=6, sees=5),
    "node-2": None,
    "node-3": None,
    "node-1": node_state("node-1", requests=43, warm=37, cold=1, rejected=5, queue=4, sees=3),
}


def test_the_counters_are_summed_over_the_nodes_that_answered() -> None:
    cluster = ClusterState.of(ANSWERS, killed={"node-2"})
    assert cluster.requests == 17 + 43 + 31
    assert cluster.placements == Placements(warm=11 + 37 + 23, cold=4 + 1 + 5)
    assert cluster.rejected == 2 + 5 + 3
    assert cluster.nodes == 5
    assert list(cluster.states) == ["node-0", "node-1", "node-10"]  # by number, not text
    assert cluster.missing == {"node-2": "killed", "node-3": "no answer"}


def test_the_block_prints_the_totals_and_names_who_is_left_out() -> None:
    lines = render_cluster_state(ClusterState.of(ANSWERS, killed={"node-2"})).splitlines()
    assert "3/5 nodes answered  requests 91  warm placement rate 87.7%" in lines[0]
    assert "cold placements 10  rejected 10" in lines[0]
    # The load is each node's own row: queues 6, 4 and 2; utilizations 60%, 40%, 20%.
    assert "queue depth mean 4.00 max 6  gpu utilization mean 40.0%" in lines[1]
    assert lines[2].endswith("min 3  median 4  max 5")
    assert lines[3] == "left out of the totals: node-2 (killed), node-3 (no answer)"
    header, *rows = lines[4:]
    assert header.split() == [
        *("NODE", "READY", "QUEUE", "RUN", "BUSY", "AGE"),
        *("REQUESTS", "WARM", "COLD", "REJECTED", "SEES", "MODELS"),
    ]
    assert [row.split()[:11] for row in rows] == [
        ["node-0", "yes", "6", "7", "60%", "0.1s", "17", "11", "4", "2", "5"],
        ["node-1", "yes", "4", "5", "40%", "0.0s", "43", "37", "1", "5", "3"],
        ["node-10", "yes", "2", "3", "20%", "0.0s", "31", "23", "5", "3", "4"],
    ]


def test_a_node_missing_from_its_own_view_shows_no_load() -> None:
    state = node_state("node-0", requests=7, warm=5, cold=1, rejected=1, queue=3, sees=2)
    state["workers"] = []  # before its first report, or a page of its listing went unanswered
    block = render_cluster_state(ClusterState.of({"node-0": state}, killed=set()))
    assert block.splitlines()[-1].split() == ["node-0", *["-"] * 5, "7", "5", "1", "1", "2", "-"]


def test_no_answer_at_all_prints_who_is_missing() -> None:
    block = render_cluster_state(ClusterState.of({"node-0": None, "node-1": None}, {"node-1"}))
    assert block.splitlines() == [
        "0/2 nodes answered",
        "left out of the totals: node-0 (no answer), node-1 (killed)",
    ]


def test_spread_is_lowest_median_highest() -> None:
    assert spread([5, 3, 4, 9]) == (3, 4.5, 9)
    assert spread([]) == (0.0, 0.0, 0.0)


async def test_every_node_is_asked_at_once_and_a_silent_one_costs_the_deadline() -> None:
    """Each answering node answers only once every node has been asked, so asking one
    after another would time every one of them out; the silent node never answers."""
    cluster = Cluster()
    names = ["node-0", "node-1", "node-2", "node-3"]
    cluster.addresses = {name: ("127.0.0.1", 7000 + i) for i, name in enumerate(names)}
    cluster.killed = {"node-3"}
    silent: Address = cluster.addresses["node-2"]
    asked: list[Address] = []
    all_asked = asyncio.Event()

    async def ask(node: Address) -> int:
        asked.append(node)
        if len(asked) == len(names) - 1:  # every node but the killed one
            all_asked.set()
        await all_asked.wait()
        if node == silent:
            await asyncio.Event().wait()  # never set: a node that does not answer
        return node[1]

    answers = await cluster.ask_every_node(ask, deadline_s=0.5)
    assert answers == {"node-0": 7000, "node-1": 7001, "node-2": None, "node-3": None}
    assert cluster.addresses["node-3"] not in asked  # a killed node is not asked

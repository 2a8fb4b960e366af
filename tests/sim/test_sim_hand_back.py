"""A worker hands back the requests of a load that found no room, and they run elsewhere.

Ten decentralized nodes at the scale experiment's load (0.25 requests/s each, ten models
up to a 70B one that fills a GPU, checkpoints in host memory), placing on their gossiped,
seconds-old views alone (no probes), so now and then a worker is sent a model while the
GPU is held by others still in use; without hand-back, its requests wait as long as those
others keep getting requests (30 s at seed 0, 15 s with it). Nodes that probe, as by
default, make no such placement in this run: a probe's answer is the whole report.
"""

from __future__ import annotations

import dataclasses

from sllm.core.outstanding import RETRIES_EXHAUSTED
from sllm.core.tiers import Tier
from sllm.core.worker import HANDED_BACK, WorkerResources
from sllm.sim.cluster import ClusterConfig, SimResult
from sllm.sim.decentralized import DecentralizedCluster
from sllm.workload.options import WorkloadOptions, make_workload

DURATION_S = 300.0


def run(hand_back: bool) -> tuple[SimResult, int]:
    """The run, and how many requests its workers handed back."""
    _, arrivals = make_workload(
        WorkloadOptions(duration_s=DURATION_S, seed=0, rate_rps=2.5, models=10)
    )
    config = ClusterConfig(
        workers=10,
        policy="startup-aware",
        seed=0,
        drain_s=10.0,
        prestage=Tier.HOST,
        probing_candidates=0,
        resources=dataclasses.replace(WorkerResources(), hand_back=hand_back),
    )
    cluster = DecentralizedCluster(config)
    result = cluster.run(arrivals, DURATION_S)
    return result, sum(node.host.state.handed_back_total for node in cluster.nodes)


def test_handed_back_requests_are_placed_again_and_wait_less() -> None:
    with_it, handed_back = run(hand_back=True)
    without, none = run(hand_back=False)
    assert handed_back > 0 and none == 0
    report = with_it.report.run
    # Each was placed again: a move is no death, so none ran out of placements, none
    # ends with the reason, none is lost. (No node dies: every retry is one.)
    assert not [o for o in with_it.outcomes if o.reason == HANDED_BACK]
    assert report.failures.get(RETRIES_EXHAUSTED, 0) == 0
    assert report.retried == handed_back and report.lost == 0
    assert report.requests == without.report.run.requests
    longest = {
        name: max(o.queue_s for o in result.outcomes if o.ok)
        for name, result in (("with", with_it), ("without", without))
    }
    assert longest["with"] < longest["without"], longest

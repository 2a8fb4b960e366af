"""A killed worker or node costs at most the requests it had started, in the simulator.

Each run kills 3 of 10 workers halfway through the arrivals (no goodbye: their queues
die with them). The client holds every request until it is answered
(`sllm.core.outstanding`): what was queued on a killed worker is placed again once the
cluster declares it dead, what had started there fails with ``worker_lost``, and no
request on a killed worker ends without an answer.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sllm.sim.cluster import CentralizedCluster, ClusterConfig, SimResult, worker_name
from sllm.sim.decentralized import DecentralizedCluster
from sllm.sim.faults import KILL_WORKER, Fault
from sllm.sim.report import NO_ANSWER_REASONS
from sllm.workload.options import WorkloadOptions, make_workload

WORKERS = 10
VICTIMS = (worker_name(2), worker_name(5), worker_name(7))
DURATION_S = 30.0
KILL_AT_S = 15.0


def run(mode: str) -> SimResult:
    # Four small models: every request that reaches a live worker ends within the drain,
    # so any request without an answer is one the kill lost. At 10 requests/s some wait in
    # the victims' queues at the kill, even where nodes probe before placing (which
    # spreads them: at 5/s none did).
    options = WorkloadOptions(duration_s=DURATION_S, seed=3, rate_rps=10.0, models=4)
    arrivals = list(make_workload(options)[1])
    config = ClusterConfig(workers=WORKERS, seed=3)
    cluster = (DecentralizedCluster if mode == "decentralized" else CentralizedCluster)(config)
    return cluster.run(arrivals, DURATION_S, [Fault(KILL_AT_S, KILL_WORKER, VICTIMS)])


@pytest.mark.parametrize("mode", ["decentralized", "centralized"])
def test_a_kill_costs_at_most_the_requests_started_on_the_killed_workers(mode: str) -> None:
    result = run(mode)
    report = result.report.run
    failed = [outcome for outcome in result.outcomes if not outcome.ok]
    assert report.lost == 0, [o for o in failed if o.reason in NO_ANSWER_REASONS]
    assert report.retried > 0  # the killed workers had requests queued
    # Every failure is a request that had started on a killed worker.
    assert all(o.reason == "worker_lost" and o.worker_id in VICTIMS for o in failed), failed
    assert report.failed == report.failures.get("worker_lost", 0)
    # Nothing completes on a killed worker after the kill (the retried ones ran elsewhere).
    assert report.completed + report.failed == report.requests


def test_the_run_with_kills_is_deterministic() -> None:
    first, second = run("decentralized").report, run("decentralized").report
    assert replace(first, wall_seconds=None) == replace(second, wall_seconds=None)

"""Faults in the simulated centralized cluster: liveness, soft state, partitions, plans."""

from __future__ import annotations

import random

import pytest

from sllm.sim.cluster import CentralizedCluster, ClusterConfig
from sllm.sim.faults import (
    HEAL,
    KILL_COORDINATOR,
    KILL_WORKER,
    PARTITION,
    RESTART_COORDINATOR,
    RESTART_WORKER,
    Fault,
    parse_loss_window,
    random_faults,
    scheduled_faults,
)
from sllm.workload.options import WorkloadOptions, make_workload

INTERVAL = 1.0
TIMEOUT = 10.0
DURATION = 60.0
ALL = [f"worker-{i}" for i in range(4)]


def cluster_and_arrivals(seed: int = 2) -> tuple[CentralizedCluster, list]:  # type: ignore[type-arg]
    config = ClusterConfig(
        workers=4, seed=seed, report_interval_s=INTERVAL, worker_timeout_s=TIMEOUT
    )
    _, arrivals = make_workload(
        WorkloadOptions(duration_s=DURATION, seed=seed, rate_rps=2.0, models=2)
    )
    return CentralizedCluster(config), arrivals


def probe(cluster: CentralizedCluster, at: float, into: dict[float, list[str]]) -> None:
    cluster.at(at, lambda _: into.__setitem__(at, cluster.known_workers()))


def test_a_killed_worker_leaves_the_view_after_worker_timeout() -> None:
    cluster, arrivals = cluster_and_arrivals()
    last_seen: list[float] = []

    def before_kill(_: None) -> None:
        core = cluster.coordinator.core
        assert core is not None
        entry = core.view.get("worker-1")
        assert entry is not None
        last_seen.append(entry.last_seen - cluster.t0)

    cluster.at(4.999, before_kill)
    result = cluster.run(arrivals, DURATION, [Fault(5.0, KILL_WORKER, ("worker-1",))])
    lost = [at for at, event, worker in result.notices if event == "worker_lost"]
    assert [w for _, e, w in result.notices if e == "worker_lost"] == ["worker-1"]
    # Dropped once silent for WORKER_TIMEOUT, no later than the next expiry check (a
    # placement also expires, so it may be sooner than the periodic check).
    period = cluster.coordinator.expiry_period_s
    assert last_seen[0] + TIMEOUT <= lost[0] <= last_seen[0] + TIMEOUT + period
    assert "worker-1" not in cluster.known_workers()
    assert result.report.run.active_workers == 3


def test_a_restarted_coordinator_relearns_the_view_within_one_report_interval() -> None:
    cluster, arrivals = cluster_and_arrivals()
    views: dict[float, list[str]] = {}
    for at in (9.9, 12.0, 15.0, 15.0 + INTERVAL + 0.01):
        probe(cluster, at, views)
    plan = [Fault(10.0, KILL_COORDINATOR), Fault(15.0, RESTART_COORDINATOR)]
    result = cluster.run(arrivals, DURATION, plan)
    assert views[9.9] == ALL
    assert views[12.0] == []  # down: nothing known
    assert views[15.0] == []  # up again with an empty view (soft state)
    assert views[15.0 + INTERVAL + 0.01] == ALL
    failures = result.report.run.failures
    assert failures.get("no_decision", 0) > 0  # requests while it was down
    assert result.report.run.requests == len(arrivals)


def test_a_restarted_worker_is_back_within_one_interval() -> None:
    cluster, arrivals = cluster_and_arrivals()
    views: dict[float, list[str]] = {}
    for at in (20.0, 30.0 + 0.01):
        probe(cluster, at, views)
    plan = [Fault(5.0, KILL_WORKER, ("worker-2",)), Fault(30.0, RESTART_WORKER, ("worker-2",))]
    cluster.run(arrivals, DURATION, plan)
    assert "worker-2" not in views[20.0]
    assert views[30.01] == ALL  # a restarted worker reports at once


def test_a_partition_hides_workers_until_healed() -> None:
    cluster, arrivals = cluster_and_arrivals()
    views: dict[float, list[str]] = {}
    for at in (5.0, 25.0, 30.0 + INTERVAL + 0.01):
        probe(cluster, at, views)
    side = ("worker-0", "worker-3")
    plan = [Fault(6.0, PARTITION, side), Fault(30.0, HEAL)]
    result = cluster.run(arrivals, DURATION, plan)
    assert views[5.0] == ALL
    assert views[25.0] == ["worker-1", "worker-2"]
    assert views[31.01] == ALL
    partitioned = result.report.simulation.datagrams["partitioned"]
    assert isinstance(partitioned, int) and partitioned > 0


def test_the_fault_log_lists_what_happened() -> None:
    cluster, arrivals = cluster_and_arrivals()
    plan = scheduled_faults(
        ALL,
        random.Random(1),
        kill_workers=2,
        kill_at=5.0,
        restart_after=5.0,
        loss_windows=[(1.0, 2.0, 0.5)],
    )
    result = cluster.run(arrivals, DURATION, plan)
    assert [row["fault"] for row in result.faults] == [
        "loss_window",
        "kill_worker",
        "restart_worker",
    ]
    killed = result.faults[1]["targets"]
    assert isinstance(killed, list) and len(killed) == 2
    assert result.faults[2]["targets"] == killed


def test_scheduled_faults_reject_plans_that_make_no_sense() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="--kill-at"):
        scheduled_faults(ALL, rng, kill_workers=1)
    with pytest.raises(ValueError, match="--kill-workers"):
        scheduled_faults(ALL, rng, kill_workers=9, kill_at=1.0)
    with pytest.raises(ValueError, match="--partition-at"):
        scheduled_faults(ALL, rng, heal_at=3.0)
    with pytest.raises(ValueError, match="unknown fault"):
        Fault(1.0, "meteor")
    with pytest.raises(ValueError):
        parse_loss_window("5", 0.1)
    assert parse_loss_window("1:2", 0.3) == (1.0, 2.0, 0.3)
    assert parse_loss_window("1:2:0.5", 0.3) == (1.0, 2.0, 0.5)


def test_random_faults_are_seeded_and_over_by_the_end() -> None:
    first = random_faults(ALL, random.Random(4), 10, 0.0, 30.0)
    assert first == random_faults(ALL, random.Random(4), 10, 0.0, 30.0)
    assert first != random_faults(ALL, random.Random(5), 10, 0.0, 30.0)
    for fault in first:
        assert 0.0 <= fault.at_s <= 30.0
        assert fault.until_s <= 30.0

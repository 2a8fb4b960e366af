"""The two measures of `sllm.core.measures`, on small hand-built counts and placements."""

from __future__ import annotations

import random

import pytest

from sllm.core.coordinator import Coordinator
from sllm.core.cost import CostModel
from sllm.core.measures import Placements, warm_placement_rate, warm_start_rate
from sllm.wire.messages import ScheduleRequest, WorkerReport
from sllm.workload import default_catalog

CATALOG = {spec.name: spec for spec in default_catalog(11)}
MODEL = "llama-3.2-1b"


def test_warm_placement_rate_is_warm_over_all_placements() -> None:
    assert warm_placement_rate(warm_placements=3, cold_placements=1) == 0.75
    assert warm_placement_rate(warm_placements=0, cold_placements=5) == 0.0
    assert warm_placement_rate(warm_placements=0, cold_placements=0) == 0.0  # none yet
    placements = Placements(warm=2, cold=1) + Placements(warm=4, cold=3)
    assert placements == Placements(warm=6, cold=4)
    assert placements.rate == 0.6


def test_warm_start_rate_is_completed_without_a_load_over_completed() -> None:
    assert warm_start_rate(completed=8, cold_starts=2) == 0.75
    assert warm_start_rate(completed=4, cold_starts=4) == 0.0
    assert warm_start_rate(completed=0, cold_starts=0) == 0.0  # none yet
    with pytest.raises(ValueError, match="3 cold starts among 2 completed"):
        warm_start_rate(completed=2, cold_starts=3)


def worker_report(models: dict[str, int]) -> WorkerReport:
    return WorkerReport(
        node_id="w1",
        host="127.0.0.1",
        port=9001,
        http_port=8001,
        models=models,
        models_omitted=0,
        queue_depth=0,
        queue_capacity=64,
        running=0,
        slots=8,
        gpu_utilization=0.0,
        memory_used=0,
        memory_total=141 * 10**9,
        load_backlog_s=0.0,
        ready=True,
        seq=1,
        timestamp=100.0,
    )


def test_a_burst_during_a_load_is_warm_placements_and_cold_starts() -> None:
    """Why the two measures differ: the first request of a burst for a model on disk is a
    cold placement; the others go where the model is now arriving, warm placements, yet
    all of them wait for the one load, so each is a cold start to its client."""
    coordinator = Coordinator(
        "startup-aware", CATALOG, CostModel(), 5.0, random.Random(0), started_at=0.0
    )
    coordinator.handle(worker_report({MODEL: 2}), 0.0)  # tier 2: on local disk
    actions = [
        coordinator.place(
            ScheduleRequest(
                request_id=f"r{i}", model=MODEL, priority=0, prompt_tokens=64, output_tokens=16
            ),
            1.0,
        ).action
        for i in range(4)
    ]
    assert actions == ["cold_start", "serve", "serve", "serve"]
    counters = coordinator.counters
    assert (counters.warm_placements, counters.cold_placements) == (3, 1)
    assert counters.warm_placement_rate == 0.75
    # The four requests all waited for the load: four cold starts in four completed.
    assert warm_start_rate(completed=4, cold_starts=4) == 0.0

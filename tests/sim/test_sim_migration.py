"""A worker migrates running requests off to make room for a load, and they finish elsewhere.

The pressure experiment's mixed fleet, small (8 workers, 24 models, three minutes at 60% of
warm capacity): loads often find the GPU held by models still in use. With migration, a
worker whose load's requests have lost as much time waiting for room as moving costs
empties the GPU of the models in the way: their running requests migrate, with the tokens
they produced, and their waiting ones go back. Deterministic (seed 0); not a timing test.
"""

from __future__ import annotations

import io

import pytest

from sllm.core.outstanding import RETRIES_EXHAUSTED
from sllm.core.worker import HANDED_BACK, MIGRATED
from sllm.experiments import pressure
from sllm.experiments.summary import Context, summarize
from sllm.sim.cluster import CentralizedCluster
from sllm.sim.progress import Progress

LEVEL = 0.6
ARMS = ("startup-aware", "startup-aware+migration")


def test_migrated_requests_finish_elsewhere_and_the_tail_shortens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clusters: list[CentralizedCluster] = []
    original = CentralizedCluster.__init__

    def keep(self: CentralizedCluster, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        clusters.append(self)

    monkeypatch.setattr(CentralizedCluster, "__init__", keep)
    ctx = Context(name="migration", progress=Progress("m", io.StringIO()))
    size = pressure.PressureSize(
        workers=8, models=24, duration_s=180.0, arms=ARMS, levels=(LEVEL,), whole_trace=False
    )
    runs = pressure.run_pressure(ctx, size)
    [without] = runs.runs[ARMS[0]][LEVEL]  # one run each: one replica
    [with_it] = runs.runs[ARMS[1]][LEVEL]
    before, after = ([worker.host.state for worker in c.workers] for c in clusters)
    assert sum(state.migrated_total for state in before) == 0  # off by default
    migrated = sum(state.migrated_total for state in after)
    handed_back = sum(state.handed_back_total for state in after)
    assert migrated > 0 and handed_back > 0
    # Every move was placed again (a move is no death: none ran out of placements); none
    # ends with the reason, none is lost, and the run served the same requests.
    assert not [o for o in with_it.outcomes if o.reason in (MIGRATED, HANDED_BACK)]
    report = with_it.report.run
    assert report.failures.get(RETRIES_EXHAUSTED, 0) == 0
    assert report.retried == migrated + handed_back
    assert report.lost == 0 and report.requests == without.report.run.requests
    # Here it shortens the tail: loads no longer wait for models that stay busy.
    assert summarize(with_it).ttft.p99 < summarize(without).ttft.p99

"""Integration: the guide's `centralized_simulation.py`, run as an operator would run it.

One run, as a subprocess from the repository root: it must exit 0, write the report with
every documented key, print each measure under its own name with one value (the state
block at the end prints the placements, the final report both measures), and leave no
process behind. The children inherit a marker variable
through their environment, so a leftover is found in /proc whoever its parent is now.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from guide_scripts import run_guide_script

from sllm.core.measures import COLD_PLACEMENTS, COLD_STARTS, WARM_PLACEMENT_RATE, WARM_START_RATE
from sllm.experiments.centralized import FINAL_STATE_HEADER
from sllm.workload.options import WorkloadOptions, make_workload

pytestmark = pytest.mark.integration

SEED = 7
DURATION_S = 3.0
RATE_RPS = 4.0
# Two models (the 1B and 3B Llamas) keep every cold start, and so the drain, to seconds;
# the default eight include a 32B model whose 47 s load from disk would outlast --drain.
MODELS = 2
RUN_TIMEOUT_S = 45.0
LABELS = (WARM_PLACEMENT_RATE, COLD_PLACEMENTS, WARM_START_RATE, COLD_STARTS)


def test_centralized_simulation_reports_and_cleans_up(tmp_path, find_marked) -> None:
    arguments = (
        *("--workers", "2", "--duration", str(DURATION_S), "--rate", str(RATE_RPS)),
        *("--coordinator-port", "0", "--base-worker-port", "0", "--drain", "20"),
        *("--seed", str(SEED), "--models", str(MODELS)),
    )
    started = time.monotonic()
    done, report = run_guide_script(
        "centralized_simulation.py",
        arguments,
        tmp_path / "report.json",
        RUN_TIMEOUT_S,
        find_marked,
    )
    elapsed = time.monotonic() - started
    assert "FINAL REPORT" in done.stdout

    keys = ("requests", "completed", "failed", "warm_start_rate", "cold_starts", "workers")
    for key in (*keys, "warm_placement_rate", "warm_placements", "cold_placements"):
        assert key in report, key
    for kind in ("ttft", "e2e", "queue"):
        latency = report["latency"][kind]
        assert 0.0 <= latency["p50"] <= latency["p95"] <= latency["p99"], (kind, latency)
    assert report["requests"] > 0
    assert report["completed"] + report["failed"] == report["requests"]
    assert report["completed"] > 0
    assert 0.0 <= report["warm_start_rate"] <= 1.0
    assert 0.0 <= report["warm_placement_rate"] <= 1.0
    check_the_measures_printed(done.stdout, report)
    assert report["active_workers"] == 2
    assert (report["seed"], report["interrupted"]) == (SEED, False)

    # Every arrival of the seeded workload became exactly one request.
    _, arrivals = make_workload(options())
    assert report["requests"] == len(arrivals)
    print(f"centralized_simulation.py: {report['requests']} requests, {elapsed:.1f} s")


def check_the_measures_printed(stdout: str, report: dict[str, Any]) -> None:
    """The end of the run (the last state block, then the final report) prints each
    measure's label with one value; the state block only the placements, the report both."""
    assert "cache hit rate" not in stdout  # the name that meant two things is gone
    assert FINAL_STATE_HEADER in stdout, stdout
    end = stdout[stdout.index(FINAL_STATE_HEADER) :]
    state_block, final_report = end.split("FINAL REPORT", 1)
    values = {label: set(re.findall(rf"(?<![a-z]){label} ([0-9.]+%?)", end)) for label in LABELS}
    for label, found in values.items():
        assert len(found) == 1, (label, found, end)
    assert values[WARM_PLACEMENT_RATE] == {f"{report['warm_placement_rate']:.1%}"}
    assert values[COLD_PLACEMENTS] == {str(report["cold_placements"])}
    assert values[WARM_START_RATE] == {f"{report['warm_start_rate']:.1%}"}
    assert values[COLD_STARTS] == {str(report["cold_starts"])}
    for label in LABELS:
        assert label in final_report, label
    assert WARM_PLACEMENT_RATE in state_block and COLD_PLACEMENTS in state_block
    assert WARM_START_RATE not in state_block and COLD_STARTS not in state_block


def options(seed: int = SEED) -> WorkloadOptions:
    return WorkloadOptions(duration_s=DURATION_S, seed=seed, rate_rps=RATE_RPS, models=MODELS)


def test_the_same_seed_gives_the_same_workload() -> None:
    models, arrivals = make_workload(options())
    again_models, again = make_workload(options())
    assert arrivals
    assert (models, arrivals) == (again_models, again)
    assert make_workload(options(SEED + 1))[1] != arrivals

"""The pressure experiment: the mechanisms of issue 21 against seed on a small mixed fleet.

Deterministic (seed 0, the simulator's seeded streams); not a timing test. The margins are
the issue's targets, on one scenario small enough for the test suite: a policy that does
not act on the estimate fails them (plain startup-aware reaches 0.74x p99, 0.41x failures).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
from pathlib import Path

import pytest

from sllm.catalog import served_catalog
from sllm.core.placement import policy_names
from sllm.core.worker import GB
from sllm.experiments import plots, suite
from sllm.experiments.pressure import (
    ARMS,
    BOUND_GRID_MAX,
    BOUND_STEP_S,
    KINDS,
    REPLICA_SEED_STEP,
    SLOTS,
    PressureSize,
    analyse_pressure,
    best_arm,
    failure_kinds,
    fewest_failures,
    fit_demands,
    meets_targets,
    run_pressure,
    warm_capacity_rps,
    write_pressure,
)
from sllm.experiments.summary import Context, RunOptions, RunSummary, summarize
from sllm.hosts.client import RESULT_TIMEOUT_S
from sllm.sim import cli
from sllm.sim.cluster import SimResult
from sllm.sim.decentralized import node_config_for
from sllm.sim.progress import Progress
from sllm.sim.report import distribution
from sllm.workload.options import WorkloadOptions, make_workload

LEVEL = 0.9
# The arm that meets both targets here (0.34x p99, 0.37x failures). startup-aware+all did
# until admission counted the wait for a load under way: it now refuses 0.60x seed's.
BEST = "startup-aware+admission+migration"
SMALL_FLEET = PressureSize(
    workers=8,
    models=24,
    duration_s=180.0,
    whole_trace=False,
    arms=("seed", "startup-aware", BEST),
    levels=(LEVEL,),
)


def test_acting_on_the_estimate_beats_seed_on_a_pressured_mixed_fleet() -> None:
    with Progress("pressure") as progress:
        ctx = Context(name="pressure", progress=progress)
        result = analyse_pressure(run_pressure(ctx, SMALL_FLEET))
    seed = result.figures["seed"][LEVEL].summary
    best = result.figures[BEST][LEVEL]
    assert seed.failed > 100  # the scenario is pressured: seed fails hundreds
    assert best.ttft_p99_vs_seed is not None and best.ttft_p99_vs_seed <= 0.5
    assert best.failed_vs_seed is not None and best.failed_vs_seed <= 0.5
    assert best_arm(result, LEVEL) == BEST
    assert sum(failure_kinds(best.summary)) == best.summary.failed
    # An arm with a lower p99 that fails too many (more than half seed's, fewer than
    # seed's) is not the best arm while another meets both targets; alone, it is.
    faster = dataclasses.replace(
        best,
        summary=dataclasses.replace(
            best.summary,
            ttft=dataclasses.replace(best.summary.ttft, p99=best.summary.ttft.p99 / 2),
        ),
        ttft_p99_vs_seed=best.ttft_p99_vs_seed / 2,
        failed_vs_seed=0.9,
    )
    crowded = dataclasses.replace(
        result, figures={**result.figures, "startup-aware": {LEVEL: faster}}
    )
    assert not meets_targets(faster) and meets_targets(best)
    assert best_arm(crowded, LEVEL) == BEST
    alone = {arm: crowded.figures[arm] for arm in ("seed", "startup-aware")}
    assert best_arm(dataclasses.replace(crowded, figures=alone), LEVEL) == "startup-aware"
    markdown = write_pressure(result)
    assert f"| 90% | {BEST} |" in markdown and "| met |" in markdown
    assert "## Demand on the large GPUs" in markdown and "| 90% | b200 |" in markdown
    # Startup-aware's requests over the p99 target, as bound and from one queue a model
    # (`sllm.experiments.binding`): here the queue leaves fewer over it, not none.
    bound = result.binding[LEVEL]
    assert bound.completed == result.figures["startup-aware"][LEVEL].summary.completed
    assert 0 < bound.over_target_shared <= bound.over_target
    assert "## Binding at arrival" in markdown
    assert result.as_dict()["binding"]["arm"] == "startup-aware"


def test_the_fleet_is_mixed_and_every_arm_names_a_registered_policy() -> None:
    gpus = {kind.resources.gpu_bytes for kind in KINDS}
    disks = {kind.cost.disk_bandwidth_Bps for kind in KINDS}
    hosts = {kind.resources.host_bytes for kind in KINDS}
    assert len(gpus) >= 3 and len(disks) >= 3 and len(hosts) >= 3
    assert {arm.policy for arm in ARMS.values()} <= set(policy_names())


def test_warm_capacity_is_slots_over_the_mean_service_time() -> None:
    options = WorkloadOptions(duration_s=60.0, seed=0, models=8, rate_rps=2.0)
    one = warm_capacity_rps(options, workers=1, slots=1)
    assert warm_capacity_rps(options, workers=5, slots=4) == 20 * one
    assert 0.05 < 1.0 / one < 60.0  # a mean request takes between 50 ms and a minute


def test_hours_sets_each_runs_simulated_duration(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="sllm")
    suite.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["experiment", "pressure", "--quick", "--hours", "0.01", "--out", str(tmp_path)]
    )
    assert args.run(args) == 0
    document = json.loads((tmp_path / "pressure.json").read_text())
    assert document["setup"]["durations_s"] == [36.0, 36.0]  # the quick levels, 30% and 120%
    for arm in document["centralized"].values():
        for figures in arm.values():
            assert {"ttft", "failed", "failures", "ttft_p99_vs_seed", "failed_vs_seed"} <= set(
                figures
            )
    bad = parser.parse_args(["experiment", "pressure", "--hours", "0", "--out", str(tmp_path)])
    assert bad.run(bad) == 2


def test_levels_runs_only_the_levels_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="sllm")
    suite.add_parser(parser.add_subparsers(dest="command", required=True))
    quick = ["experiment", "pressure", "--quick", "--hours", "0.01", "--out", str(tmp_path)]
    args = parser.parse_args([*quick, "--levels", "0.6"])
    assert args.run(args) == 0
    document = json.loads((tmp_path / "pressure.json").read_text())
    assert document["setup"]["levels"] == [0.6]
    assert all(list(arm) == ["0.6"] for arm in document["centralized"].values())
    for levels, problem in [
        ("0.3,0.3", "distinct"),
        ("0", "(0, 10]"),
        ("low", "separated by commas"),
    ]:
        bad = parser.parse_args([*quick, "--levels", levels])
        assert bad.run(bad) == 2
        assert problem in capsys.readouterr().err
    other = parser.parse_args(["experiment", "exp1", "--levels", "0.3", "--out", str(tmp_path)])
    assert other.run(other) == 2
    assert "--levels is for pressure only" in capsys.readouterr().err


def test_sllm_simulate_selects_each_mechanism_by_name() -> None:
    parser = argparse.ArgumentParser(prog="sllm")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    flags = "--keep-alive-policy histogram --eviction expected-cost --prefetch --migrate"
    args = parser.parse_args(
        ["simulate", *flags.split(), "--admission-deadline", "30", "--refusal-retries", "2"]
    )
    assert cli.check_arguments(args) == []
    config = cli.build_config(args)
    assert config.refusal_retries == 2
    resources = config.resources
    assert (resources.keep_alive_policy, resources.eviction, resources.prefetch) == (
        "histogram",
        "expected-cost",
        True,
    )
    assert config.admission_deadline_s == 30.0
    assert resources.migrate and not resources.hand_back
    plain = parser.parse_args(
        ["simulate", "--prefetch", "--admission-deadline", "0", "--refusal-retries", "-1"]
    )
    assert cli.check_arguments(plain) == [
        "--prefetch needs --keep-alive-policy histogram",
        "--admission-deadline must be > 0",
        "--refusal-retries must be >= 0",
    ]
    gossip = parser.parse_args(["simulate", "--mode", "decentralized", "--admission-deadline", "9"])
    assert cli.check_arguments(gossip) == []  # every node admits by the deadline too
    assert node_config_for(cli.build_config(gossip)).admission_deadline_s == 9.0


def test_decentralized_nodes_refuse_by_the_deadline_too() -> None:
    """Each node admits by its own view: overloaded, the requests its estimate says would
    wait past the deadline are refused at once (``over_deadline``), none without one."""
    from sllm.core.coordinator import OVER_DEADLINE
    from sllm.sim.cluster import ClusterConfig
    from sllm.sim.decentralized import DecentralizedCluster
    from sllm.workload.options import make_workload

    options = WorkloadOptions(duration_s=40.0, seed=0, rate_rps=60.0, models=4)
    refused = {}
    for deadline in (None, 5.0):
        config = ClusterConfig(workers=4, seed=0, admission_deadline_s=deadline)
        _, arrivals = make_workload(options)
        result = DecentralizedCluster(config).run(arrivals, options.duration_s)
        refused[deadline] = sum(1 for o in result.outcomes if OVER_DEADLINE in o.reason)
    assert refused[None] == 0
    assert refused[5.0] > 0, refused


@pytest.mark.parametrize("mode", ["centralized", "decentralized"])
def test_clients_that_ask_again_after_a_refusal_turn_refusals_into_answers(mode: str) -> None:
    """Over the admission deadline, a client that waits the Retry-After and asks again
    (twice, as the official openai client) is served where one that does not fails; every
    request still ends exactly once."""
    from sllm.sim.cluster import CentralizedCluster, ClusterConfig
    from sllm.sim.decentralized import DecentralizedCluster
    from sllm.workload.options import make_workload

    options = WorkloadOptions(duration_s=40.0, seed=0, rate_rps=60.0, models=4)
    served = {}
    for retries in (0, 2):
        config = ClusterConfig(workers=4, seed=0, admission_deadline_s=5.0, refusal_retries=retries)
        _, arrivals = make_workload(options)
        cluster = CentralizedCluster if mode == "centralized" else DecentralizedCluster
        outcomes = cluster(config).run(arrivals, options.duration_s).outcomes
        assert len({o.request_id for o in outcomes}) == len(outcomes) == len(arrivals)
        served[retries] = sum(o.ok for o in outcomes)
    assert served[0] < served[2], served


@pytest.mark.parametrize("mode", ["centralized", "decentralized"])
def test_a_held_queue_serves_what_the_deadline_would_refuse(mode: str) -> None:
    """Over the admission deadline, holding a request until the deadline admits it (the
    held queue) serves requests that an early refusal fails; every request still ends
    exactly once, and none waits past its hold for a decision."""
    from sllm.core.coordinator import OVER_DEADLINE
    from sllm.sim.cluster import CentralizedCluster, ClusterConfig
    from sllm.sim.decentralized import DecentralizedCluster
    from sllm.workload.options import make_workload

    options = WorkloadOptions(duration_s=40.0, seed=0, rate_rps=60.0, models=4)
    served, refused = {}, {}
    for hold in (None, 20.0):
        config = ClusterConfig(workers=4, seed=0, admission_deadline_s=5.0, admission_hold_s=hold)
        _, arrivals = make_workload(options)
        cluster = CentralizedCluster if mode == "centralized" else DecentralizedCluster
        outcomes = cluster(config).run(arrivals, options.duration_s).outcomes
        assert len({o.request_id for o in outcomes}) == len(outcomes) == len(arrivals)
        assert not any(o.reason == "no_decision" for o in outcomes)
        served[hold] = sum(o.ok for o in outcomes)
        refused[hold] = sum(OVER_DEADLINE in o.reason for o in outcomes)
    assert served[None] < served[20.0], served
    assert refused[20.0] < refused[None], refused


def test_the_held_queue_is_an_option_of_simulate_and_needs_a_deadline() -> None:
    from sllm.sim.cluster import ClusterConfig

    parser = argparse.ArgumentParser(prog="sllm")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", "--admission-deadline", "30", "--admission-hold", "45"])
    assert cli.check_arguments(args) == []
    assert cli.build_config(args).admission_hold_s == 45.0
    gossip = parser.parse_args(
        [
            "simulate",
            "--mode",
            "decentralized",
            "--admission-deadline",
            "9",
            "--admission-hold",
            "9",
        ]
    )
    assert node_config_for(cli.build_config(gossip)).admission_hold_s == 9.0
    alone = parser.parse_args(["simulate", "--admission-hold", "45"])
    assert cli.check_arguments(alone) == [
        "--admission-hold must be > 0 and needs --admission-deadline"
    ]
    with pytest.raises(ValueError, match="admission hold"):
        ClusterConfig(workers=4, admission_hold_s=45.0)


def test_the_fewest_failures_shed_the_longest_requests_that_cannot_fit() -> None:
    # One slot, 15 s until the run ends: of two 10 s requests, one must fail.
    assert fewest_failures([0.0, 0.0], [10.0, 10.0], slots=1, end_s=15.0) == 1
    assert fewest_failures([0.0, 0.0], [10.0, 10.0], slots=2, end_s=15.0) == 0
    # Shedding the longest first: one 50 s request goes, not three of 1 s.
    assert fewest_failures([0.0, 0.0, 0.0, 0.0], [50.0, 1.0, 1.0, 1.0], slots=1, end_s=40.0) == 1
    # However long the run, a burst must run before its result timeout: 40 requests of
    # 10 s arriving together on one slot have RESULT_TIMEOUT_S of it (the bound gives
    # them the deadline of the window's end, one grid step later).
    end_s = BOUND_STEP_S * BOUND_GRID_MAX  # the longest run with the finest grid
    burst = fewest_failures([0.0] * 40, [10.0] * 40, slots=1, end_s=end_s)
    assert burst == 40 - int((RESULT_TIMEOUT_S + BOUND_STEP_S) // 10)
    # The same work spread over the run fits.
    spread = [step * end_s / 40 for step in range(40)]
    assert fewest_failures(spread, [10.0] * 40, slots=1, end_s=end_s) == 0
    # A run twice as long has a grid twice as coarse: the burst's window is longer, and
    # the bound looser, never higher.
    coarse = fewest_failures([0.0] * 40, [10.0] * 40, slots=1, end_s=2 * end_s)
    assert coarse == 40 - int((RESULT_TIMEOUT_S + 2 * BOUND_STEP_S) // 10)


def test_the_demand_on_the_large_gpus_counts_only_what_no_smaller_gpu_holds() -> None:
    options = WorkloadOptions(duration_s=120.0, seed=0, models=64, rate_rps=20.0)
    _, arrivals = make_workload(options)
    demands = fit_demands(arrivals, workers=8, models=64, duration_s=120.0)
    by_kinds = {demand.kinds: demand for demand in demands}
    assert set(by_kinds) == {("h200", "h200-sata", "b200"), ("b200",)}
    largest, large = by_kinds[("b200",)], by_kinds[("h200", "h200-sata", "b200")]
    assert largest.slots == 2 * SLOTS and large.slots == 6 * SLOTS  # 8 workers, cycled
    catalog = served_catalog(64)
    over_141 = [a for a in arrivals if catalog[a.model].size_bytes > 141 * GB]
    over_80 = [a for a in arrivals if catalog[a.model].size_bytes > 80 * GB]
    assert largest.requests == len(over_141) > 0
    assert large.requests == len(over_80) > largest.requests
    assert 0 < largest.busy_slots < large.busy_slots


def test_seeds_runs_the_experiment_once_per_seed_and_tallies_what_each_meets(
    tmp_path: Path,
) -> None:
    parser = argparse.ArgumentParser(prog="sllm")
    suite.add_parser(parser.add_subparsers(dest="command", required=True))
    quick = ["--quick", "--hours", "0.01", "--seeds", "0,1"]
    args = parser.parse_args(
        ["experiment", "pressure", *quick, "--jobs", "1", "--out", str(tmp_path)]
    )
    assert args.run(args) == 0
    tally = json.loads((tmp_path / "pressure-seeds.json").read_text())
    # Seeds run side by side, each in a process of its own, come to the same tally.
    apart = tmp_path / "apart"
    args = parser.parse_args(["experiment", "pressure", *quick, "--jobs", "2", "--out", str(apart)])
    assert args.run(args) == 0
    assert json.loads((apart / "pressure-seeds.json").read_text()) == tally
    assert tally["seeds"] == [0, 1] and tally["cells"] == 2 * len(tally["levels"])
    met = twins_within = twins = 0
    for seed in (0, 1):
        # each seed's own report is written as a single run writes it, and the tally
        # counts what that report says
        report = json.loads((tmp_path / f"seed-{seed}" / "pressure.json").read_text())
        assert report["setup"]["seed"] == seed
        for level, cell in tally["by_seed"][str(seed)]["levels"].items():
            figures = report["centralized"][cell["best_arm"]][level]
            assert cell["ttft_p99_vs_seed"] == figures["ttft_p99_vs_seed"]
            p99, failed = figures["ttft_p99_vs_seed"], figures["failed_vs_seed"]
            meets = p99 <= 0.5 and (failed is None or failed <= 0.5)
            assert cell["met"] == meets
            met += meets
        for arm, levels in report["decentralized"].items():
            central = report["centralized"][arm.removesuffix(" (decentralized)")]
            for level, figures in levels.items():
                twins += 1
                twins_within += figures["ttft"]["p99"] <= 1.2 * central[level]["ttft"]["p99"]
    assert tally["cells_met"] == met
    assert (tally["twins_within"], tally["twins"]) == (twins_within, twins)
    markdown = (tmp_path / "pressure-seeds.md").read_text()
    assert f"Targets met in {met} of {tally['cells']} level-seed cells" in markdown
    if plots.unavailable() is None:
        assert (tmp_path / "pressure-seeds-tally.png").stat().st_size > 0
        assert "![pressure-seeds-tally.png](pressure-seeds-tally.png)" in markdown


@pytest.mark.parametrize(
    ("seeds", "problem"),
    [
        ("0,0", "distinct"),
        ("1,x", "separated by commas"),
        ("-1", ">= 0"),
    ],
)
def test_seeds_must_be_a_list_of_distinct_seeds(
    seeds: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="sllm")
    suite.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["experiment", "pressure", "--seeds", seeds, "--out", str(tmp_path)])
    assert args.run(args) == 2
    assert problem in capsys.readouterr().err
    other = parser.parse_args(["experiment", "exp1", "--seeds", "0", "--out", str(tmp_path)])
    assert other.run(other) == 2
    assert "--seeds is for pressure only" in capsys.readouterr().err
    idle = parser.parse_args(
        ["experiment", "pressure", "--seeds", "0", "--jobs", "0", "--out", str(tmp_path)]
    )
    assert idle.run(idle) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran
    for name, replicas, problem in [
        ("pressure", "0", "--replicas must be >= 1"),
        ("exp1", "2", "--replicas is for pressure only"),
    ]:
        bad = parser.parse_args(
            ["experiment", name, "--replicas", replicas, "--out", str(tmp_path)]
        )
        assert bad.run(bad) == 2
        assert problem in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_replicas_pool_runs_with_the_same_arrivals_and_other_cluster_seeds() -> None:
    """One replica is the experiment as it always ran; more add runs whose cluster seed
    differs, pooled: counts summed, percentiles over every completed request."""
    size = PressureSize(
        workers=4, models=8, duration_s=60.0, whole_trace=False, arms=("seed",), levels=(0.9,)
    )

    def run(replicas: int) -> tuple[tuple[int, ...], tuple[SimResult, ...], RunSummary]:
        with Progress("pressure", io.StringIO()) as bar:
            ctx = Context(
                name="pressure", progress=bar, options=RunOptions(seed=3, replicas=replicas)
            )
            runs = run_pressure(ctx, size)
        figures = analyse_pressure(runs).figures["seed"][0.9].summary
        return runs.setup.cluster_seeds, runs.runs["seed"][0.9], figures

    seeds_one, [alone], summary_one = run(1)
    seeds, (first, second), pooled = run(2)
    assert seeds_one == (3,) and seeds == (3, 3 + REPLICA_SEED_STEP)
    assert summary_one == summarize(alone)
    assert summarize(first).ttft == summarize(alone).ttft  # replica 0 is the single run
    # Same arrivals: the same requests, placed and timed differently.
    assert sorted(o.request_id for o in first.outcomes) == sorted(
        o.request_id for o in second.outcomes
    )
    assert summarize(second).ttft != summarize(first).ttft
    one, two = summarize(first), summarize(second)
    assert pooled.requests == one.requests + two.requests
    assert pooled.failed == one.failed + two.failed
    ttfts = [o.ttft_s for result in (first, second) for o in result.outcomes if o.ok]
    assert pooled.ttft == distribution(ttfts)
    assert min(one.ttft.p99, two.ttft.p99) <= pooled.ttft.p99 <= max(one.ttft.p99, two.ttft.p99)


def test_without_the_shipped_trace_poisson_stands_in_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An installed package has no data/ folder: the run goes on, on stderr and in the report."""
    import sllm.experiments.pressure as pressure

    monkeypatch.setattr(pressure, "SHIPPED_TRACE", tmp_path / "no-such-trace.csv")
    size = PressureSize(workers=4, models=8, duration_s=20.0, arms=("seed",), levels=(0.3,))
    with Progress("pressure") as bar:
        runs = run_pressure(Context(name="pressure", progress=bar), size)
    assert runs.setup.trace.startswith("none: Poisson arrivals")
    warning = capsys.readouterr().err
    assert "no trace at" in warning and "Poisson arrivals" in warning

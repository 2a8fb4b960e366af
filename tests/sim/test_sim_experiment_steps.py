"""The experiments' steps one at a time: analysis from hand-built runs, Markdown from a
hand-built result, and nothing simulated.

Why: the end-to-end tests (test_sim_experiments.py) run every step at once and check the
shape of the files; these check the figures themselves, from inputs small enough to
compute by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sllm.core.outstanding import RequestOutcome
from sllm.core.placement import policy_names
from sllm.experiments import performance, pressure, recovery, scale, spread
from sllm.experiments import summary as summary_module
from sllm.experiments.suite import EXPERIMENTS
from sllm.experiments.summary import (
    CENTRALIZED,
    DECENTRALIZED,
    MODES,
    Context,
    Experiment,
    Plots,
    RunOptions,
    RunSummary,
    Written,
    experiment_document,
)
from sllm.sim.cluster import ClusterConfig, SimResult, SimulatedCluster
from sllm.sim.faults import Fault
from sllm.sim.progress import Progress
from sllm.sim.report import (
    Distribution,
    Json,
    LinkFigures,
    PlaneTraffic,
    Rate,
    SimReport,
    SimulationSection,
    build_report,
)
from sllm.workload.options import WorkloadOptions

NO_RATE = Rate(messages_per_s=0.0, bytes_per_s=0.0)
NO_TRAFFIC = PlaneTraffic(
    messages=0,
    bytes=0,
    messages_per_s=0.0,
    bytes_per_s=0.0,
    per_role={"coordinator": NO_RATE},
    worker_mean=NO_RATE,
    worker_max=NO_RATE,
)


def hand_built_run(
    outcomes: Sequence[RequestOutcome],
    spans: Sequence[tuple[float, float]],
    notices: Sequence[tuple[float, str, str]] = (),
) -> SimResult:
    """A finished run as the simulator would hand it over, without simulating anything."""
    section = SimulationSection(
        workers=2,
        simulated_seconds=12.0,
        report_interval_s=1.0,
        worker_timeout_s=3.0,
        link=LinkFigures(latency_ms=0.25, jitter_ms=0.0, loss=0.0, duplicate=0.0),
        datagrams={},
        by_type={},
        control=NO_TRAFFIC,
        data=NO_TRAFFIC,
        membership={"detection_bound_s": 2.5},
        faults=({"fault": "kill_worker", "at_s": 4.0},),
    )
    report = SimReport(
        run=build_report(outcomes, {}, 2), events=100, simulation=section, wall_seconds=0.5
    )
    return SimResult(
        report=report,
        outcomes=list(outcomes),
        spans=list(spans),
        samples={},
        series={},
        notices=list(notices),
        faults=[{"fault": "kill_worker", "at_s": 4.0}],
        events=100,
        wall_seconds=0.5,
        simulated_seconds=12.0,
    )


def one_a_second(failing: set[int]) -> SimResult:
    """Twelve requests, one arriving each second; those arriving in `failing` seconds fail."""
    outcomes = [
        RequestOutcome(
            request_id=f"r{second}",
            model="m",
            ok=second not in failing,
            reason="worker_lost" if second in failing else "",
            worker_id="worker-0",
        )
        for second in range(12)
    ]
    spans = [(second + 0.1, second + 0.5) for second in range(12)]
    return hand_built_run(outcomes, spans)


def test_exp2_analysis_from_hand_built_runs() -> None:
    setup = recovery.RecoverySetup(
        workers=2,
        models=1,
        rate_rps=1.0,
        duration_s=12.0,
        kill_at_s=4.0,
        coordinator_down_s=1.0,
        killed_workers=("worker-1",),
        seed=0,
        policy="startup-aware",
        detection_bound_s=2.5,
    )
    coordinator = one_a_second(failing={4, 5})
    coordinator.notices.extend(
        [(1.0, "worker_joined", "worker-0"), (5.5, "worker_joined", "worker-0")]
    )
    coordinator.notices.append((5.75, "worker_joined", "worker-1"))
    workers = one_a_second(failing={4})
    workers.notices.append((7.0, "worker_lost", "worker-1"))
    runs = recovery.RecoveryRuns(
        setup=setup,
        coordinator=coordinator,
        workers=workers,
        nodes=one_a_second(failing=set()),
        nodes_detected_s=1.5,
    )
    result = recovery.analyse_exp2(runs)
    arm = result.coordinator
    assert arm.timeline.arrivals == [1.0] * 12
    assert arm.timeline.success_rate == [1.0] * 4 + [0.0] * 2 + [1.0] * 6
    assert arm.timeline.failures == [0.0] * 4 + [1.0] * 2 + [0.0] * 6
    # Success is back from second 6 on, for the whole 5-second window: 2 s after the kill.
    assert arm.time_to_recovery_s == 2.0
    assert arm.success_rate == round(10 / 12, 6)
    assert arm.detection == {"view_recovered_s": 0.75}  # both workers back 0.75 s after 5 s
    assert result.workers.time_to_recovery_s == 1.0
    assert result.workers.detection == {"failure_detected_s": 3.0}
    assert result.nodes.time_to_recovery_s == 0.0
    assert result.nodes.detection == {"failure_detected_s": 1.5, "detection_bound_s": 2.5}
    document = result.as_dict()
    arms = document["centralized"]
    assert isinstance(arms, dict) and list(arms) == ["coordinator", "workers"]
    assert arms["coordinator"]["time_to_recovery_s"] == 2.0
    assert arms["coordinator"]["failures"] == {"worker_lost": 2}
    text = recovery.write_exp2(result)
    assert "| coordinator | 12 | 83.3% | 2.0 | worker_lost: 2 |" in text
    assert "| nodes | 12 | 100.0% | 0.0 | none |" in text
    assert "knew every worker again 0.750 s after it came back" in text


def test_exp2_counts_an_unfinished_request_when_its_client_gave_up_on_it() -> None:
    """A request still unfinished when the drain ended (after the window) failed for its
    client RESULT_TIMEOUT_S after it arrived: the failures panel shows it there, and one
    whose timeout falls past the window in the window's last second."""
    from sllm.core.outstanding import UNFINISHED
    from sllm.hosts.client import RESULT_TIMEOUT_S

    seconds = int(RESULT_TIMEOUT_S) + 60
    arrivals = [5.2, seconds - 3.0]
    outcomes = [
        RequestOutcome(request_id=f"u{i}", model="m", ok=False, reason=UNFINISHED, worker_id="")
        for i in range(len(arrivals))
    ]
    drained = seconds + 100.0  # when the drain ended them
    run = hand_built_run(outcomes, [(arrival, drained) for arrival in arrivals])
    line = recovery.timeline(run, seconds)
    assert sum(line.failures) == 2
    assert line.failures[int(5.2 + RESULT_TIMEOUT_S)] == 1.0
    assert line.failures[seconds - 1] == 1.0


def summary(completed: int, warm: float, ttft_p99: float) -> RunSummary:
    latency = Distribution(p50=ttft_p99 / 2, p95=ttft_p99, p99=ttft_p99, mean=ttft_p99 / 2)
    return RunSummary(
        requests=10,
        completed=completed,
        failed=10 - completed,
        failures={"no_result": 10 - completed} if completed < 10 else {},
        warm_start_rate=warm,
        cold_starts=1,
        warm_placement_rate=None,
        cold_start_rate=round(1 / completed, 6),
        ttft=latency,
        e2e=latency,
        queue=latency,
        control=NO_TRAFFIC,
        events=1000,
        wall_seconds=0.25,
    )


def test_exp1_markdown_from_a_hand_built_result() -> None:
    base, better = summary(9, 0.5, 2.0), summary(10, 0.9, 1.0)
    by_policy = {
        "seed": performance.PolicyFigures(summary=base, vs_seed=performance.versus(base, base)),
        "startup-aware": performance.PolicyFigures(
            summary=better, vs_seed=performance.versus(better, base)
        ),
    }
    result = performance.PerformanceResult(
        setup=performance.PerformanceSetup(
            workers=4, models=2, rate_rps=3.0, duration_s=60.0, seed=7, baseline="seed"
        ),
        by_mode={CENTRALIZED: by_policy, DECENTRALIZED: by_policy},
        latencies={},
    )
    assert by_policy["startup-aware"].vs_seed.ttft_p99 == 0.5
    assert by_policy["startup-aware"].vs_seed.warm_start_rate_delta == 0.4
    text = performance.write_exp1(result)
    assert text.startswith("# exp1: performance of the placement policies\n")
    assert "4 workers, 2 models" in text and "seed 7." in text
    rows = [line for line in text.splitlines() if line.startswith("| startup-aware |")]
    # Both architectures' tables, then the comparison of the two.
    assert rows[0] == (
        "| startup-aware | 10 | 0 | 90.0% | 1 | n/a | 0.500 | 1.000 | 0.500 | 1.000 | 0.50 | 0.50 |"
    )
    assert rows[1] == rows[0]
    assert rows[2] == "| startup-aware | 90.0% / 90.0% | 1.00 | 1.00 |"
    document = result.as_dict()
    assert document["experiment"] == "exp1"
    entry = document[CENTRALIZED]["startup-aware"]  # type: ignore[index]
    assert entry["vs_seed"]["ttft_p99"] == 0.5
    assert entry["ttft"] == {"p50": 0.5, "p95": 1.0, "p99": 1.0, "mean": 0.5}


# -- what every experiment shares (`sllm.experiments.summary`) -------------------------------


class RecordingContext(Context):
    """A context whose runs are recorded, not simulated."""

    def simulate(
        self,
        config: ClusterConfig,
        options: WorkloadOptions,
        faults: Sequence[Fault] = (),
        mode: str = CENTRALIZED,
        prepare: Callable[[SimulatedCluster], object] | None = None,
    ) -> SimResult:
        self.asked.append((mode, config))
        self.runs_done += 1
        return hand_built_run([], [])

    asked: list[tuple[str, ClusterConfig]]


def _recording_context(seed: int) -> RecordingContext:
    ctx = RecordingContext(
        name="test", progress=Progress("test"), options=RunOptions(quick=True, seed=seed)
    )
    ctx.asked = []
    return ctx


def test_progress_weighs_each_run_by_its_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs, the second nine times the work: halfway through the first is 5% done,
    and the first's end 10%, whatever the count of runs says."""

    class Recorded(Progress):
        def __init__(self) -> None:
            super().__init__("test")
            self.fractions: list[tuple[float, str]] = []

        def update(self, fraction: float, note: str = "") -> None:
            self.fractions.append((round(fraction, 6), note))

    class Halfway(SimulatedCluster):
        """Stands in for a cluster: reports half, then all of its run."""

        def __init__(self, config: ClusterConfig) -> None:
            self.config = config

        def run(self, arrivals, duration_s, faults=(), progress=None):  # type: ignore[no-untyped-def]
            assert progress is not None
            progress(0.5)
            progress(1.0)
            return hand_built_run([], [])

    monkeypatch.setattr(summary_module, "CLUSTERS", {CENTRALIZED: Halfway})
    progress = Recorded()
    ctx = Context(name="test", progress=progress, options=RunOptions(quick=True))
    ctx.plan([1.0, 9.0])
    options = WorkloadOptions(duration_s=1.0, rate_rps=1.0, models=1)
    for _ in range(2):
        ctx.simulate(ClusterConfig(workers=1), options, prepare=None, mode=CENTRALIZED)
    assert progress.fractions[:2] == [(0.05, "run 1/2"), (0.1, "run 1/2")]
    assert progress.fractions[2:] == [(0.55, "run 2/2"), (1.0, "run 2/2")]


def test_every_policy_runs_each_policy_in_each_mode_with_the_experiments_seed() -> None:
    ctx = _recording_context(seed=7)
    options = WorkloadOptions(duration_s=5.0, seed=7, rate_rps=1.0, models=2)
    runs = ctx.every_policy(options, workers=3, record_series=True)
    policies = policy_names()
    assert list(runs) == list(MODES) == [CENTRALIZED, DECENTRALIZED]
    assert all(list(by_policy) == list(policies) for by_policy in runs.values())
    assert len(ctx.planned) == len(policies) * len(MODES) == len(ctx.asked)
    # a gossiping run costs the simulator far more than a centralized one
    assert ctx.planned[-1] > 10 * ctx.planned[0]
    assert ctx.asked == [
        (mode, ClusterConfig(workers=3, policy=policy, seed=7, record_series=True))
        for mode in MODES
        for policy in policies
    ]


def test_an_experiment_runs_analyses_plots_and_writes_in_that_order(tmp_path: Path) -> None:
    steps: list[str] = []

    class Figures:
        def as_dict(self) -> Json:
            steps.append("as_dict")
            return {"experiment": "test"}

    def run(ctx: Context) -> str:
        steps.append("run")
        return "runs"

    def analyse(runs: str) -> Figures:
        steps.append(f"analyse {runs}")
        return Figures()

    def write(result: Figures) -> str:
        steps.append("write")
        return "# test"

    def plot(result: Figures, plots: Plots) -> None:
        steps.append(f"plot into {plots.name}")

    experiment = Experiment(run=run, analyse=analyse, write=write, plot=plot)
    _, written = experiment.carry_out(
        _recording_context(seed=0), Plots(folder=tmp_path, name="test")
    )
    assert written == Written(document={"experiment": "test"}, markdown="# test")
    assert steps == ["run", "analyse runs", "plot into test", "as_dict", "write"]


def test_the_suite_names_each_experiments_own_steps() -> None:
    modules = {
        "exp1": performance,
        "exp2": recovery,
        "exp3": spread,
        "scale": scale,
        "pressure": pressure,
    }
    assert set(EXPERIMENTS) == set(modules)
    for name, module in modules.items():
        experiment = EXPERIMENTS[name]
        suffix = name
        assert experiment.run is getattr(module, f"run_{suffix}")
        assert experiment.analyse is getattr(module, f"analyse_{suffix}")
        assert experiment.write is getattr(module, f"write_{suffix}")
        assert experiment.plot is getattr(module, f"plot_{suffix}")


class Figure:
    def __init__(self, value: int) -> None:
        self.value = value

    def as_dict(self) -> Json:
        return {"value": self.value}


def test_an_experiment_document_is_name_setup_then_each_modes_keyed_entries() -> None:
    document = experiment_document(
        experiment="exp9",
        setup=Figure(1),
        by_mode={CENTRALIZED: {"a": Figure(2), "b": Figure(3)}, DECENTRALIZED: {"c": Figure(4)}},
    )
    assert document == {
        "experiment": "exp9",
        "setup": {"value": 1},
        CENTRALIZED: {"a": {"value": 2}, "b": {"value": 3}},
        DECENTRALIZED: {"c": {"value": 4}},
    }
    assert list(document) == ["experiment", "setup", CENTRALIZED, DECENTRALIZED]
    assert list(document[CENTRALIZED]) == ["a", "b"]  # type: ignore[call-overload]


def test_keyed_experiments_write_their_json_in_the_shared_shape() -> None:
    """exp1 and exp3 write, through `experiment_document`, the shape scale writes."""
    exp1 = performance.PerformanceResult(
        setup=performance.PerformanceSetup(
            workers=1, models=1, rate_rps=1.0, duration_s=1.0, seed=0, baseline="seed"
        ),
        by_mode={CENTRALIZED: {}, DECENTRALIZED: {}},
        latencies={},
    )
    exp3 = spread.SpreadResult(
        setup=spread.SpreadSetup(workers=1, models=1, rate_rps=1.0, duration_s=1.0, seed=0),
        by_mode={CENTRALIZED: {}, DECENTRALIZED: {}},
    )
    for name, result in (("exp1", exp1), ("exp3", exp3)):
        assert result.as_dict() == experiment_document(
            experiment=name, setup=result.setup, by_mode=result.by_mode
        )

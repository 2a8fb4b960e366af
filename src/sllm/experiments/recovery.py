"""exp2, fault tolerance: time to recovery, time to detect a failure, success over time.

Centralized, the coordinator is killed mid-run and restarted (and, as a second arm, a
quarter of the workers are killed for good); decentralized, the same quarter of the nodes
is killed for good. Run, analyse, write and plot are separate steps
(`sllm.experiments.summary`).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sllm.core.outstanding import UNFINISHED, RequestOutcome
from sllm.experiments import plots as plotting
from sllm.experiments.summary import (
    CENTRALIZED,
    DECENTRALIZED,
    DECENTRALIZED_NOTE,
    Context,
    Plots,
    RunSummary,
    fmt,
    run_cost,
    summarize,
    table,
)
from sllm.hosts.client import RESULT_TIMEOUT_S
from sllm.sim.cluster import ClusterConfig, SimResult, SimulatedCluster, child_rng
from sllm.sim.decentralized import DecentralizedCluster
from sllm.sim.faults import KILL_COORDINATOR, KILL_WORKER, RESTART_COORDINATOR, Fault
from sllm.sim.report import Json
from sllm.workload.options import WorkloadOptions

# A service has recovered when, for RECOVERY_WINDOW_S consecutive seconds of arrivals, the
# share of requests that succeed is back to RECOVERY_SHARE of what it was before the fault.
RECOVERY_WINDOW_S = 5
RECOVERY_SHARE = 0.95
# How often exp2 looks at every node's membership after the kill (seconds).
DETECTION_PROBE_S = 0.1
COORDINATOR_ARM = "coordinator"
WORKERS_ARM = "workers"
NODES_ARM = "nodes"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverySetup:
    workers: int
    models: int
    rate_rps: float
    duration_s: float
    kill_at_s: float
    coordinator_down_s: float
    killed_workers: tuple[str, ...]
    seed: int
    policy: str
    detection_bound_s: float  # the decentralized arm's stated bound

    def as_dict(self) -> Json:
        return {
            "workers": self.workers,
            "models": self.models,
            "rate_rps": self.rate_rps,
            "duration_s": self.duration_s,
            "kill_at_s": self.kill_at_s,
            "coordinator_down_s": self.coordinator_down_s,
            "killed_workers": list(self.killed_workers),
            "seed": self.seed,
            "policy": self.policy,
            "recovery": f"success rate by arrival second >= {RECOVERY_SHARE:.0%} of pre-fault "
            f"for {RECOVERY_WINDOW_S} s",
            "detection_bound_s": self.detection_bound_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryRuns:
    setup: RecoverySetup
    coordinator: SimResult  # killed, then restarted `coordinator_down_s` later
    workers: SimResult  # `killed_workers` killed for good
    nodes: SimResult  # decentralized: the same nodes killed for good
    # When every live node had marked every killed one dead, after the kill (None: never).
    nodes_detected_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """Per second of the workload: arrivals, success by arrival, completions and failures."""

    arrivals: list[float]
    success_rate: list[float]
    throughput: list[float]
    failures: list[float]

    def as_dict(self) -> Json:
        return {
            "arrivals": self.arrivals,
            "success_rate": self.success_rate,
            "throughput": self.throughput,
            "failures": self.failures,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultArm:
    """One arm: its run's summary, how fast it recovered, and when the failure was seen."""

    summary: RunSummary
    success_rate: float
    time_to_recovery_s: float | None
    # The arm's own detection figures, by JSON key: ``view_recovered_s`` (coordinator),
    # ``failure_detected_s`` (workers, nodes) and ``detection_bound_s`` (nodes).
    detection: Mapping[str, float | None]
    faults: tuple[Mapping[str, object], ...]
    timeline: Timeline

    def as_dict(self) -> Json:
        document = self.summary.as_dict()
        document["success_rate"] = self.success_rate
        document["time_to_recovery_s"] = self.time_to_recovery_s
        document.update(self.detection)
        document["faults"] = [dict(fault) for fault in self.faults]
        document["timeline"] = self.timeline.as_dict()
        return document


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryResult:
    setup: RecoverySetup
    coordinator: FaultArm
    workers: FaultArm
    nodes: FaultArm

    def as_dict(self) -> Json:
        return {
            "experiment": "exp2",
            "setup": self.setup.as_dict(),
            "centralized": {
                COORDINATOR_ARM: self.coordinator.as_dict(),
                WORKERS_ARM: self.workers.as_dict(),
            },
            "decentralized": {NODES_ARM: self.nodes.as_dict()},
        }


# -- run -----------------------------------------------------------------------------------


def run_exp2(ctx: Context) -> RecoveryRuns:
    if ctx.options.quick:
        workers, models, rate, duration, kill_at, down_s = 4, 4, 4.0, 60.0, 20.0, 5.0
    else:
        workers, models, rate, duration, kill_at, down_s = 16, 8, 8.0, 300.0, 100.0, 10.0
    options = WorkloadOptions(
        duration_s=duration, seed=ctx.options.seed, rate_rps=rate, models=models
    )
    config = ClusterConfig(workers=workers, seed=ctx.options.seed)
    names = [f"worker-{i}" for i in range(workers)]
    victims = tuple(sorted(child_rng(ctx.options.seed, "exp2").sample(names, max(1, workers // 4))))
    ctx.plan(run_cost(workers, options, mode) for mode in (CENTRALIZED, CENTRALIZED, DECENTRALIZED))
    coordinator = ctx.simulate(
        config,
        options,
        [Fault(kill_at, KILL_COORDINATOR), Fault(kill_at + down_s, RESTART_COORDINATOR)],
    )
    killed = ctx.simulate(config, options, [Fault(kill_at, KILL_WORKER, victims)])
    detected: list[float] = []
    nodes = ctx.simulate(
        config,
        options,
        [Fault(kill_at, KILL_WORKER, victims)],
        DECENTRALIZED,
        functools.partial(
            _watch_detection,
            victims=victims,
            kill_at=kill_at,
            until=options.duration_s,
            detected=detected,
        ),
    )
    setup = RecoverySetup(
        workers=workers,
        models=models,
        rate_rps=rate,
        duration_s=duration,
        kill_at_s=kill_at,
        coordinator_down_s=down_s,
        killed_workers=victims,
        seed=ctx.options.seed,
        policy=config.policy,
        detection_bound_s=_detection_bound(nodes),
    )
    return RecoveryRuns(
        setup=setup,
        coordinator=coordinator,
        workers=killed,
        nodes=nodes,
        nodes_detected_s=round(detected[0], 6) if detected else None,
    )


def _watch_detection(
    cluster: SimulatedCluster,
    *,
    victims: tuple[str, ...],
    kill_at: float,
    until: float,
    detected: list[float],
) -> None:
    """From the kill on, every `DETECTION_PROBE_S`: does every live node know them dead?"""
    assert isinstance(cluster, DecentralizedCluster)

    def look(_: None) -> None:
        if detected:
            return
        if all(
            not set(victims) & set(cluster.known_members(name)) for name in cluster.live_workers()
        ):
            detected.append(cluster.now - kill_at)
            return
        if cluster.now < until:
            cluster.kernel.schedule(DETECTION_PROBE_S, look, None)

    cluster.at(kill_at, look)


def _detection_bound(result: SimResult) -> float:
    bound = result.report.simulation.membership["detection_bound_s"]
    assert isinstance(bound, float)
    return bound


# -- analyse -------------------------------------------------------------------------------


def per_second(times: Iterable[float], seconds: int) -> list[int]:
    counts = [0] * seconds
    for t in times:
        index = int(t)
        if 0 <= index < seconds:
            counts[index] += 1
    return counts


def failed_at(span: tuple[float, float], outcome: RequestOutcome, seconds: int) -> float:
    """When a failed request failed, for the failures panel: when it ended, except one
    still unfinished when the run stopped (the drain ends after the window), which failed
    for its client when the client gave up on it, RESULT_TIMEOUT_S after its arrival. A
    failure after the window counts in its last second (still unanswered when it closed),
    so the panel shows every failure."""
    arrival, end = span
    if outcome.reason == UNFINISHED:
        end = min(end, arrival + RESULT_TIMEOUT_S)
    return min(end, seconds - 1.0)


def timeline(result: SimResult, seconds: int) -> Timeline:
    """Per second: arrivals, successes by arrival time, completions by end and failures
    when they failed (`failed_at`)."""
    ended = list(zip(result.spans, result.outcomes, strict=True))
    arrived = per_second((span[0] for span in result.spans), seconds)
    succeeded = per_second((span[0] for span, o in ended if o.ok), seconds)
    ended_ok = per_second((span[1] for span, o in ended if o.ok), seconds)
    ended_failed = per_second(
        (failed_at(span, o, seconds) for span, o in ended if not o.ok), seconds
    )
    return Timeline(
        arrivals=[float(a) for a in arrived],
        success_rate=[
            round(s / a, 6) if a else 1.0 for s, a in zip(succeeded, arrived, strict=True)
        ],
        throughput=[float(c) for c in ended_ok],
        failures=[float(f) for f in ended_failed],
    )


def recovery_time(line: Timeline, fault_at: float) -> float | None:
    """Seconds from the fault until success is back to RECOVERY_SHARE of before, and stays."""
    start = int(fault_at)
    before = [
        rate
        for rate, arrived in zip(line.success_rate[:start], line.arrivals[:start], strict=True)
        if arrived
    ]
    baseline = statistics.fmean(before) if before else 1.0
    rates = line.success_rate
    for second in range(start, len(rates) - RECOVERY_WINDOW_S + 1):
        window = rates[second : second + RECOVERY_WINDOW_S]
        if all(rate >= RECOVERY_SHARE * baseline for rate in window):
            return max(0.0, second - fault_at)
    return None


def fault_arm(
    result: SimResult, seconds: int, kill_at: float, detection: Mapping[str, float | None]
) -> FaultArm:
    line = timeline(result, seconds)
    summary = summarize(result)
    return FaultArm(
        summary=summary,
        success_rate=round(summary.completed / max(1, summary.requests), 6),
        time_to_recovery_s=recovery_time(line, kill_at),
        detection=detection,
        faults=tuple(result.faults),
        timeline=line,
    )


def view_recovered_s(result: SimResult, restart: float, workers: int) -> float | None:
    """How long after its restart the coordinator knew every worker again."""
    joins = sorted(
        at for at, event, _ in result.notices if event == "worker_joined" and at >= restart
    )
    return round(joins[workers - 1] - restart, 6) if len(joins) >= workers else None


def workers_dropped_s(result: SimResult, victims: Sequence[str], kill_at: float) -> float | None:
    """How long after the kill the coordinator had dropped every killed worker."""
    lost = [at for at, event, w in result.notices if event == "worker_lost" and w in victims]
    return round(max(lost) - kill_at, 6) if len(lost) == len(victims) else None


def analyse_exp2(runs: RecoveryRuns) -> RecoveryResult:
    setup = runs.setup
    seconds = int(setup.duration_s)
    kill_at = setup.kill_at_s
    restart = kill_at + setup.coordinator_down_s
    return RecoveryResult(
        setup=setup,
        coordinator=fault_arm(
            runs.coordinator,
            seconds,
            kill_at,
            {"view_recovered_s": view_recovered_s(runs.coordinator, restart, setup.workers)},
        ),
        workers=fault_arm(
            runs.workers,
            seconds,
            kill_at,
            {"failure_detected_s": workers_dropped_s(runs.workers, setup.killed_workers, kill_at)},
        ),
        nodes=fault_arm(
            runs.nodes,
            seconds,
            kill_at,
            {
                "failure_detected_s": runs.nodes_detected_s,
                "detection_bound_s": setup.detection_bound_s,
            },
        ),
    )


# -- write and plot ------------------------------------------------------------------------


def _arm_row(arm: str, figures: FaultArm) -> tuple[object, ...]:
    failures = figures.summary.failures
    return (
        arm,
        figures.summary.requests,
        f"{figures.success_rate:.1%}",
        fmt(figures.time_to_recovery_s, 1),
        ", ".join(f"{k}: {v}" for k, v in failures.items()) or "none",
    )


def write_exp2(result: RecoveryResult) -> str:
    setup = result.setup
    workers, victims, kill_at = setup.workers, setup.killed_workers, setup.kill_at_s
    header = ["arm", "requests", "success rate", "time to recovery (s)", "failures"]
    markdown = [
        "# exp2: fault tolerance",
        "",
        "Stresses recovery: the scheduler (coordinator, or nodes) losing what it knew, and "
        "workers dying with requests on them; the load itself is light.",
        "",
        f"{workers} workers, {setup.rate_rps:g} req/s for {setup.duration_s:g} s, policy "
        f"{setup.policy}, seed {setup.seed}. Arm *coordinator*: the coordinator dies at "
        f"{kill_at:g} s and restarts {setup.coordinator_down_s:g} s later with an empty view. "
        f"Arm *workers*: {len(victims)} of {workers} workers die at {kill_at:g} s for good. "
        "Recovery: the share of requests (by arrival second) that succeed is back to "
        f"{RECOVERY_SHARE:.0%} of its pre-fault level for {RECOVERY_WINDOW_S} s in a row.",
        "",
        *table(
            header,
            [
                _arm_row(COORDINATOR_ARM, result.coordinator),
                _arm_row(WORKERS_ARM, result.workers),
            ],
        ),
        "",
        f"- The restarted coordinator knew every worker again "
        f"{fmt(result.coordinator.detection['view_recovered_s'], 3)} s after it came back "
        "(soft state: one report interval at most).",
        "- The coordinator dropped the dead workers "
        f"{fmt(result.workers.detection['failure_detected_s'], 1)} "
        "s after they died (WORKER_TIMEOUT plus the expiry check period, unless a placement "
        "expired them first); requests already on them fail (`no_result` / `unfinished`).",
        "",
        "## Decentralized",
        "",
        "There is no coordinator to kill. Arm *nodes*: the same "
        f"{len(victims)} of {workers} nodes die at {kill_at:g} s for good (no goodbye). "
        + DECENTRALIZED_NOTE,
        "",
        *table(header, [_arm_row(NODES_ARM, result.nodes)]),
        "",
        f"- Every live node had marked every killed node dead "
        f"{fmt(result.nodes.detection['failure_detected_s'], 1)} s after they died (stated "
        f"detection bound {setup.detection_bound_s:.1f} s: `GossipConfig.detection_bound`). "
        "Until a node learns it, it may still place requests on a dead node; those fail "
        "(`no_result`, or `unfinished` at the end), as do the requests already running "
        "there. The client asks only live nodes for decisions, as the live driver does.",
    ]
    return "\n".join(markdown)


def draw_fault_arm(path: Path, line: Timeline, title: str, marks: list[tuple[float, str]]) -> Path:
    """One exp2 arm's throughput, failures and success rate per second, faults marked."""
    xs = [float(s) for s in range(len(line.throughput))]
    return plotting.panels(
        path,
        [
            ("completed/s", {"throughput": (xs, line.throughput)}),
            ("failed/s", {"failures": (xs, line.failures)}),
            ("success rate\n(by arrival)", {"success": (xs, line.success_rate)}),
        ],
        title,
        "seconds into the workload",
        marks,
    )


def plot_exp2(result: RecoveryResult, plots: Plots) -> None:
    kill_at = result.setup.kill_at_s
    kill = [(kill_at, "kill")]
    restart = [(kill_at + result.setup.coordinator_down_s, "restart")]
    for arm, figures, marks in (
        (COORDINATOR_ARM, result.coordinator, kill + restart),
        (WORKERS_ARM, result.workers, kill),
    ):
        title = f"exp2: {arm} killed at {kill_at:g} s (centralized)"
        plots.draw(
            arm,
            functools.partial(draw_fault_arm, line=figures.timeline, title=title, marks=marks),
        )
    title = f"exp2: nodes killed at {kill_at:g} s (decentralized)"
    plots.draw(
        "nodes-decentralized",
        functools.partial(draw_fault_arm, line=result.nodes.timeline, title=title, marks=kill),
    )

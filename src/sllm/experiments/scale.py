"""scale: placement quality and control-plane cost from 10 to 10,000 workers.

10 to 10,000 workers centralized, 10 to 300 nodes decentralized: p99 TTFT, cold-start
rate, and messages/s and bytes/s in total and per node. Run, analyse, write and plot are
separate steps (`sllm.experiments.summary`).

Not handled yet: decentralized runs beyond 300 nodes (see `DECENTRALIZED_SCALE_DURATIONS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sllm.core.tiers import Tier
from sllm.experiments import plots as plotting
from sllm.experiments.summary import (
    CENTRALIZED,
    DECENTRALIZED,
    DECENTRALIZED_NOTE,
    Context,
    Plots,
    RunSummary,
    experiment_document,
    fmt,
    run_cost,
    summarize,
    table,
)
from sllm.sim.cluster import ClusterConfig, SimResult
from sllm.sim.report import Json, Rate
from sllm.workload.options import WorkloadOptions

# Simulated seconds of arrivals per cluster size: enough requests for a p99, sized so the
# whole sweep takes about a minute (a 10,000-worker cluster sends 10,000 reports a second).
SCALE_DURATIONS = {10: 300.0, 100: 120.0, 1_000: 30.0, 10_000: 6.0}
QUICK_SCALE_DURATIONS = {10: 30.0, 100: 10.0, 300: 5.0}
# The decentralized arm stops at 300 nodes: the simulator runs the production gossip code,
# and 1,000 nodes took 2:15 of wall time for 30 s of load and a 10 s drain on the
# development machine (2026-12-05), more than the whole experiment's few-minute budget.
# `sllm bench gossip` compares that size with one coordinator (20 s of this load).
DECENTRALIZED_SCALE_DURATIONS = {10: 300.0, 100: 60.0, 300: 30.0}
QUICK_DECENTRALIZED_SCALE_DURATIONS = {10: 30.0, 100: 5.0}
SCALE_RATE_PER_WORKER = 0.25  # requests/s per worker: the same load per worker at every size
SCALE_DRAIN_S = 10.0
# Checkpoints start in host memory (a ServerlessLLM-style warm store), so a cold start takes
# at most 7.4 s: runs this short would otherwise be dominated by 73 s disk loads of 70B
# models still under way when they end.
SCALE_PRESTAGE = Tier.HOST
SCALE_POLICY = "startup-aware"
SCALE_MODELS = 10
QUICK_SCALE_MODELS = 8


def scale_cluster(workers: int, seed: int) -> ClusterConfig:
    """The experiment's cluster of `workers`: its policy, drain and prestaged checkpoints
    (`sllm bench gossip` runs it too, at 1,000 nodes)."""
    return ClusterConfig(
        workers=workers,
        policy=SCALE_POLICY,
        seed=seed,
        drain_s=SCALE_DRAIN_S,
        prestage=SCALE_PRESTAGE,
    )


def scale_workload(
    workers: int, duration: float, seed: int, models: int = SCALE_MODELS
) -> WorkloadOptions:
    """The experiment's load on `workers`: the same rate per worker at every size."""
    return WorkloadOptions(
        duration_s=duration,
        seed=seed,
        rate_rps=SCALE_RATE_PER_WORKER * workers,
        models=models,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSetup:
    durations_s: Mapping[str, Mapping[int, float]]  # mode -> workers -> seconds of arrivals
    rate_per_worker_rps: float
    models: int
    policy: str

    def as_dict(self) -> Json:
        return {
            "durations_s": {
                mode: {str(k): v for k, v in durations.items()}
                for mode, durations in self.durations_s.items()
            },
            "rate_per_worker_rps": self.rate_per_worker_rps,
            "models": self.models,
            "policy": self.policy,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleRuns:
    setup: ScaleSetup
    runs: Mapping[str, Mapping[int, SimResult]]  # mode -> workers -> run


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeFigures:
    """One cluster size: its run's summary and its control-plane cost per node."""

    summary: RunSummary
    duration_s: float
    events_per_wall_s: int
    control_per_worker: Rate
    control_coordinator: Rate | None  # centralized only

    def as_dict(self) -> Json:
        document = self.summary.as_dict()
        document["duration_s"] = self.duration_s
        document["events_per_wall_s"] = self.events_per_wall_s
        document["control_per_worker"] = self.control_per_worker.as_dict()
        if self.control_coordinator is not None:
            document["control_coordinator"] = self.control_coordinator.as_dict()
        return document


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleResult:
    setup: ScaleSetup
    by_mode: Mapping[str, Mapping[str, SizeFigures]]  # mode -> workers (as text) -> figures

    def as_dict(self) -> Json:
        return experiment_document(experiment="scale", setup=self.setup, by_mode=self.by_mode)


def run_scale(ctx: Context) -> ScaleRuns:
    sizes_by_mode = {
        CENTRALIZED: QUICK_SCALE_DURATIONS if ctx.options.quick else SCALE_DURATIONS,
        DECENTRALIZED: (
            QUICK_DECENTRALIZED_SCALE_DURATIONS
            if ctx.options.quick
            else DECENTRALIZED_SCALE_DURATIONS
        ),
    }
    models = QUICK_SCALE_MODELS if ctx.options.quick else SCALE_MODELS

    def workload(workers: int, duration: float) -> WorkloadOptions:
        return scale_workload(workers, duration, ctx.options.seed, models)

    ctx.plan(
        run_cost(workers, workload(workers, duration), mode)
        for mode, durations in sizes_by_mode.items()
        for workers, duration in durations.items()
    )
    runs: dict[str, dict[int, SimResult]] = {}
    for mode, durations in sizes_by_mode.items():
        runs[mode] = {}
        for workers, duration in durations.items():
            options = workload(workers, duration)
            runs[mode][workers] = ctx.simulate(
                scale_cluster(workers, ctx.options.seed), options, mode=mode
            )
    setup = ScaleSetup(
        durations_s=sizes_by_mode,
        rate_per_worker_rps=SCALE_RATE_PER_WORKER,
        models=models,
        policy=SCALE_POLICY,
    )
    return ScaleRuns(setup=setup, runs=runs)


def size_figures(result: SimResult, duration_s: float, centralized: bool) -> SizeFigures:
    summary = summarize(result)
    control = summary.control
    return SizeFigures(
        summary=summary,
        duration_s=duration_s,
        events_per_wall_s=round(result.events / max(result.wall_seconds, 1e-9)),
        control_per_worker=control.worker_mean,
        control_coordinator=control.per_role["coordinator"] if centralized else None,
    )


def analyse_scale(runs: ScaleRuns) -> ScaleResult:
    by_mode = {
        mode: {
            str(workers): size_figures(
                result, runs.setup.durations_s[mode][workers], mode == CENTRALIZED
            )
            for workers, result in results.items()
        }
        for mode, results in runs.runs.items()
    }
    return ScaleResult(setup=runs.setup, by_mode=by_mode)


def _coordinator(figures: SizeFigures) -> Rate:
    assert figures.control_coordinator is not None, "a centralized size"
    return figures.control_coordinator


def _scale_table(
    size_header: str,
    by_size: Mapping[str, SizeFigures],
    traffic: list[tuple[str, Callable[[SizeFigures], float]]],
) -> list[str]:
    """The scale table of one architecture: shared columns, then its own traffic columns."""
    header = [
        size_header,
        "requests",
        "failed",
        "TTFT p50 (s)",
        "TTFT p99 (s)",
        "cold-start rate",
        "control msg/s",
        "control bytes/s",
        *(name for name, _ in traffic),
        "wall (s)",
    ]
    rows = [
        (
            size,
            s.summary.requests,
            s.summary.failed,
            fmt(s.summary.ttft.p50),
            fmt(s.summary.ttft.p99),
            f"{s.summary.cold_start_rate:.1%}",
            f"{s.summary.control.messages_per_s:,.0f}",
            f"{s.summary.control.bytes_per_s:,.0f}",
            *(f"{pick(s):,.0f}" for _, pick in traffic),
            fmt(s.summary.wall_seconds, 1),
        )
        for size, s in by_size.items()
    ]
    return table(header, rows)


def write_scale(result: ScaleResult) -> str:
    setup = result.setup
    central, gossip = result.by_mode[CENTRALIZED], result.by_mode[DECENTRALIZED]
    markdown = [
        "# scale: placement quality and control-plane cost",
        "",
        "Stresses the control plane: the same load per worker from 10 to 10,000 workers, so "
        "what grows is the traffic and state of scheduling, not the work per GPU.",
        "",
        f"Policy {setup.policy}, {setup.models} models, {setup.rate_per_worker_rps:g} req/s "
        "per worker (the same load per worker at every size), reports every second, "
        "checkpoints prestaged in host memory (cold starts of at most 7.4 s). Control plane = "
        "worker reports plus schedule requests and responses (and, decentralized, every "
        "gossip message); per node = sent plus received. "
        "Short runs at large sizes include the warm-up, when every model is cold somewhere, "
        "and end while the longest cold starts still load: those requests fail as "
        "`unfinished`, so the TTFT percentiles (over completed requests) are biased low there.",
        "",
        "## Centralized",
        "",
        *_scale_table(
            "workers",
            central,
            [
                ("coordinator msg/s", lambda s: _coordinator(s).messages_per_s),
                ("coordinator bytes/s", lambda s: _coordinator(s).bytes_per_s),
                ("per worker bytes/s", lambda s: s.control_per_worker.bytes_per_s),
            ],
        ),
        "",
        "## Decentralized",
        "",
        DECENTRALIZED_NOTE + " Sizes stop at "
        f"{max(setup.durations_s[DECENTRALIZED]):,} nodes: the simulator runs the production "
        "gossip code, and 20 simulated seconds at 1,000 nodes take about 95 s of wall time, "
        "beyond this experiment's budget; `sllm bench gossip` runs that size against one "
        "coordinator on this load.",
        "",
        *_scale_table(
            "nodes",
            gossip,
            [
                ("per node msg/s", lambda s: s.control_per_worker.messages_per_s),
                ("per node bytes/s", lambda s: s.control_per_worker.bytes_per_s),
            ],
        ),
    ]
    return "\n".join(markdown)


def _column(
    by_size: Mapping[str, SizeFigures], pick: Callable[[SizeFigures], float]
) -> tuple[list[float], list[float]]:
    return [float(size) for size in by_size], [pick(s) for s in by_size.values()]


# A run "where many requests failed", marked on the quality plot: its percentiles describe
# only the requests that completed, so they flatter it.
MANY_FAILED_SHARE = 0.01


def failed_share(figures: SizeFigures) -> float:
    return figures.summary.failed / max(1, figures.summary.requests)


def many_failed_marks(by_mode: Mapping[str, Mapping[str, SizeFigures]]) -> list[tuple[float, str]]:
    """(size, label) of every run where at least MANY_FAILED_SHARE of requests failed."""
    return [
        (float(size), f"{mode}: ≥{MANY_FAILED_SHARE:.0%} of requests failed")
        for mode, by_size in by_mode.items()
        for size, figures in by_size.items()
        if failed_share(figures) >= MANY_FAILED_SHARE
    ]


def plot_scale(result: ScaleResult, plots: Plots) -> None:
    central, gossip = result.by_mode[CENTRALIZED], result.by_mode[DECENTRALIZED]

    def draw_quality(path: Path) -> Path:
        return plotting.panels(
            path,
            [
                (
                    "TTFT (s)",
                    {
                        "p99 centralized": _column(central, lambda s: s.summary.ttft.p99),
                        "p50 centralized": _column(central, lambda s: s.summary.ttft.p50),
                        "p99 decentralized": _column(gossip, lambda s: s.summary.ttft.p99),
                        "p50 decentralized": _column(gossip, lambda s: s.summary.ttft.p50),
                    },
                ),
                (
                    "cold-start rate\n(share of requests)",
                    {
                        "centralized": _column(central, lambda s: s.summary.cold_start_rate),
                        "decentralized": _column(gossip, lambda s: s.summary.cold_start_rate),
                    },
                ),
                (
                    "failed\n(share of requests)",
                    {
                        "centralized": _column(central, failed_share),
                        "decentralized": _column(gossip, failed_share),
                    },
                ),
            ],
            "scale: placement quality (TTFT of completed requests)",
            "workers or nodes (log scale)",
            marks=many_failed_marks(result.by_mode),
            log_x=True,
        )

    def draw_control(path: Path) -> Path:
        return plotting.lines(
            path,
            {
                "centralized total bytes/s": _column(
                    central, lambda s: s.summary.control.bytes_per_s
                ),
                "coordinator bytes/s": _column(central, lambda s: _coordinator(s).bytes_per_s),
                "centralized per worker bytes/s": _column(
                    central, lambda s: s.control_per_worker.bytes_per_s
                ),
                "decentralized total bytes/s": _column(
                    gossip, lambda s: s.summary.control.bytes_per_s
                ),
                "decentralized per node bytes/s": _column(
                    gossip, lambda s: s.control_per_worker.bytes_per_s
                ),
            },
            "scale: control-plane cost",
            "workers or nodes (log scale)",
            "bytes per second (log scale)",
            log_x=True,
            log_y=True,
        )

    plots.draw("quality", draw_quality)
    plots.draw("control", draw_control)

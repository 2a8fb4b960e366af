"""exp3, utilization distribution: how evenly each policy spreads the load.

Per-worker queue depth and GPU utilization over time for every policy in both
architectures, with their variance across workers and Gini coefficients. Run, analyse,
write and plot are separate steps (`sllm.experiments.summary`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sllm.experiments import plots as plotting
from sllm.experiments.summary import (
    DECENTRALIZED_NOTE,
    Context,
    Plots,
    experiment_document,
    fmt,
    gini,
    table,
    tag,
)
from sllm.sim.cluster import SimResult
from sllm.sim.report import Json, WorkerLine
from sllm.workload.options import WorkloadOptions

# One curve: sample times and the spread across workers at each.
Curve = tuple[list[float], list[float]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpreadSetup:
    workers: int
    models: int
    rate_rps: float
    duration_s: float
    seed: int  # in the Markdown only (the JSON's setup has never had it)

    def as_dict(self) -> Json:
        return {
            "workers": self.workers,
            "models": self.models,
            "rate_rps": self.rate_rps,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SpreadRuns:
    setup: SpreadSetup
    runs: Mapping[str, Mapping[str, SimResult]]  # mode -> policy -> run (with its series)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evenness:
    """How one per-worker measure spreads: across workers, and across them over time."""

    mean: float
    variance_across_workers: float
    gini: float
    mean_std_over_time: float

    def as_dict(self) -> Json:
        return {
            "mean": self.mean,
            "variance_across_workers": self.variance_across_workers,
            "gini": self.gini,
            "mean_std_over_time": self.mean_std_over_time,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySpread:
    queue_depth: Evenness
    gpu_utilization: Evenness
    completed_gini: float
    ttft_p99: float
    per_worker: tuple[WorkerLine, ...]
    queue_over_time: Curve  # for the plots
    utilization_over_time: Curve

    def as_dict(self) -> Json:
        return {
            "queue_depth": self.queue_depth.as_dict(),
            "gpu_utilization": self.gpu_utilization.as_dict(),
            "completed_gini": self.completed_gini,
            "ttft_p99": self.ttft_p99,
            "per_worker": [line.as_dict() for line in self.per_worker],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SpreadResult:
    setup: SpreadSetup
    by_mode: Mapping[str, Mapping[str, PolicySpread]]  # mode -> policy -> spread

    def as_dict(self) -> Json:
        return experiment_document(experiment="exp3", setup=self.setup, by_mode=self.by_mode)


def run_exp3(ctx: Context) -> SpreadRuns:
    workers, models, rate, duration = (
        (4, 4, 6.0, 60.0) if ctx.options.quick else (16, 8, 24.0, 300.0)
    )
    options = WorkloadOptions(
        duration_s=duration, seed=ctx.options.seed, rate_rps=rate, models=models
    )
    runs = ctx.every_policy(options, workers=workers, record_series=True)
    setup = SpreadSetup(
        workers=workers, models=models, rate_rps=rate, duration_s=duration, seed=ctx.options.seed
    )
    return SpreadRuns(setup=setup, runs=runs)


def spread_over_time(series: Mapping[str, list[tuple[float, int, float]]], column: int) -> Curve:
    """Per sample time: the standard deviation across workers of one column."""
    by_time: dict[float, list[float]] = {}
    for samples in series.values():
        for sample in samples:
            by_time.setdefault(sample[0], []).append(float(sample[column]))
    times = sorted(by_time)
    return times, [statistics.pstdev(by_time[t]) for t in times]


def evenness(means: list[float], over_time: Curve) -> Evenness:
    return Evenness(
        mean=round(statistics.fmean(means), 6),
        variance_across_workers=round(statistics.pvariance(means), 6),
        gini=round(gini(means), 6),
        mean_std_over_time=round(statistics.fmean(over_time[1]), 6),
    )


def policy_spread(result: SimResult) -> PolicySpread:
    report = result.report.run
    per_worker = report.workers.per_worker
    queue = spread_over_time(result.series, 1)
    utilization = spread_over_time(result.series, 2)
    return PolicySpread(
        queue_depth=evenness([w.queue_depth.mean for w in per_worker], queue),
        gpu_utilization=evenness([w.gpu_utilization.mean for w in per_worker], utilization),
        completed_gini=round(gini([float(w.completed) for w in per_worker]), 6),
        ttft_p99=report.latency.ttft.p99,
        per_worker=per_worker,
        queue_over_time=queue,
        utilization_over_time=utilization,
    )


def analyse_exp3(runs: SpreadRuns) -> SpreadResult:
    by_mode = {
        mode: {policy: policy_spread(result) for policy, result in results.items()}
        for mode, results in runs.runs.items()
    }
    return SpreadResult(setup=runs.setup, by_mode=by_mode)


def write_exp3(result: SpreadResult) -> str:
    setup = result.setup
    markdown = [
        "# exp3: how evenly the load spreads",
        "",
        "Stresses load balance: three times exp1's load per worker, so queues form and a "
        "policy's spread of them across workers shows.",
        "",
        f"{setup.workers} workers, {setup.models} models, {setup.rate_rps:g} req/s for "
        f"{setup.duration_s:g} s, seed {setup.seed}. Per-worker queue depth and GPU "
        "utilization are sampled every second from the coordinator's view (centralized) or a "
        "random live node's view (decentralized): what `status` shows. *Variance* is across "
        "workers of each worker's time-mean; *std over time* is the mean, over samples, of "
        "the spread across workers at that instant; *Gini* is 0 for a perfectly even "
        "spread. " + DECENTRALIZED_NOTE,
    ]
    for mode, by_policy in result.by_mode.items():
        markdown += [
            "",
            f"## {mode.capitalize()}",
            "",
            *table(
                [
                    "policy",
                    "queue mean",
                    "queue variance",
                    "queue Gini",
                    "util mean",
                    "util variance",
                    "util Gini",
                    "util std over time",
                    "completed Gini",
                ],
                [
                    (
                        policy,
                        fmt(s.queue_depth.mean, 2),
                        fmt(s.queue_depth.variance_across_workers, 3),
                        fmt(s.queue_depth.gini, 3),
                        f"{s.gpu_utilization.mean:.1%}",
                        fmt(s.gpu_utilization.variance_across_workers, 4),
                        fmt(s.gpu_utilization.gini, 3),
                        fmt(s.gpu_utilization.mean_std_over_time, 3),
                        fmt(s.completed_gini, 3),
                    )
                    for policy, s in by_policy.items()
                ],
            ),
        ]
    return "\n".join(markdown)


def plot_exp3(result: SpreadResult, plots: Plots) -> None:
    for mode, by_policy in result.by_mode.items():
        queue = {policy: s.queue_over_time for policy, s in by_policy.items()}
        utilization = {policy: s.utilization_over_time for policy, s in by_policy.items()}
        spread_title = f"exp3: load imbalance over time ({mode})"

        def draw_spread(
            path: Path,
            queue: Mapping[str, Curve] = queue,
            utilization: Mapping[str, Curve] = utilization,
            title: str = spread_title,
        ) -> Path:
            return plotting.panels(
                path,
                [
                    ("queue depth std\nacross workers\n(requests)", queue),
                    ("GPU utilization std\nacross workers\n(busy-slot share)", utilization),
                ],
                title,
                "seconds into the workload",
            )

        bars = {
            "utilization Gini": [s.gpu_utilization.gini for s in by_policy.values()],
            "queue depth Gini": [s.queue_depth.gini for s in by_policy.values()],
            "completed Gini": [s.completed_gini for s in by_policy.values()],
        }
        gini_title = f"exp3: Gini coefficients per policy ({mode})"

        def draw_gini(
            path: Path,
            policies: tuple[str, ...] = tuple(by_policy),
            bars: dict[str, list[float]] = bars,
            title: str = gini_title,
        ) -> Path:
            units = dict.fromkeys(bars, "Gini (0: equal, 1: one takes all)")
            return plotting.bars(path, policies, bars, title, xlabel="policy", units=units)

        plots.draw(f"spread{tag(mode)}", draw_spread)
        plots.draw(f"gini{tag(mode)}", draw_gini)

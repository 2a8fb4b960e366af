"""exp1, performance: every placement policy on the same workload, in both architectures.

Warm start rate and cold starts, warm placement rate, TTFT and end-to-end distributions
(CDF plots), against the guide's ``seed`` policy as the baseline. Run, analyse, write and
plot are separate steps (`sllm.experiments.summary`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sllm.core.measures import COLD_STARTS, WARM_PLACEMENT_RATE, WARM_START_RATE
from sllm.experiments import plots as plotting
from sllm.experiments.summary import (
    BASELINE_POLICY,
    CENTRALIZED,
    DECENTRALIZED,
    DECENTRALIZED_NOTE,
    Context,
    Plots,
    RunSummary,
    experiment_document,
    fmt,
    latencies,
    percent,
    ratio,
    summarize,
    table,
    tag,
)
from sllm.sim.cluster import SimResult
from sllm.sim.report import Json
from sllm.workload.options import WorkloadOptions

LATENCY_KINDS = (("ttft", "time to first token"), ("e2e", "end-to-end latency"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceSetup:
    workers: int
    models: int
    rate_rps: float
    duration_s: float
    seed: int
    baseline: str

    def as_dict(self) -> Json:
        return {
            "workers": self.workers,
            "models": self.models,
            "rate_rps": self.rate_rps,
            "duration_s": self.duration_s,
            "seed": self.seed,
            "baseline": self.baseline,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceRuns:
    setup: PerformanceSetup
    runs: Mapping[str, Mapping[str, SimResult]]  # mode -> policy -> run


@dataclass(frozen=True, slots=True, kw_only=True)
class VersusBaseline:
    """A policy's latencies over the baseline's (lower is better), and its warm start gain."""

    ttft_p50: float | None
    ttft_p99: float | None
    e2e_p50: float | None
    e2e_p99: float | None
    warm_start_rate_delta: float

    def as_dict(self) -> Json:
        return {
            "ttft_p50": self.ttft_p50,
            "ttft_p99": self.ttft_p99,
            "e2e_p50": self.e2e_p50,
            "e2e_p99": self.e2e_p99,
            "warm_start_rate_delta": self.warm_start_rate_delta,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyFigures:
    summary: RunSummary
    vs_seed: VersusBaseline

    def as_dict(self) -> Json:
        return {**self.summary.as_dict(), "vs_seed": self.vs_seed.as_dict()}


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceResult:
    setup: PerformanceSetup
    by_mode: Mapping[str, Mapping[str, PolicyFigures]]  # mode -> policy -> figures
    # mode -> latency kind -> policy -> the completed requests' seconds (for the CDFs)
    latencies: Mapping[str, Mapping[str, Mapping[str, list[float]]]]

    def as_dict(self) -> Json:
        return experiment_document(experiment="exp1", setup=self.setup, by_mode=self.by_mode)


def run_exp1(ctx: Context) -> PerformanceRuns:
    workers, models, rate, duration = (
        (4, 4, 3.0, 60.0) if ctx.options.quick else (16, 10, 8.0, 900.0)
    )
    options = WorkloadOptions(
        duration_s=duration, seed=ctx.options.seed, rate_rps=rate, models=models
    )
    runs = ctx.every_policy(options, workers=workers)
    setup = PerformanceSetup(
        workers=workers,
        models=models,
        rate_rps=rate,
        duration_s=duration,
        seed=ctx.options.seed,
        baseline=BASELINE_POLICY,
    )
    return PerformanceRuns(setup=setup, runs=runs)


def versus(summary: RunSummary, base: RunSummary) -> VersusBaseline:
    return VersusBaseline(
        ttft_p50=ratio(summary.ttft.p50, base.ttft.p50),
        ttft_p99=ratio(summary.ttft.p99, base.ttft.p99),
        e2e_p50=ratio(summary.e2e.p50, base.e2e.p50),
        e2e_p99=ratio(summary.e2e.p99, base.e2e.p99),
        warm_start_rate_delta=round(summary.warm_start_rate - base.warm_start_rate, 6),
    )


def analyse_exp1(runs: PerformanceRuns) -> PerformanceResult:
    by_mode: dict[str, dict[str, PolicyFigures]] = {}
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for mode, results in runs.runs.items():
        summaries = {policy: summarize(result) for policy, result in results.items()}
        base = summaries[runs.setup.baseline]
        by_mode[mode] = {
            policy: PolicyFigures(summary=summary, vs_seed=versus(summary, base))
            for policy, summary in summaries.items()
        }
        curves[mode] = {
            kind: {policy: latencies(result, kind) for policy, result in results.items()}
            for kind, _ in LATENCY_KINDS
        }
    return PerformanceResult(setup=runs.setup, by_mode=by_mode, latencies=curves)


def write_exp1(result: PerformanceResult) -> str:
    setup = result.setup
    markdown = [
        "# exp1: performance of the placement policies",
        "",
        "Stresses model locality on a balanced cluster: identical workers with ample memory, "
        "where a policy pays for a request mainly by whether the chosen GPU already holds "
        "its model (a load from disk otherwise); queues stay short. Where policies differ "
        "under pressure is `sllm experiment pressure`.",
        "",
        f"{setup.workers} workers, {setup.models} models with the Alibaba GenAI popularity "
        f"skew, Poisson arrivals at {setup.rate_rps:g} req/s for {setup.duration_s:g} s, seed "
        f"{setup.seed}. Every policy sees the same requests in both architectures. Ratios are "
        "against the guide's `seed` policy in the same architecture (lower is better for "
        "latency). " + DECENTRALIZED_NOTE,
    ]
    for mode, by_policy in result.by_mode.items():
        markdown += [
            "",
            f"## {mode.capitalize()}",
            "",
            *table(
                [
                    "policy",
                    "completed",
                    "failed",
                    WARM_START_RATE,
                    COLD_STARTS,
                    WARM_PLACEMENT_RATE,
                    "TTFT p50 (s)",
                    "TTFT p99 (s)",
                    "e2e p50 (s)",
                    "e2e p99 (s)",
                    "TTFT p99 vs seed",
                    "e2e p99 vs seed",
                ],
                [
                    (
                        policy,
                        f.summary.completed,
                        f.summary.failed,
                        f"{f.summary.warm_start_rate:.1%}",
                        f.summary.cold_starts,
                        percent(f.summary.warm_placement_rate),
                        fmt(f.summary.ttft.p50),
                        fmt(f.summary.ttft.p99),
                        fmt(f.summary.e2e.p50),
                        fmt(f.summary.e2e.p99),
                        fmt(f.vs_seed.ttft_p99, 2),
                        fmt(f.vs_seed.e2e_p99, 2),
                    )
                    for policy, f in by_policy.items()
                ],
            ),
        ]
    central, gossip = result.by_mode[CENTRALIZED], result.by_mode[DECENTRALIZED]
    markdown += [
        "",
        "## Decentralized against centralized",
        "",
        *table(
            [
                "policy",
                f"{WARM_START_RATE} (cen / dec)",
                "TTFT p99 dec / cen",
                "e2e p99 dec / cen",
            ],
            [
                (
                    policy,
                    f"{central[policy].summary.warm_start_rate:.1%} / "
                    f"{gossip[policy].summary.warm_start_rate:.1%}",
                    fmt(ratio(gossip[policy].summary.ttft.p99, cen.summary.ttft.p99), 2),
                    fmt(ratio(gossip[policy].summary.e2e.p99, cen.summary.e2e.p99), 2),
                )
                for policy, cen in central.items()
            ],
        ),
    ]
    return "\n".join(markdown)


def plot_exp1(result: PerformanceResult, plots: Plots) -> None:
    for mode, by_policy in result.by_mode.items():
        for kind, what in LATENCY_KINDS:
            curves = result.latencies[mode][kind]
            title = f"exp1: {what} ({mode})"

            def draw_cdf(
                path: Path, curves: Mapping[str, list[float]] = curves, title: str = title
            ) -> Path:
                return plotting.cdf(path, curves, title, "seconds (log scale)")

            plots.draw(f"{kind}-cdf{tag(mode)}", draw_cdf)
        bars: dict[str, list[float]] = {
            WARM_START_RATE: [f.summary.warm_start_rate for f in by_policy.values()],
            COLD_STARTS: [float(f.summary.cold_starts) for f in by_policy.values()],
        }
        title = f"exp1: warm start rate and cold starts per policy ({mode})"

        def draw_bars(
            path: Path,
            bars: dict[str, list[float]] = bars,
            policies: tuple[str, ...] = tuple(by_policy),
            title: str = title,
        ) -> Path:
            units = {WARM_START_RATE: "share of requests", COLD_STARTS: "requests"}
            return plotting.bars(path, policies, bars, title, xlabel="policy", units=units)

        plots.draw(f"cache{tag(mode)}", draw_bars)

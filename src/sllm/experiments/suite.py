"""`python3 -m sllm experiment exp1|exp2|exp3|scale --out DIR`: the guide's experiments.

Each experiment runs the simulator (`sllm.sim`) on seeded workloads and writes into DIR:
``<name>.json`` (every number), ``<name>.md`` (a summary with tables) and
``<name>-*.png`` (plots; needs the optional ``plot`` extra, matplotlib, and is skipped
with a note otherwise). A progress bar runs on stderr when it is a terminal.

- **exp1, performance**: every placement policy on the same workload: cache hit rate,
  cold starts, TTFT and end-to-end distributions (CDF plots), against the guide's
  ``seed`` policy as the baseline.
- **exp2, fault tolerance**: the coordinator is killed mid-run and restarted (and, as a
  second arm, a quarter of the workers are killed for good): time to recovery and the
  request success rate over time; throughput and failures against time.
- **exp3, utilization distribution**: per-worker queue depth and GPU utilization over
  time for every policy, with their variance across workers and Gini coefficients.
- **scale**: 10 to 10,000 workers: placement quality (p99 TTFT, cold-start rate) and
  control-plane cost (messages/s and bytes/s in total and per node).

Default sizes finish in about a minute each on a 2-core machine; ``--quick`` runs tiny
versions (seconds) for tests.

Not handled yet: the decentralized arm of every experiment. It needs the decentralized
(gossip) mode, another issue; until it lands each experiment runs its centralized arm and
says so in its Markdown summary and JSON (``"decentralized"``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sllm.config import POLICY_NAMES
from sllm.core.tiers import Tier
from sllm.experiments import plots
from sllm.experiments.options import WorkloadOptions, make_workload
from sllm.sim.cluster import CentralizedCluster, ClusterConfig, SimResult, child_rng
from sllm.sim.faults import (
    KILL_COORDINATOR,
    KILL_WORKER,
    RESTART_COORDINATOR,
    Fault,
)
from sllm.sim.progress import Progress

DECENTRALIZED_NOT_AVAILABLE = (
    "not available yet: the decentralized arm needs the decentralized (gossip) mode, which "
    "another issue builds; only the centralized arm ran"
)
BASELINE_POLICY = "seed"
# exp2: a service has recovered when, for RECOVERY_WINDOW_S consecutive seconds of
# arrivals, the share of requests that succeed is back to RECOVERY_SHARE of what it was
# before the fault.
RECOVERY_WINDOW_S = 5
RECOVERY_SHARE = 0.95


@dataclass
class Context:
    """One experiment's output folder, options and progress bar."""

    name: str
    out: Path
    quick: bool
    seed: int
    progress: Progress
    runs_total: int = 1
    runs_done: int = 0
    plots_written: list[str] = field(default_factory=list)
    plots_skipped: str | None = None

    def simulate(
        self, config: ClusterConfig, options: WorkloadOptions, faults: Sequence[Fault] = ()
    ) -> SimResult:
        _, arrivals = make_workload(options)
        total = self.runs_total

        def step(fraction: float) -> None:
            self.progress.update((self.runs_done + fraction) / total, f"run {self.runs_done + 1}")

        result = CentralizedCluster(config).run(arrivals, options.duration_s, faults, progress=step)
        self.runs_done += 1
        return result

    def plot(self, suffix: str, draw: Callable[[Path], object]) -> None:
        """Draw one PNG, unless matplotlib is missing (then say so once)."""
        reason = plots.unavailable()
        if reason is not None:
            self.plots_skipped = reason
            return
        path = self.out / f"{self.name}-{suffix}.png"
        draw(path)
        self.plots_written.append(path.name)

    def write(self, results: dict[str, Any], markdown: list[str]) -> list[Path]:
        results["decentralized"] = DECENTRALIZED_NOT_AVAILABLE
        results["plots"] = list(self.plots_written)
        if self.plots_skipped:
            results["plots_skipped"] = self.plots_skipped
        markdown += [
            "",
            "## Decentralized arm",
            "",
            f"Not available yet: {DECENTRALIZED_NOT_AVAILABLE.split(': ', 1)[1]}.",
            "",
            "## Plots",
            "",
        ]
        if self.plots_skipped:
            markdown.append(f"Skipped: {self.plots_skipped}.")
        markdown += [f"![{name}]({name})" for name in self.plots_written]
        json_path = self.out / f"{self.name}.json"
        json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        md_path = self.out / f"{self.name}.md"
        md_path.write_text("\n".join(markdown) + "\n", encoding="utf-8")
        return [json_path, md_path, *(self.out / name for name in self.plots_written)]


# -- shared measures ---------------------------------------------------------------------


def gini(values: Sequence[float]) -> float:
    """The Gini coefficient of non-negative values: 0 is perfectly even, near 1 all on one."""
    ordered = sorted(values)
    total = sum(ordered)
    n = len(ordered)
    if n == 0 or total <= 0:
        return 0.0
    weighted = sum((index + 1) * value for index, value in enumerate(ordered))
    return 2.0 * weighted / (n * total) - (n + 1) / n


def summarize(result: SimResult) -> dict[str, Any]:
    """The headline numbers of one run."""
    report = result.report
    completed = report["completed"]
    network = report["simulation"]["network"]
    return {
        "requests": report["requests"],
        "completed": completed,
        "failed": report["failed"],
        "failures": report["failures"],
        "cache_hit_rate": report["cache_hit_rate"],
        "cold_starts": report["cold_starts"],
        "cold_start_rate": round(report["cold_starts"] / completed, 6) if completed else 0.0,
        "ttft": report["latency"]["ttft"],
        "e2e": report["latency"]["e2e"],
        "queue": report["latency"]["queue"],
        "control": {
            key: network["control"][key] for key in ("messages_per_s", "bytes_per_s", "per_node")
        },
        "events": report["events"],
        "wall_seconds": round(result.wall_seconds, 3),
    }


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline > 0 else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def latencies(result: SimResult, kind: str) -> list[float]:
    return [getattr(o, f"{kind}_s") for o in result.outcomes if o.ok]


# -- exp1 ----------------------------------------------------------------------------------


def exp1(ctx: Context) -> None:
    workers, models, rate, duration = (4, 4, 3.0, 60.0) if ctx.quick else (16, 10, 8.0, 900.0)
    options = WorkloadOptions(duration_s=duration, seed=ctx.seed, rate_rps=rate, models=models)
    ctx.runs_total = len(POLICY_NAMES)
    results = {
        policy: ctx.simulate(ClusterConfig(workers=workers, policy=policy, seed=ctx.seed), options)
        for policy in POLICY_NAMES
    }
    summaries = {policy: summarize(result) for policy, result in results.items()}
    base = summaries[BASELINE_POLICY]
    for summary in summaries.values():
        summary["vs_seed"] = {
            "ttft_p50": ratio(summary["ttft"]["p50"], base["ttft"]["p50"]),
            "ttft_p99": ratio(summary["ttft"]["p99"], base["ttft"]["p99"]),
            "e2e_p50": ratio(summary["e2e"]["p50"], base["e2e"]["p50"]),
            "e2e_p99": ratio(summary["e2e"]["p99"], base["e2e"]["p99"]),
            "cache_hit_rate_delta": round(summary["cache_hit_rate"] - base["cache_hit_rate"], 6),
        }
    setup = {
        "workers": workers,
        "models": models,
        "rate_rps": rate,
        "duration_s": duration,
        "seed": ctx.seed,
        "baseline": BASELINE_POLICY,
    }
    markdown = [
        "# exp1: performance of the placement policies (centralized)",
        "",
        f"{workers} workers, {models} models with the Alibaba GenAI popularity skew, Poisson "
        f"arrivals at {rate:g} req/s for {duration:g} s, seed {ctx.seed}. Every policy sees "
        "the same requests. Ratios are against the guide's `seed` policy (lower is better "
        "for latency).",
        "",
        *table(
            [
                "policy",
                "completed",
                "failed",
                "cache hit rate",
                "cold starts",
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
                    s["completed"],
                    s["failed"],
                    f"{s['cache_hit_rate']:.1%}",
                    s["cold_starts"],
                    fmt(s["ttft"]["p50"]),
                    fmt(s["ttft"]["p99"]),
                    fmt(s["e2e"]["p50"]),
                    fmt(s["e2e"]["p99"]),
                    fmt(s["vs_seed"]["ttft_p99"], 2),
                    fmt(s["vs_seed"]["e2e_p99"], 2),
                )
                for policy, s in summaries.items()
            ],
        ),
    ]
    ctx.plot(
        "ttft-cdf",
        lambda path: plots.cdf(
            path,
            {p: latencies(r, "ttft") for p, r in results.items()},
            "exp1: time to first token (centralized)",
            "seconds (log scale)",
        ),
    )
    ctx.plot(
        "e2e-cdf",
        lambda path: plots.cdf(
            path,
            {p: latencies(r, "e2e") for p, r in results.items()},
            "exp1: end-to-end latency (centralized)",
            "seconds (log scale)",
        ),
    )
    ctx.plot(
        "cache",
        lambda path: plots.bars(
            path,
            list(summaries),
            {
                "cache hit rate": [s["cache_hit_rate"] for s in summaries.values()],
                "cold starts": [s["cold_starts"] for s in summaries.values()],
            },
            "exp1: cache hits and cold starts per policy",
        ),
    )
    results_json = {"experiment": "exp1", "setup": setup, "centralized": summaries}
    ctx.write(results_json, markdown)


# -- exp2 ----------------------------------------------------------------------------------


def per_second(times: Iterable[float], seconds: int) -> list[int]:
    counts = [0] * seconds
    for t in times:
        index = int(t)
        if 0 <= index < seconds:
            counts[index] += 1
    return counts


def timeline(result: SimResult, seconds: int) -> dict[str, list[float]]:
    """Per second: arrivals, successes by arrival time, completions and failures by end."""
    arrived = per_second((span[0] for span in result.spans), seconds)
    succeeded = per_second(
        (span[0] for span, o in zip(result.spans, result.outcomes, strict=True) if o.ok), seconds
    )
    ended_ok = per_second(
        (span[1] for span, o in zip(result.spans, result.outcomes, strict=True) if o.ok), seconds
    )
    ended_failed = per_second(
        (span[1] for span, o in zip(result.spans, result.outcomes, strict=True) if not o.ok),
        seconds,
    )
    return {
        "arrivals": [float(a) for a in arrived],
        "success_rate": [
            round(s / a, 6) if a else 1.0 for s, a in zip(succeeded, arrived, strict=True)
        ],
        "throughput": [float(c) for c in ended_ok],
        "failures": [float(f) for f in ended_failed],
    }


def recovery_time(line: dict[str, list[float]], fault_at: float) -> float | None:
    """Seconds from the fault until success is back to RECOVERY_SHARE of before, and stays."""
    start = int(fault_at)
    before = [
        rate
        for rate, arrived in zip(
            line["success_rate"][:start], line["arrivals"][:start], strict=True
        )
        if arrived
    ]
    baseline = statistics.fmean(before) if before else 1.0
    rates = line["success_rate"]
    for second in range(start, len(rates) - RECOVERY_WINDOW_S + 1):
        window = rates[second : second + RECOVERY_WINDOW_S]
        if all(rate >= RECOVERY_SHARE * baseline for rate in window):
            return max(0.0, second - fault_at)
    return None


def exp2(ctx: Context) -> None:
    if ctx.quick:
        workers, models, rate, duration, kill_at, down_s = 4, 4, 4.0, 60.0, 20.0, 5.0
    else:
        workers, models, rate, duration, kill_at, down_s = 16, 8, 8.0, 300.0, 100.0, 10.0
    options = WorkloadOptions(duration_s=duration, seed=ctx.seed, rate_rps=rate, models=models)
    config = ClusterConfig(workers=workers, seed=ctx.seed)
    names = [f"worker-{i}" for i in range(workers)]
    victims = tuple(sorted(child_rng(ctx.seed, "exp2").sample(names, max(1, workers // 4))))
    arms = {
        "coordinator": [
            Fault(kill_at, KILL_COORDINATOR),
            Fault(kill_at + down_s, RESTART_COORDINATOR),
        ],
        "workers": [Fault(kill_at, KILL_WORKER, victims)],
    }
    ctx.runs_total = len(arms)
    seconds = int(duration)
    out: dict[str, Any] = {}
    lines_by_arm: dict[str, dict[str, list[float]]] = {}
    for arm, faults in arms.items():
        result = ctx.simulate(config, options, faults)
        line = timeline(result, seconds)
        lines_by_arm[arm] = line
        summary = summarize(result)
        summary["success_rate"] = round(summary["completed"] / max(1, summary["requests"]), 6)
        summary["time_to_recovery_s"] = recovery_time(line, kill_at)
        if arm == "coordinator":
            restart = kill_at + down_s
            joins = [
                at for at, event, _ in result.notices if event == "worker_joined" and at >= restart
            ]
            summary["view_recovered_s"] = (
                round(sorted(joins)[workers - 1] - restart, 6) if len(joins) >= workers else None
            )
        else:
            lost = [
                at for at, event, w in result.notices if event == "worker_lost" and w in victims
            ]
            summary["failure_detected_s"] = (
                round(max(lost) - kill_at, 6) if len(lost) == len(victims) else None
            )
        summary["faults"] = result.faults
        summary["timeline"] = line
        out[arm] = summary
    setup = {
        "workers": workers,
        "models": models,
        "rate_rps": rate,
        "duration_s": duration,
        "kill_at_s": kill_at,
        "coordinator_down_s": down_s,
        "killed_workers": list(victims),
        "seed": ctx.seed,
        "policy": config.policy,
        "recovery": f"success rate by arrival second >= {RECOVERY_SHARE:.0%} of pre-fault "
        f"for {RECOVERY_WINDOW_S} s",
    }
    coordinator, workers_arm = out["coordinator"], out["workers"]
    markdown = [
        "# exp2: fault tolerance (centralized)",
        "",
        f"{workers} workers, {rate:g} req/s for {duration:g} s, policy {config.policy}, seed "
        f"{ctx.seed}. Arm *coordinator*: the coordinator dies at {kill_at:g} s and restarts "
        f"{down_s:g} s later with an empty view. Arm *workers*: {len(victims)} of {workers} "
        f"workers die at {kill_at:g} s for good. Recovery: the share of requests (by arrival "
        f"second) that succeed is back to {RECOVERY_SHARE:.0%} of its pre-fault level for "
        f"{RECOVERY_WINDOW_S} s in a row.",
        "",
        *table(
            ["arm", "requests", "success rate", "time to recovery (s)", "failures"],
            [
                (
                    arm,
                    s["requests"],
                    f"{s['success_rate']:.1%}",
                    fmt(s["time_to_recovery_s"], 1),
                    ", ".join(f"{k}: {v}" for k, v in s["failures"].items()) or "none",
                )
                for arm, s in out.items()
            ],
        ),
        "",
        f"- The restarted coordinator knew every worker again "
        f"{fmt(coordinator['view_recovered_s'], 3)} s after it came back (soft state: one "
        f"report interval at most).",
        f"- The coordinator dropped the dead workers {fmt(workers_arm['failure_detected_s'], 1)} "
        "s after they died (WORKER_TIMEOUT plus the expiry check period, unless a placement "
        "expired them first); requests already on them fail (`no_result` / `unfinished`).",
    ]
    marks = [(kill_at, "kill")]
    xs = [float(s) for s in range(seconds)]
    for arm, line in lines_by_arm.items():
        arm_marks = marks + ([(kill_at + down_s, "restart")] if arm == "coordinator" else [])

        def draw(
            path: Path,
            line: dict[str, list[float]] = line,
            arm: str = arm,
            arm_marks: list[tuple[float, str]] = arm_marks,
        ) -> Path:
            return plots.panels(
                path,
                [
                    ("completed/s", {"throughput": (xs, line["throughput"])}),
                    ("failed/s", {"failures": (xs, line["failures"])}),
                    ("success rate\n(by arrival)", {"success": (xs, line["success_rate"])}),
                ],
                f"exp2: {arm} killed at {kill_at:g} s (centralized)",
                "seconds into the workload",
                arm_marks,
            )

        ctx.plot(f"{arm}", draw)
    ctx.write({"experiment": "exp2", "setup": setup, "centralized": out}, markdown)


# -- exp3 ----------------------------------------------------------------------------------


def spread_over_time(
    series: dict[str, list[tuple[float, int, float]]], column: int
) -> tuple[list[float], list[float]]:
    """Per sample time: the standard deviation across workers of one column."""
    by_time: dict[float, list[float]] = {}
    for samples in series.values():
        for sample in samples:
            by_time.setdefault(sample[0], []).append(float(sample[column]))
    times = sorted(by_time)
    return times, [statistics.pstdev(by_time[t]) for t in times]


def exp3(ctx: Context) -> None:
    workers, models, rate, duration = (4, 4, 6.0, 60.0) if ctx.quick else (16, 8, 24.0, 300.0)
    options = WorkloadOptions(duration_s=duration, seed=ctx.seed, rate_rps=rate, models=models)
    ctx.runs_total = len(POLICY_NAMES)
    out: dict[str, Any] = {}
    spreads: dict[str, dict[str, tuple[list[float], list[float]]]] = {"queue": {}, "util": {}}
    for policy in POLICY_NAMES:
        config = ClusterConfig(workers=workers, policy=policy, seed=ctx.seed, record_series=True)
        result = ctx.simulate(config, options)
        per_worker = result.report["workers"]["per_worker"]
        queue_means = [w["queue_depth"]["mean"] for w in per_worker]
        util_means = [w["gpu_utilization"]["mean"] for w in per_worker]
        completed = [float(w["completed"]) for w in per_worker]
        spreads["queue"][policy] = spread_over_time(result.series, 1)
        spreads["util"][policy] = spread_over_time(result.series, 2)
        out[policy] = {
            "queue_depth": {
                "mean": round(statistics.fmean(queue_means), 6),
                "variance_across_workers": round(statistics.pvariance(queue_means), 6),
                "gini": round(gini(queue_means), 6),
                "mean_std_over_time": round(statistics.fmean(spreads["queue"][policy][1]), 6),
            },
            "gpu_utilization": {
                "mean": round(statistics.fmean(util_means), 6),
                "variance_across_workers": round(statistics.pvariance(util_means), 6),
                "gini": round(gini(util_means), 6),
                "mean_std_over_time": round(statistics.fmean(spreads["util"][policy][1]), 6),
            },
            "completed_gini": round(gini(completed), 6),
            "ttft_p99": result.report["latency"]["ttft"]["p99"],
            "per_worker": per_worker,
        }
    markdown = [
        "# exp3: how evenly the load spreads (centralized)",
        "",
        f"{workers} workers, {models} models, {rate:g} req/s for {duration:g} s, seed "
        f"{ctx.seed}. Per-worker queue depth and GPU utilization are sampled every second from "
        "the coordinator's view (what `status` shows). *Variance* is across workers of each "
        "worker's time-mean; *std over time* is the mean, over samples, of the spread across "
        "workers at that instant; *Gini* is 0 for a perfectly even spread.",
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
                    fmt(s["queue_depth"]["mean"], 2),
                    fmt(s["queue_depth"]["variance_across_workers"], 3),
                    fmt(s["queue_depth"]["gini"], 3),
                    f"{s['gpu_utilization']['mean']:.1%}",
                    fmt(s["gpu_utilization"]["variance_across_workers"], 4),
                    fmt(s["gpu_utilization"]["gini"], 3),
                    fmt(s["gpu_utilization"]["mean_std_over_time"], 3),
                    fmt(s["completed_gini"], 3),
                )
                for policy, s in out.items()
            ],
        ),
    ]
    ctx.plot(
        "spread",
        lambda path: plots.panels(
            path,
            [
                ("queue depth std\nacross workers", spreads["queue"]),
                ("GPU utilization std\nacross workers", spreads["util"]),
            ],
            "exp3: load imbalance over time (centralized)",
            "seconds",
        ),
    )
    ctx.plot(
        "gini",
        lambda path: plots.bars(
            path,
            list(out),
            {
                "utilization Gini": [s["gpu_utilization"]["gini"] for s in out.values()],
                "queue depth Gini": [s["queue_depth"]["gini"] for s in out.values()],
                "completed Gini": [s["completed_gini"] for s in out.values()],
            },
            "exp3: Gini coefficients per policy",
        ),
    )
    setup = {"workers": workers, "models": models, "rate_rps": rate, "duration_s": duration}
    ctx.write({"experiment": "exp3", "setup": setup, "centralized": out}, markdown)


# -- scale ---------------------------------------------------------------------------------

# Simulated seconds of arrivals per cluster size: enough requests for a p99, sized so the
# whole sweep takes about a minute (a 10,000-worker cluster sends 10,000 reports a second).
SCALE_DURATIONS = {10: 300.0, 100: 120.0, 1_000: 30.0, 10_000: 6.0}
QUICK_SCALE_DURATIONS = {10: 30.0, 100: 10.0, 300: 5.0}
SCALE_RATE_PER_WORKER = 0.25  # requests/s per worker: the same load per worker at every size
SCALE_DRAIN_S = 10.0
# Checkpoints start in host memory (a ServerlessLLM-style warm store), so a cold start takes
# at most 7.4 s: runs this short would otherwise be dominated by 73 s disk loads of 70B
# models still under way when they end.
SCALE_PRESTAGE = Tier.HOST


def scale(ctx: Context) -> None:
    durations = QUICK_SCALE_DURATIONS if ctx.quick else SCALE_DURATIONS
    models = 8 if ctx.quick else 10
    ctx.runs_total = len(durations)
    out: dict[str, Any] = {}
    for workers, duration in durations.items():
        options = WorkloadOptions(
            duration_s=duration,
            seed=ctx.seed,
            rate_rps=SCALE_RATE_PER_WORKER * workers,
            models=models,
        )
        config = ClusterConfig(
            workers=workers, seed=ctx.seed, drain_s=SCALE_DRAIN_S, prestage=SCALE_PRESTAGE
        )
        result = ctx.simulate(config, options)
        summary = summarize(result)
        control = summary["control"]
        summary["duration_s"] = duration
        summary["events_per_wall_s"] = round(result.events / max(result.wall_seconds, 1e-9))
        summary["control_per_worker"] = control["per_node"]["worker_mean"]
        summary["control_coordinator"] = control["per_node"]["coordinator"]
        out[str(workers)] = summary
    sizes = [int(size) for size in out]
    markdown = [
        "# scale: placement quality and control-plane cost (centralized)",
        "",
        f"Policy startup-aware, {models} models, {SCALE_RATE_PER_WORKER:g} req/s per worker "
        "(the same load per worker at every size), reports every second, checkpoints "
        "prestaged in host memory (cold starts of at most 7.4 s). Control plane = "
        "worker reports plus schedule requests and responses; per node = sent plus received. "
        "Short runs at large sizes include the warm-up, when every model is cold somewhere, "
        "and end while the longest cold starts still load: those requests fail as "
        "`unfinished`, so the TTFT percentiles (over completed requests) are biased low there.",
        "",
        *table(
            [
                "workers",
                "requests",
                "failed",
                "TTFT p50 (s)",
                "TTFT p99 (s)",
                "cold-start rate",
                "control msg/s",
                "control bytes/s",
                "coordinator msg/s",
                "coordinator bytes/s",
                "per worker bytes/s",
                "wall (s)",
            ],
            [
                (
                    size,
                    s["requests"],
                    s["failed"],
                    fmt(s["ttft"]["p50"]),
                    fmt(s["ttft"]["p99"]),
                    f"{s['cold_start_rate']:.1%}",
                    f"{s['control']['messages_per_s']:,.0f}",
                    f"{s['control']['bytes_per_s']:,.0f}",
                    f"{s['control_coordinator']['messages_per_s']:,.0f}",
                    f"{s['control_coordinator']['bytes_per_s']:,.0f}",
                    f"{s['control_per_worker']['bytes_per_s']:,.0f}",
                    fmt(s["wall_seconds"], 1),
                )
                for size, s in out.items()
            ],
        ),
    ]
    xs = [float(size) for size in sizes]
    rows = list(out.values())
    ctx.plot(
        "quality",
        lambda path: plots.panels(
            path,
            [
                (
                    "TTFT (s)",
                    {
                        "p99": (xs, [s["ttft"]["p99"] for s in rows]),
                        "p50": (xs, [s["ttft"]["p50"] for s in rows]),
                    },
                ),
                ("cold-start rate", {"cold starts": (xs, [s["cold_start_rate"] for s in rows])}),
            ],
            "scale: placement quality (centralized)",
            "workers",
        ),
    )
    ctx.plot(
        "control",
        lambda path: plots.lines(
            path,
            {
                "total bytes/s": (xs, [s["control"]["bytes_per_s"] for s in rows]),
                "coordinator bytes/s": (
                    xs,
                    [s["control_coordinator"]["bytes_per_s"] for s in rows],
                ),
                "per worker bytes/s": (xs, [s["control_per_worker"]["bytes_per_s"] for s in rows]),
                "total msg/s": (xs, [s["control"]["messages_per_s"] for s in rows]),
            },
            "scale: control-plane cost (centralized)",
            "workers",
            "per second",
            log_x=True,
            log_y=True,
        ),
    )
    setup = {
        "durations_s": {str(k): v for k, v in durations.items()},
        "rate_per_worker_rps": SCALE_RATE_PER_WORKER,
        "models": models,
        "policy": "startup-aware",
    }
    ctx.write({"experiment": "scale", "setup": setup, "centralized": out}, markdown)


EXPERIMENTS: dict[str, Callable[[Context], None]] = {
    "exp1": exp1,
    "exp2": exp2,
    "exp3": exp3,
    "scale": scale,
}


def run_experiment(name: str, out: Path, quick: bool = False, seed: int = 0) -> list[Path]:
    """Run one experiment into `out` (created if needed); return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    with Progress(name) as progress:
        ctx = Context(name, out, quick, seed, progress)
        EXPERIMENTS[name](ctx)
        progress.update(1.0, "done")
    written = [out / f"{name}.json", out / f"{name}.md"]
    return written + [out / plot for plot in ctx.plots_written]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "experiment",
        help="run one of the guide's experiments on the simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=tuple(EXPERIMENTS), help="which experiment")
    parser.add_argument("--out", default="results", help="output folder (default results/)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    try:
        written = run_experiment(args.name, Path(args.out), args.quick, args.seed)
    except OSError as error:
        print(f"sllm experiment: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    if plots.unavailable():
        print(f"plots skipped: {plots.unavailable()}", file=sys.stderr)
    return 0

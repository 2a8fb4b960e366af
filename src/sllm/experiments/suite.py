"""`python3 -m sllm experiment exp1|exp2|exp3|scale --out DIR`: the guide's experiments.

Each experiment runs the simulator (`sllm.sim`) on seeded workloads and writes into DIR:
``<name>.json`` (every number), ``<name>.md`` (a summary with tables) and
``<name>-*.png`` (plots; needs the optional ``plot`` extra, matplotlib, and is skipped
with a note otherwise). A progress bar runs on stderr when it is a terminal.

Every experiment has a centralized arm (`sllm.sim.cluster`) and a decentralized arm
(`sllm.sim.decentralized`: gossiping nodes that each schedule from their own view), in
the JSON under ``"centralized"`` and ``"decentralized"``.

- **exp1, performance**: every placement policy on the same workload, in both
  architectures: warm start rate and cold starts, warm placement rate, TTFT and
  end-to-end distributions (CDF
  plots), against the guide's ``seed`` policy as the baseline.
- **exp2, fault tolerance**: centralized, the coordinator is killed mid-run and restarted
  (and, as a second arm, a quarter of the workers are killed for good); decentralized, the
  same quarter of the nodes is killed for good: time to recovery, time until the failure
  is detected everywhere, and the request success rate over time.
- **exp3, utilization distribution**: per-worker queue depth and GPU utilization over
  time for every policy in both architectures, with their variance across workers and
  Gini coefficients.
- **scale**: 10 to 10,000 workers centralized, 10 to 300 nodes decentralized (gossip
  costs the simulator about 100 s of wall time per 5 simulated seconds at 1,000 nodes):
  placement quality (p99 TTFT, cold-start rate) and control-plane cost (messages/s and
  bytes/s in total and per node).

Default sizes finish in about a minute or two each on a 2-core machine; ``--quick`` runs
tiny versions (seconds) for tests.

Not handled yet: decentralized scale runs beyond 300 nodes (too slow in the simulator
for the default budget; see above).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sllm.core.measures import COLD_STARTS, WARM_PLACEMENT_RATE, WARM_START_RATE
from sllm.core.placement import policy_names
from sllm.core.tiers import Tier
from sllm.experiments import plots
from sllm.experiments.options import WorkloadOptions, make_workload
from sllm.experiments.report import dumps
from sllm.sim.cli import CLUSTERS
from sllm.sim.cluster import (
    CentralizedCluster,
    ClusterConfig,
    SimResult,
    SimulatedCluster,
    child_rng,
)
from sllm.sim.decentralized import DecentralizedCluster
from sllm.sim.faults import (
    KILL_COORDINATOR,
    KILL_WORKER,
    RESTART_COORDINATOR,
    Fault,
)
from sllm.sim.progress import Progress

CENTRALIZED = CentralizedCluster.mode
DECENTRALIZED = DecentralizedCluster.mode
MODES = tuple(CLUSTERS)
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
        self,
        config: ClusterConfig,
        options: WorkloadOptions,
        faults: Sequence[Fault] = (),
        mode: str = CENTRALIZED,
        prepare: Callable[[SimulatedCluster], object] | None = None,
    ) -> SimResult:
        """One run of architecture `mode`; `prepare` sees the cluster before it runs."""
        _, arrivals = make_workload(options)
        total = self.runs_total

        def step(fraction: float) -> None:
            note = f"run {self.runs_done + 1}/{total}"
            self.progress.update((self.runs_done + fraction) / total, note)

        cluster = CLUSTERS[mode](config)
        if prepare is not None:
            prepare(cluster)
        result = cluster.run(arrivals, options.duration_s, faults, progress=step)
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
        results["plots"] = list(self.plots_written)
        if self.plots_skipped:
            results["plots_skipped"] = self.plots_skipped
        markdown += ["", "## Plots", ""]
        if self.plots_skipped:
            markdown.append(f"Skipped: {self.plots_skipped}.")
        markdown += [f"![{name}]({name})" for name in self.plots_written]
        json_path = self.out / f"{self.name}.json"
        json_path.write_text(dumps(results), encoding="utf-8")
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
        "warm_start_rate": report["warm_start_rate"],
        "cold_starts": report["cold_starts"],
        "warm_placement_rate": report.get("warm_placement_rate"),
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


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _scale_table(
    size_header: str,
    by_size: dict[str, dict[str, Any]],
    traffic: Sequence[tuple[str, Callable[[dict[str, Any]], float]]],
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
            s["requests"],
            s["failed"],
            fmt(s["ttft"]["p50"]),
            fmt(s["ttft"]["p99"]),
            f"{s['cold_start_rate']:.1%}",
            f"{s['control']['messages_per_s']:,.0f}",
            f"{s['control']['bytes_per_s']:,.0f}",
            *(f"{pick(s):,.0f}" for _, pick in traffic),
            fmt(s["wall_seconds"], 1),
        )
        for size, s in by_size.items()
    ]
    return table(header, rows)


def latencies(result: SimResult, kind: str) -> list[float]:
    return [getattr(o, f"{kind}_s") for o in result.outcomes if o.ok]


def tag(mode: str) -> str:
    """A plot name's suffix: none for the centralized arm (its names came first)."""
    return "" if mode == CENTRALIZED else f"-{mode}"


DECENTRALIZED_NOTE = (
    "Decentralized: every worker is a node that gossips membership and load (SWIM with "
    "Lifeguard) and schedules from its own view with the same policy; the client asks a "
    "random live node, then sends the request where it says."
)


# -- exp1 ----------------------------------------------------------------------------------


def exp1(ctx: Context) -> None:
    workers, models, rate, duration = (4, 4, 3.0, 60.0) if ctx.quick else (16, 10, 8.0, 900.0)
    options = WorkloadOptions(duration_s=duration, seed=ctx.seed, rate_rps=rate, models=models)
    ctx.runs_total = len(policy_names()) * len(MODES)
    runs = {
        mode: {
            policy: ctx.simulate(
                ClusterConfig(workers=workers, policy=policy, seed=ctx.seed), options, mode=mode
            )
            for policy in policy_names()
        }
        for mode in MODES
    }
    summaries: dict[str, dict[str, dict[str, Any]]] = {}
    for mode, results in runs.items():
        by_policy = {policy: summarize(result) for policy, result in results.items()}
        base = by_policy[BASELINE_POLICY]
        for summary in by_policy.values():
            summary["vs_seed"] = {
                "ttft_p50": ratio(summary["ttft"]["p50"], base["ttft"]["p50"]),
                "ttft_p99": ratio(summary["ttft"]["p99"], base["ttft"]["p99"]),
                "e2e_p50": ratio(summary["e2e"]["p50"], base["e2e"]["p50"]),
                "e2e_p99": ratio(summary["e2e"]["p99"], base["e2e"]["p99"]),
                "warm_start_rate_delta": round(
                    summary["warm_start_rate"] - base["warm_start_rate"], 6
                ),
            }
        summaries[mode] = by_policy
    setup = {
        "workers": workers,
        "models": models,
        "rate_rps": rate,
        "duration_s": duration,
        "seed": ctx.seed,
        "baseline": BASELINE_POLICY,
    }
    markdown = [
        "# exp1: performance of the placement policies",
        "",
        f"{workers} workers, {models} models with the Alibaba GenAI popularity skew, Poisson "
        f"arrivals at {rate:g} req/s for {duration:g} s, seed {ctx.seed}. Every policy sees "
        "the same requests in both architectures. Ratios are against the guide's `seed` "
        "policy in the same architecture (lower is better for latency). " + DECENTRALIZED_NOTE,
    ]
    for mode in MODES:
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
                        s["completed"],
                        s["failed"],
                        f"{s['warm_start_rate']:.1%}",
                        s["cold_starts"],
                        percent(s["warm_placement_rate"]),
                        fmt(s["ttft"]["p50"]),
                        fmt(s["ttft"]["p99"]),
                        fmt(s["e2e"]["p50"]),
                        fmt(s["e2e"]["p99"]),
                        fmt(s["vs_seed"]["ttft_p99"], 2),
                        fmt(s["vs_seed"]["e2e_p99"], 2),
                    )
                    for policy, s in summaries[mode].items()
                ],
            ),
        ]
    central, gossip = summaries[CENTRALIZED], summaries[DECENTRALIZED]
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
                    f"{central[policy]['warm_start_rate']:.1%} / "
                    f"{gossip[policy]['warm_start_rate']:.1%}",
                    fmt(ratio(gossip[policy]["ttft"]["p99"], central[policy]["ttft"]["p99"]), 2),
                    fmt(ratio(gossip[policy]["e2e"]["p99"], central[policy]["e2e"]["p99"]), 2),
                )
                for policy in policy_names()
            ],
        ),
    ]
    for mode, results in runs.items():
        by_policy = summaries[mode]
        for kind, what in (("ttft", "time to first token"), ("e2e", "end-to-end latency")):
            curves = {p: latencies(r, kind) for p, r in results.items()}

            def draw_cdf(
                path: Path,
                curves: dict[str, list[float]] = curves,
                title: str = f"exp1: {what} ({mode})",
            ) -> Path:
                return plots.cdf(path, curves, title, "seconds (log scale)")

            ctx.plot(f"{kind}-cdf{tag(mode)}", draw_cdf)
        bars = {
            WARM_START_RATE: [s["warm_start_rate"] for s in by_policy.values()],
            COLD_STARTS: [s["cold_starts"] for s in by_policy.values()],
        }

        def draw_bars(
            path: Path,
            bars: dict[str, list[float]] = bars,
            policies: Sequence[str] = tuple(by_policy),
            title: str = f"exp1: warm start rate and cold starts per policy ({mode})",
        ) -> Path:
            return plots.bars(path, policies, bars, title)

        ctx.plot(f"cache{tag(mode)}", draw_bars)
    ctx.write({"experiment": "exp1", "setup": setup, **summaries}, markdown)


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
    ctx.runs_total = len(arms) + 1
    seconds = int(duration)
    out: dict[str, Any] = {}
    for arm, faults in arms.items():
        result = ctx.simulate(config, options, faults)
        if arm == "coordinator":
            restart = kill_at + down_s
            joins = [
                at for at, event, _ in result.notices if event == "worker_joined" and at >= restart
            ]
            extra = {
                "view_recovered_s": round(sorted(joins)[workers - 1] - restart, 6)
                if len(joins) >= workers
                else None
            }
        else:
            lost = [
                at for at, event, w in result.notices if event == "worker_lost" and w in victims
            ]
            detected = round(max(lost) - kill_at, 6) if len(lost) == len(victims) else None
            extra = {"failure_detected_s": detected}
        out[arm] = fault_arm_summary(result, seconds, kill_at, extra)
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
    gossip = nodes_killed(ctx, config, options, kill_at, victims, seconds)
    setup["detection_bound_s"] = gossip["detection_bound_s"]
    coordinator, workers_arm = out["coordinator"], out["workers"]
    markdown = [
        "# exp2: fault tolerance",
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
        "",
        "## Decentralized",
        "",
        "There is no coordinator to kill. Arm *nodes*: the same "
        f"{len(victims)} of {workers} nodes die at {kill_at:g} s for good (no goodbye). "
        + DECENTRALIZED_NOTE,
        "",
        *table(
            ["arm", "requests", "success rate", "time to recovery (s)", "failures"],
            [
                (
                    "nodes",
                    gossip["requests"],
                    f"{gossip['success_rate']:.1%}",
                    fmt(gossip["time_to_recovery_s"], 1),
                    ", ".join(f"{k}: {v}" for k, v in gossip["failures"].items()) or "none",
                )
            ],
        ),
        "",
        f"- Every live node had marked every killed node dead "
        f"{fmt(gossip['failure_detected_s'], 1)} s after they died (stated detection bound "
        f"{gossip['detection_bound_s']:.1f} s: `GossipConfig.detection_bound`). Until a node "
        "learns it, it may still place requests on a dead node; those fail (`no_result`, or "
        "`unfinished` at the end), as do the requests already running there. The client asks "
        "only live nodes for decisions, as the live driver does.",
    ]
    kill = [(kill_at, "kill")]
    for arm, summary in out.items():
        marks = kill + ([(kill_at + down_s, "restart")] if arm == "coordinator" else [])
        title = f"exp2: {arm} killed at {kill_at:g} s (centralized)"
        draw = functools.partial(draw_fault_arm, line=summary["timeline"], title=title, marks=marks)
        ctx.plot(arm, draw)
    title = f"exp2: nodes killed at {kill_at:g} s (decentralized)"
    ctx.plot(
        "nodes-decentralized",
        functools.partial(draw_fault_arm, line=gossip["timeline"], title=title, marks=kill),
    )
    results = {"experiment": "exp2", "setup": setup, "centralized": out}
    results["decentralized"] = {"nodes": gossip}
    ctx.write(results, markdown)


def fault_arm_summary(
    result: SimResult, seconds: int, kill_at: float, extra: dict[str, Any]
) -> dict[str, Any]:
    """One exp2 arm: the run's summary and recovery, `extra`, then its faults and timeline."""
    line = timeline(result, seconds)
    summary = summarize(result)
    summary["success_rate"] = round(summary["completed"] / max(1, summary["requests"]), 6)
    summary["time_to_recovery_s"] = recovery_time(line, kill_at)
    summary.update(extra)
    summary["faults"] = result.faults
    summary["timeline"] = line
    return summary


def draw_fault_arm(
    path: Path, line: dict[str, list[float]], title: str, marks: list[tuple[float, str]]
) -> Path:
    """One exp2 arm's throughput, failures and success rate per second, faults marked."""
    xs = [float(s) for s in range(len(line["throughput"]))]
    return plots.panels(
        path,
        [
            ("completed/s", {"throughput": (xs, line["throughput"])}),
            ("failed/s", {"failures": (xs, line["failures"])}),
            ("success rate\n(by arrival)", {"success": (xs, line["success_rate"])}),
        ],
        title,
        "seconds into the workload",
        marks,
    )


# How often exp2 looks at every node's membership after the kill (seconds).
DETECTION_PROBE_S = 0.1


def nodes_killed(
    ctx: Context,
    config: ClusterConfig,
    options: WorkloadOptions,
    kill_at: float,
    victims: tuple[str, ...],
    seconds: int,
) -> dict[str, Any]:
    """exp2's decentralized arm: `victims` die at `kill_at`; when does every node know?"""
    detected: list[float] = []

    def prepare(gossip: SimulatedCluster) -> None:
        assert isinstance(gossip, DecentralizedCluster)

        def look(_: None) -> None:
            if detected:
                return
            if all(
                not set(victims) & set(gossip.known_members(name)) for name in gossip.live_workers()
            ):
                detected.append(gossip.now - kill_at)
                return
            if gossip.now < options.duration_s:
                gossip.kernel.schedule(DETECTION_PROBE_S, look, None)

        gossip.at(kill_at, look)

    result = ctx.simulate(
        config, options, [Fault(kill_at, KILL_WORKER, victims)], DECENTRALIZED, prepare
    )
    extra = {
        "failure_detected_s": round(detected[0], 6) if detected else None,
        "detection_bound_s": result.report["simulation"]["membership"]["detection_bound_s"],
    }
    return fault_arm_summary(result, seconds, kill_at, extra)


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
    ctx.runs_total = len(policy_names()) * len(MODES)
    arms: dict[str, dict[str, Any]] = {}
    markdown = [
        "# exp3: how evenly the load spreads",
        "",
        f"{workers} workers, {models} models, {rate:g} req/s for {duration:g} s, seed "
        f"{ctx.seed}. Per-worker queue depth and GPU utilization are sampled every second from "
        "the coordinator's view (centralized) or a random live node's view (decentralized): "
        "what `status` shows. *Variance* is across workers of each worker's time-mean; *std "
        "over time* is the mean, over samples, of the spread across workers at that instant; "
        "*Gini* is 0 for a perfectly even spread. " + DECENTRALIZED_NOTE,
    ]
    for mode in MODES:
        out: dict[str, Any] = {}
        spreads: dict[str, dict[str, tuple[list[float], list[float]]]] = {"queue": {}, "util": {}}
        for policy in policy_names():
            config = ClusterConfig(
                workers=workers, policy=policy, seed=ctx.seed, record_series=True
            )
            result = ctx.simulate(config, options, mode=mode)
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
        arms[mode] = out
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

        def draw_spread(
            path: Path,
            spreads: dict[str, dict[str, tuple[list[float], list[float]]]] = spreads,
            title: str = f"exp3: load imbalance over time ({mode})",
        ) -> Path:
            return plots.panels(
                path,
                [
                    ("queue depth std\nacross workers", spreads["queue"]),
                    ("GPU utilization std\nacross workers", spreads["util"]),
                ],
                title,
                "seconds",
            )

        def draw_gini(
            path: Path,
            out: dict[str, Any] = out,
            title: str = f"exp3: Gini coefficients per policy ({mode})",
        ) -> Path:
            return plots.bars(
                path,
                list(out),
                {
                    "utilization Gini": [s["gpu_utilization"]["gini"] for s in out.values()],
                    "queue depth Gini": [s["queue_depth"]["gini"] for s in out.values()],
                    "completed Gini": [s["completed_gini"] for s in out.values()],
                },
                title,
            )

        ctx.plot(f"spread{tag(mode)}", draw_spread)
        ctx.plot(f"gini{tag(mode)}", draw_gini)
    setup = {"workers": workers, "models": models, "rate_rps": rate, "duration_s": duration}
    ctx.write({"experiment": "exp3", "setup": setup, **arms}, markdown)


# -- scale ---------------------------------------------------------------------------------

# Simulated seconds of arrivals per cluster size: enough requests for a p99, sized so the
# whole sweep takes about a minute (a 10,000-worker cluster sends 10,000 reports a second).
SCALE_DURATIONS = {10: 300.0, 100: 120.0, 1_000: 30.0, 10_000: 6.0}
QUICK_SCALE_DURATIONS = {10: 30.0, 100: 10.0, 300: 5.0}
# The decentralized arm stops at 300 nodes: the simulator runs the production gossip code,
# about 5,000 events per wall second at 1,000 nodes (5 simulated seconds took 93 s on the
# development machine), so larger sizes do not fit the experiment's budget.
DECENTRALIZED_SCALE_DURATIONS = {10: 300.0, 100: 60.0, 300: 30.0}
QUICK_DECENTRALIZED_SCALE_DURATIONS = {10: 30.0, 100: 5.0}
SCALE_RATE_PER_WORKER = 0.25  # requests/s per worker: the same load per worker at every size
SCALE_DRAIN_S = 10.0
# Checkpoints start in host memory (a ServerlessLLM-style warm store), so a cold start takes
# at most 7.4 s: runs this short would otherwise be dominated by 73 s disk loads of 70B
# models still under way when they end.
SCALE_PRESTAGE = Tier.HOST


def scale(ctx: Context) -> None:
    sizes_by_mode = {
        CENTRALIZED: QUICK_SCALE_DURATIONS if ctx.quick else SCALE_DURATIONS,
        DECENTRALIZED: (
            QUICK_DECENTRALIZED_SCALE_DURATIONS if ctx.quick else DECENTRALIZED_SCALE_DURATIONS
        ),
    }
    models = 8 if ctx.quick else 10
    ctx.runs_total = sum(len(durations) for durations in sizes_by_mode.values())
    arms: dict[str, dict[str, Any]] = {}
    for mode, durations in sizes_by_mode.items():
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
            result = ctx.simulate(config, options, mode=mode)
            summary = summarize(result)
            control = summary["control"]
            summary["duration_s"] = duration
            summary["events_per_wall_s"] = round(result.events / max(result.wall_seconds, 1e-9))
            summary["control_per_worker"] = control["per_node"]["worker_mean"]
            if mode == CENTRALIZED:
                summary["control_coordinator"] = control["per_node"]["coordinator"]
            out[str(workers)] = summary
        arms[mode] = out
    central, gossip = arms[CENTRALIZED], arms[DECENTRALIZED]
    markdown = [
        "# scale: placement quality and control-plane cost",
        "",
        f"Policy startup-aware, {models} models, {SCALE_RATE_PER_WORKER:g} req/s per worker "
        "(the same load per worker at every size), reports every second, checkpoints "
        "prestaged in host memory (cold starts of at most 7.4 s). Control plane = "
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
                ("coordinator msg/s", lambda s: s["control_coordinator"]["messages_per_s"]),
                ("coordinator bytes/s", lambda s: s["control_coordinator"]["bytes_per_s"]),
                ("per worker bytes/s", lambda s: s["control_per_worker"]["bytes_per_s"]),
            ],
        ),
        "",
        "## Decentralized",
        "",
        DECENTRALIZED_NOTE + " Sizes stop at "
        f"{max(sizes_by_mode[DECENTRALIZED]):,} nodes: the simulator runs the production "
        "gossip code, and 1,000 nodes simulate at about 5,000 events per wall second "
        "(5 simulated seconds took 93 s), which does not fit this experiment's budget.",
        "",
        *_scale_table(
            "nodes",
            gossip,
            [
                ("per node msg/s", lambda s: s["control_per_worker"]["messages_per_s"]),
                ("per node bytes/s", lambda s: s["control_per_worker"]["bytes_per_s"]),
            ],
        ),
    ]

    def column(
        out: dict[str, Any], pick: Callable[[dict[str, Any]], float]
    ) -> tuple[list[float], list[float]]:
        return [float(size) for size in out], [pick(s) for s in out.values()]

    ctx.plot(
        "quality",
        lambda path: plots.panels(
            path,
            [
                (
                    "TTFT (s)",
                    {
                        "p99 centralized": column(central, lambda s: s["ttft"]["p99"]),
                        "p50 centralized": column(central, lambda s: s["ttft"]["p50"]),
                        "p99 decentralized": column(gossip, lambda s: s["ttft"]["p99"]),
                        "p50 decentralized": column(gossip, lambda s: s["ttft"]["p50"]),
                    },
                ),
                (
                    "cold-start rate",
                    {
                        "centralized": column(central, lambda s: s["cold_start_rate"]),
                        "decentralized": column(gossip, lambda s: s["cold_start_rate"]),
                    },
                ),
            ],
            "scale: placement quality",
            "workers",
        ),
    )
    ctx.plot(
        "control",
        lambda path: plots.lines(
            path,
            {
                "centralized total bytes/s": column(central, lambda s: s["control"]["bytes_per_s"]),
                "coordinator bytes/s": column(
                    central, lambda s: s["control_coordinator"]["bytes_per_s"]
                ),
                "centralized per worker bytes/s": column(
                    central, lambda s: s["control_per_worker"]["bytes_per_s"]
                ),
                "decentralized total bytes/s": column(
                    gossip, lambda s: s["control"]["bytes_per_s"]
                ),
                "decentralized per node bytes/s": column(
                    gossip, lambda s: s["control_per_worker"]["bytes_per_s"]
                ),
            },
            "scale: control-plane cost",
            "workers",
            "bytes per second",
            log_x=True,
            log_y=True,
        ),
    )
    setup = {
        "durations_s": {
            mode: {str(k): v for k, v in durations.items()}
            for mode, durations in sizes_by_mode.items()
        },
        "rate_per_worker_rps": SCALE_RATE_PER_WORKER,
        "models": models,
        "policy": "startup-aware",
    }
    ctx.write({"experiment": "scale", "setup": setup, **arms}, markdown)


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

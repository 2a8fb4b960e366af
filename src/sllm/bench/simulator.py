"""`sllm bench simulator`: how fast the simulator runs a large centralized cluster.

The target (issue 5): one simulated hour of a 1,000-worker cluster, with at least
1,000,000 requests and full control traffic (every worker report, every second), in at
most 120 s of wall time on one core. The benchmark runs exactly that by default
(Poisson arrivals at 280 req/s, so about 1,008,000 requests, over 10 models, policy
startup-aware, every worker reporting each second) and reports simulated requests and
events per wall-clock second and the ratio of the measured wall time to the target's.
``--hours`` and ``--workers`` run a smaller case; with 1,000 workers the target's wall time
is then projected linearly in simulated time (the cost per simulated second is steady once
warm; the drain after the last arrival is counted at its real length in both).

Wall time counts the whole `CentralizedCluster.run` call (the simulation, its report and
its closing garbage collection), not the workload generation, which is reported on its
own. Beside it come the process's CPU time over the same span and, on Linux, the time the
hypervisor took from the machine's CPUs (steal): the wall time of one run on a shared
machine moves by a factor of two or more from day to day, and these say whether the run
had its core to itself. Neither sees a neighbour contending for the shared caches, which
slows this workload (mostly cache misses) without showing anywhere.

``--profile`` runs it under cProfile and splits the time between the production core
(`sllm.core`, `sllm.engines`), the simulator's glue (`sllm.sim`) and the rest; profiling
roughly doubles the wall time, so the split is indicative.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sysconfig
import time
from dataclasses import dataclass
from typing import Any

from sllm.sim.cluster import CentralizedCluster, ClusterConfig
from sllm.sim.progress import Progress
from sllm.workload.options import WorkloadOptions, make_workload

TARGET_HOURS = 1.0
TARGET_WORKERS = 1_000
TARGET_REQUESTS = 1_000_000
TARGET_WALL_S = 120.0
# 280 req/s for an hour is 1,008,000 expected arrivals: at least a million for any seed.
DEFAULT_RATE_RPS = 280.0
DEFAULT_MODELS = 10  # the base catalog's first ten: every one fits a 141 GB GPU
GROUPS = (("core", ("sllm/core/", "sllm/engines/")), ("sim", ("sllm/sim/",)))
# The anchor, measured on this kind of machine: an open-source LLM cluster
# simulator, with neither cold starts nor a control plane, replays the 19,366-request
# Azure conversation trace at about 1,500 to 5,000 requests per wall-clock second.
ANCHOR_REQUESTS_PER_WALL_S = (1_500, 5_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileSplit:
    """Shares of the profiled time (own time per function): by group, and the top functions."""

    core: float
    sim: float
    other: float
    top: list[tuple[str, float]]  # (function, share), largest first

    def as_dict(self) -> dict[str, object]:
        return {
            "core": self.core,
            "sim": self.sim,
            "other": self.other,
            "top": [{"function": where, "share": share} for where, share in self.top],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorBench:
    """One run of the benchmark (its JSON keys are docs/benchmarks.md's)."""

    workers: int
    simulated_hours: float
    simulated_seconds: float
    rate_rps: float
    models: int
    requests: int
    completed: int
    worker_reports: int
    datagrams: int  # sent, every plane
    events: int
    wall_s: float
    cpu_s: float
    machine_steal_s: float | None  # None where /proc/stat does not say
    workload_generation_s: float
    requests_per_wall_s: int
    requests_per_wall_s_to_anchor_high: float
    events_per_wall_s: int
    simulated_s_per_wall_s: float
    projected_target_wall_s: float | None  # None unless the target's 1,000 workers ran
    python: str
    # How the interpreter was built moves the result: one with libpython as a shared
    # library and no profile-guided optimization runs slower than a static, PGO-built
    # one (measured in docs/benchmarks.md).
    python_shared_library: bool
    profile_split: ProfileSplit | None

    @property
    def wall_to_target_ratio(self) -> float | None:
        projected = self.projected_target_wall_s
        return None if projected is None else round(projected / TARGET_WALL_S, 2)

    def as_dict(self) -> dict[str, object]:
        document: dict[str, object] = {
            "workers": self.workers,
            "simulated_hours": self.simulated_hours,
            "simulated_seconds": self.simulated_seconds,
            "rate_rps": self.rate_rps,
            "models": self.models,
            "requests": self.requests,
            "completed": self.completed,
            "worker_reports": self.worker_reports,
            "datagrams": self.datagrams,
            "events": self.events,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "machine_steal_s": self.machine_steal_s,
            "workload_generation_s": self.workload_generation_s,
            "requests_per_wall_s": self.requests_per_wall_s,
            "anchor_requests_per_wall_s": list(ANCHOR_REQUESTS_PER_WALL_S),
            "requests_per_wall_s_to_anchor_high": self.requests_per_wall_s_to_anchor_high,
            "events_per_wall_s": self.events_per_wall_s,
            "simulated_s_per_wall_s": self.simulated_s_per_wall_s,
            "target": {
                "workers": TARGET_WORKERS,
                "hours": TARGET_HOURS,
                "requests": TARGET_REQUESTS,
                "wall_s": TARGET_WALL_S,
            },
            "projected_target_wall_s": self.projected_target_wall_s,
            "wall_to_target_ratio": self.wall_to_target_ratio,
            "python": self.python,
            "python_shared_library": self.python_shared_library,
        }
        if self.profile_split is not None:
            document["profile_split"] = self.profile_split.as_dict()
        return document


def profile_split(profile: cProfile.Profile) -> ProfileSplit:
    """Share of profiled time (own time per function) by group: core, sim, other."""
    stats = pstats.Stats(profile)
    totals = {"core": 0.0, "sim": 0.0, "other": 0.0}
    top: list[tuple[float, str]] = []
    for (filename, line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]
        group = next(
            (label for label, parts in GROUPS if any(part in filename for part in parts)), "other"
        )
        totals[group] += own
        top.append((own, f"{filename.rsplit('/src/', 1)[-1]}:{line}({name})"))
    whole = sum(totals.values()) or 1.0
    return ProfileSplit(
        core=round(totals["core"] / whole, 3),
        sim=round(totals["sim"] / whole, 3),
        other=round(totals["other"] / whole, 3),
        top=[(where, round(own / whole, 3)) for own, where in sorted(top)[-12:][::-1]],
    )


def steal_seconds() -> float | None:
    """CPU time the hypervisor has taken from this machine so far, all CPUs (Linux only)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # "cpu user nice system idle iowait irq softirq steal ...", in clock ticks.
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def run(
    hours: float, workers: int, rate: float, models: int, seed: int, profile: bool
) -> SimulatorBench:
    duration = hours * 3600.0
    started = time.perf_counter()
    _, arrivals = make_workload(
        WorkloadOptions(duration_s=duration, seed=seed, rate_rps=rate, models=models)
    )
    workload_s = time.perf_counter() - started
    cluster = CentralizedCluster(ClusterConfig(workers=workers, seed=seed))
    profiler = cProfile.Profile() if profile else None
    with Progress("bench simulator") as bar:
        if profiler is not None:
            profiler.enable()
        stolen_before = steal_seconds()
        cpu_began = time.process_time()
        began = time.perf_counter()
        result = cluster.run(arrivals, duration, progress=bar.update)
        # The whole call: the report and the run's one garbage collection included.
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        stolen_after = steal_seconds()
        if profiler is not None:
            profiler.disable()
    report = result.report.run
    simulation = result.report.simulation
    sent = simulation.datagrams["sent"]
    assert isinstance(sent, int), "the network counts datagrams"
    by_type = simulation.by_type
    # The full run simulates the target's hour plus the same drain; cost per simulated
    # second is steady once warm, so a shorter run projects linearly in simulated time.
    full_s = TARGET_HOURS * 3600.0 + (result.simulated_seconds - cluster.t0 - duration)
    # Rounded once, so the ratio printed beside it is the ratio of the printed figures.
    projected = (
        round(wall * (cluster.t0 + full_s) / result.simulated_seconds, 1)
        if workers == TARGET_WORKERS
        else None
    )
    return SimulatorBench(
        workers=workers,
        simulated_hours=hours,
        simulated_seconds=result.simulated_seconds,
        rate_rps=rate,
        models=models,
        requests=report.requests,
        completed=report.completed,
        worker_reports=by_type.get("worker_report", {}).get("messages", 0),
        datagrams=sent,
        events=result.events,
        wall_s=round(wall, 2),
        cpu_s=round(cpu, 2),
        machine_steal_s=round(stolen_after - stolen_before, 2)
        if stolen_before is not None and stolen_after is not None
        else None,
        workload_generation_s=round(workload_s, 2),
        requests_per_wall_s=round(report.requests / wall),
        requests_per_wall_s_to_anchor_high=round(
            report.requests / wall / ANCHOR_REQUESTS_PER_WALL_S[1], 2
        ),
        events_per_wall_s=round(result.events / wall),
        simulated_s_per_wall_s=round(result.simulated_seconds / wall, 2),
        projected_target_wall_s=projected,
        python=platform.python_version(),
        python_shared_library=bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
        profile_split=profile_split(profiler) if profiler is not None else None,
    )


def describe(result: SimulatorBench) -> list[str]:
    lines = [
        f"{result.workers:,} workers, {result.simulated_seconds:,.0f} simulated s, "
        f"{result.requests:,} requests, {result.worker_reports:,} worker reports, "
        f"{result.events:,} events",
        f"wall {result.wall_s:,.1f} s (+ {result.workload_generation_s:.1f} s to build "
        f"the workload): {result.requests_per_wall_s:,} requests/s, "
        f"{result.events_per_wall_s:,} events/s, "
        f"{result.simulated_s_per_wall_s:g} simulated s per wall s",
        f"cpu {result.cpu_s:,.1f} s"
        + (
            f", hypervisor steal {result.machine_steal_s:,.2f} s"
            if result.machine_steal_s is not None
            else ""
        ),
        f"python {result.python}"
        + (", a shared-library build" if result.python_shared_library else ""),
    ]
    low, high = ANCHOR_REQUESTS_PER_WALL_S
    lines.append(
        f"anchor: a simulator with neither cold starts nor a control plane replays "
        f"{low:,}-{high:,} requests/s on this kind of machine; this run "
        f"{result.requests_per_wall_s:,}/s, {result.requests_per_wall_s_to_anchor_high:g}x "
        f"its upper end"
    )
    projected = result.projected_target_wall_s
    ratio = result.wall_to_target_ratio
    if projected is None or ratio is None:
        lines.append(
            f"target: {TARGET_WORKERS:,} workers; run with --workers {TARGET_WORKERS} to compare"
        )
    else:
        verdict = "met" if ratio <= 1.0 else f"NOT met: {ratio:.2f}x the target's wall time"
        lines.append(
            f"target: 1 simulated hour of {TARGET_WORKERS:,} workers, >= {TARGET_REQUESTS:,} "
            f"requests in <= {TARGET_WALL_S:.0f} s; "
            f"{'measured' if result.simulated_hours >= TARGET_HOURS else 'projected'} "
            f"{projected:,.1f} s ({verdict})"
        )
    split = result.profile_split
    if split is not None:
        lines.append(
            f"profile: core {split.core:.0%}, simulator glue {split.sim:.0%}, "
            f"other {split.other:.0%}"
        )
        lines += [f"  {share:6.1%}  {where}" for where, share in split.top]
    return lines


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "simulator",
        help="simulated requests/s and events/s of a 1,000-worker cluster-hour",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--hours", type=float, default=TARGET_HOURS, help="simulated hours (1)")
    parser.add_argument("--workers", type=int, default=TARGET_WORKERS, help="workers (1000)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_RPS, help="requests/s (280)")
    parser.add_argument("--models", type=int, default=DEFAULT_MODELS, help="models (10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="split the time by package")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    if args.hours <= 0 or args.workers < 1 or args.rate <= 0 or args.models < 1:
        print("sllm bench simulator: --hours, --workers, --rate and --models must be > 0")
        return 2
    result = run(args.hours, args.workers, args.rate, args.models, args.seed, args.profile)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print("\n".join(describe(result)))
    return 0

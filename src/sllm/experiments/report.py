"""The run report: one shape for every driver (live centralized, live decentralized, simulator).

A driver records each request's outcome and samples each worker's queue depth and GPU
utilization over time; `build_report` turns those into the JSON every experiment writes
and `render_report` into the text the scripts print. Workers are listed in `worker_order`
(``node-2`` before ``node-10``). Keeping one builder means the keys
(`requests`, `completed`, `failed`, `retried`, `lost`, `unfinished`, `warm_start_rate`,
`cold_starts`, `latency`, `workers`) cannot drift between the live system and the
simulator.

Two measures of "was the model already there" sit side by side (`sllm.core.measures`
defines both): the warm start rate and cold starts, counted here from the completed
requests, and, when the driver hands in its schedulers' counters, the warm placement rate
with warm and cold placements, the figures the periodic status prints.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sllm.core.measures import (
    COLD_PLACEMENTS,
    COLD_STARTS,
    WARM_PLACEMENT_RATE,
    WARM_START_RATE,
    Placements,
    warm_start_rate,
)
from sllm.records import record

PERCENTILES = (50, 95, 99)
# Failure reasons that mean the system gave the client no answer within its bounds: no
# decision, or no result by the request's deadline. A run that loses no request to a dead
# worker has none of them.
NO_ANSWER_REASONS = frozenset({"no_decision", "no_result"})
# The reason of a request the run itself cut off: still queued or running, on a worker
# nobody declared lost, when the drain after the last arrival ended. Counted apart from
# the lost ones: the system had not failed it, the experiment stopped waiting.
UNFINISHED = "unfinished"


_DIGITS = re.compile(r"(\d+)")


def worker_order(worker_id: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that reads a worker id's numbers as numbers: ``node-2`` before ``node-10``.

    The id split into text and numbers alternates text at even places and numbers at odd
    ones, so two keys compare text with text and number with number. The id itself breaks
    the tie of ``node-01`` with ``node-1``.
    """
    parts = _DIGITS.split(worker_id)
    numbered = tuple(int(part) if index % 2 else part for index, part in enumerate(parts))
    return numbered, worker_id


@record
class RequestOutcome:
    """How one request ended, as its client saw it; latencies in seconds."""

    request_id: str
    model: str
    ok: bool
    reason: str = ""
    worker_id: str = ""
    cold_start: bool = False
    queue_s: float = 0.0
    ttft_s: float = 0.0
    e2e_s: float = 0.0


@dataclass(slots=True)
class WorkerSamples:
    """Periodic samples of one worker's queue depth and GPU utilization."""

    queue_depth: list[float] = field(default_factory=list)
    gpu_utilization: list[float] = field(default_factory=list)

    def add(self, queue_depth: float, gpu_utilization: float) -> None:
        self.queue_depth.append(queue_depth)
        self.gpu_utilization.append(gpu_utilization)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def _distribution(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    summary = {f"p{q}": round(percentile(ordered, q), 6) for q in PERCENTILES}
    summary["mean"] = round(statistics.fmean(ordered), 6) if ordered else 0.0
    return summary


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Population mean and standard deviation, rounded as the report prints them.

    Two passes of `math.fsum`, whose sums of floats are exact: the figures agree with
    `statistics.pstdev` far below the six decimals kept, at a twentieth of its cost (it
    works in exact fractions, and a simulated hour of 1,000 workers has 7.2 million
    samples, which took it seconds).
    """
    if not values:
        return {"mean": 0.0, "std": 0.0}
    mean = math.fsum(values) / len(values)
    deviations = [value - mean for value in values]
    variance = math.fsum([deviation * deviation for deviation in deviations]) / len(values)
    return {"mean": round(mean, 6), "std": round(math.sqrt(variance), 6)}


def build_report(
    outcomes: Sequence[RequestOutcome],
    samples: Mapping[str, WorkerSamples],
    active_workers: int,
    extra: Mapping[str, Any] | None = None,
    retried: int = 0,
    placements: Placements | None = None,
) -> dict[str, Any]:
    """The run's JSON report. `extra` keys (policy, seed, duration, ...) come first.

    `retried` counts placements after a request's first (its worker died before it
    started); ``lost`` counts the failures in `NO_ANSWER_REASONS`, and ``unfinished`` the
    requests the run's end cut off (`UNFINISHED`). `placements` are the schedulers'
    counters at the end of the run, when the driver could read them.
    """
    completed = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    cold = sum(1 for o in completed if o.cold_start)
    served_by = Counter(o.worker_id for o in completed)
    per_worker: list[dict[str, Any]] = []
    for worker_id in sorted(set(samples) | set(served_by), key=worker_order):
        worker_samples = samples.get(worker_id, WorkerSamples())
        per_worker.append(
            {
                "id": worker_id,
                "completed": served_by.get(worker_id, 0),
                "queue_depth": mean_std(worker_samples.queue_depth),
                "gpu_utilization": mean_std(worker_samples.gpu_utilization),
            }
        )
    means_q = [w["queue_depth"]["mean"] for w in per_worker]
    means_u = [w["gpu_utilization"]["mean"] for w in per_worker]
    report: dict[str, Any] = dict(extra or {})
    report.update(
        {
            "requests": len(outcomes),
            "completed": len(completed),
            "failed": len(failed),
            "failures": dict(sorted(Counter(o.reason or "unknown" for o in failed).items())),
            "retried": retried,
            "lost": sum(1 for o in failed if o.reason in NO_ANSWER_REASONS),
            "unfinished": sum(1 for o in failed if o.reason == UNFINISHED),
            "warm_start_rate": round(warm_start_rate(len(completed), cold), 6),
            "cold_starts": cold,
            "latency": {
                "queue": _distribution([o.queue_s for o in completed]),
                "ttft": _distribution([o.ttft_s for o in completed]),
                "e2e": _distribution([o.e2e_s for o in completed]),
            },
            "active_workers": active_workers,
            "workers": {
                "count": len(per_worker),
                "queue_depth": mean_std(means_q),
                "gpu_utilization": mean_std(means_u),
                "per_worker": per_worker,
            },
        }
    )
    if placements is not None:
        report["warm_placement_rate"] = round(placements.rate, 6)
        report["warm_placements"] = placements.warm
        report["cold_placements"] = placements.cold
    return report


def dumps(report: Mapping[str, Any]) -> str:
    """The report as JSON text, the way every sllm report is written."""
    return json.dumps(report, indent=2) + "\n"


def render_report(report: Mapping[str, Any]) -> str:
    """The final report as the scripts print it."""
    latency = report["latency"]
    lines = [
        "=" * 64,
        "FINAL REPORT",
        "=" * 64,
        f"requests {report['requests']}  completed {report['completed']}  "
        f"failed {report['failed']}"
        + (
            f"  ({', '.join(f'{k}: {v}' for k, v in report['failures'].items())})"
            if report["failures"]
            else ""
        ),
        f"retried {report.get('retried', 0)}  lost (no answer) {report.get('lost', 0)}  "
        f"unfinished when the run ended {report.get('unfinished', 0)}  "
        f"active workers {report['active_workers']}",
        f"{WARM_START_RATE} {report['warm_start_rate']:.1%}  "
        f"{COLD_STARTS} {report['cold_starts']} of {report['completed']} completed requests "
        "(waited for a model load)",
    ]
    if "warm_placement_rate" in report:
        placed = report["warm_placements"] + report["cold_placements"]
        lines.append(
            f"{WARM_PLACEMENT_RATE} {report['warm_placement_rate']:.1%}  "
            f"{COLD_PLACEMENTS} {report['cold_placements']} of {placed} placements "
            "(placed where the model had to be loaded)"
        )
    lines.append(f"{'latency (s)':<12} {'p50':>9} {'p95':>9} {'p99':>9}")
    for name in ("queue", "ttft", "e2e"):
        row = latency[name]
        lines.append(f"{name:<12} {row['p50']:>9.3f} {row['p95']:>9.3f} {row['p99']:>9.3f}")
    workers = report["workers"]
    lines.append(
        f"per-worker queue depth mean {workers['queue_depth']['mean']:.2f} "
        f"(std across workers {workers['queue_depth']['std']:.2f}); "
        f"utilization mean {workers['gpu_utilization']['mean']:.1%} "
        f"(std {workers['gpu_utilization']['std']:.1%})"
    )
    lines.append(f"{'worker':<16} {'done':>6} {'queue mean±std':>16} {'util mean±std':>16}")
    for worker in workers["per_worker"]:
        q, u = worker["queue_depth"], worker["gpu_utilization"]
        lines.append(
            f"{worker['id']:<16} {worker['completed']:>6} "
            f"{q['mean']:>8.2f}±{q['std']:<7.2f} {u['mean']:>8.1%}±{u['std']:<7.1%}"
        )
    return "\n".join(lines)


def run_and_report(
    program: str,
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    json_path: str | None,
    extra_render: Callable[[dict[str, Any]], str] | None = None,
) -> int:
    """Run a driver, print its report (and write it as JSON); the scripts' exit code."""
    try:
        report = asyncio.run(run())
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 1
    print(render_report(report))
    if extra_render is not None:
        print(extra_render(report))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as out:
            out.write(dumps(report))
        print(f"report written to {json_path}")
    return 0

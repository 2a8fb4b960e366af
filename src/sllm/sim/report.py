"""The run report: one shape for every driver (live centralized, live decentralized, simulator).

A driver records each request's outcome (`sllm.core.outstanding.RequestOutcome`) and
samples each worker's queue depth and GPU utilization over time (`WorkerSamples`);
`build_report` turns those into a `RunReport`, `render_report` into the text the scripts
print, and `RunReport.as_dict` into the JSON every experiment writes. Workers are listed
in `worker_order` (``node-2`` before ``node-10``). Keeping one builder means the keys
(`requests`, `completed`, `failed`, `retried`, `lost`, `unfinished`, `warm_start_rate`,
`cold_starts`, `latency`, `workers`) cannot drift between the live system and the
simulator.

Why typed records and not one nested dict: a reader (the experiments, the CLI, the tests)
names a field, and mypy checks the name and the type; a misspelt key is an error before it
runs, not a KeyError at the end of a long run. The JSON keys are a documented contract
(docs/simulator.md, README.md): each record's ``as_dict`` writes them, in the
order they have always had, at the edge and nowhere else.

The simulator adds its own section (`SimReport`: ``events``, ``simulation`` with the
network's traffic, membership changes and faults, and ``wall_seconds``). Why it lives
here, in `sim`, and not in `experiments`: the simulator builds it, and `sim` may not import
the package above it.

Two measures of "was the model already there" sit side by side (`sllm.core.measures`
defines both): the warm start rate and cold starts, counted here from the completed
requests, and, when the driver hands in its schedulers' counters, the warm placement rate
with warm and cold placements, the figures the periodic status prints.

Not typed yet: a driver's own opening keys (`RunReport.setup`: policy, seed, the fault
plan of a live run) and the sections the network and the membership hand in
(`SimulationSection.datagrams`, ``by_type``, ``membership``), which their owners build.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sllm.core.measures import (
    COLD_PLACEMENTS,
    COLD_STARTS,
    WARM_PLACEMENT_RATE,
    WARM_START_RATE,
    Placements,
    warm_start_rate,
)
from sllm.core.outstanding import NO_RESULT, UNFINISHED, RequestOutcome

PERCENTILES = (50, 95, 99)
# Failure reasons that mean the system gave the client no answer within its bounds: no
# decision, or no result by the request's deadline. A run that loses no request to a dead
# worker has none of them.
NO_ANSWER_REASONS = frozenset({"no_decision", NO_RESULT})

# A JSON document as `json.dumps` takes it.
Json = dict[str, object]

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


@dataclass(slots=True)
class WorkerSamples:
    """Periodic samples of one worker's queue depth and GPU utilization."""

    queue_depth: list[float] = field(default_factory=list)
    gpu_utilization: list[float] = field(default_factory=list)

    def add(self, queue_depth: float, gpu_utilization: float) -> None:
        self.queue_depth.append(queue_depth)
        self.gpu_utilization.append(gpu_utilization)


# -- the records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """Percentiles and mean of one latency, in seconds, rounded as the report prints them."""

    p50: float
    p95: float
    p99: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p95": self.p95, "p99": self.p99, "mean": self.mean}


@dataclass(frozen=True, slots=True, kw_only=True)
class MeanStd:
    """Population mean and standard deviation (see `mean_std`)."""

    mean: float
    std: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    """The completed requests' queueing, time to first token and end to end."""

    queue: Distribution
    ttft: Distribution
    e2e: Distribution

    def as_dict(self) -> Json:
        return {
            "queue": self.queue.as_dict(),
            "ttft": self.ttft.as_dict(),
            "e2e": self.e2e.as_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLine:
    """One worker: the requests it completed and its sampled queue depth and utilization."""

    worker_id: str
    completed: int
    queue_depth: MeanStd
    gpu_utilization: MeanStd

    def as_dict(self) -> Json:
        return {
            "id": self.worker_id,
            "completed": self.completed,
            "queue_depth": self.queue_depth.as_dict(),
            "gpu_utilization": self.gpu_utilization.as_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkersSummary:
    """Every worker's line, and the spread of their means across workers."""

    count: int
    queue_depth: MeanStd
    gpu_utilization: MeanStd
    per_worker: tuple[WorkerLine, ...]

    def as_dict(self) -> Json:
        return {
            "count": self.count,
            "queue_depth": self.queue_depth.as_dict(),
            "gpu_utilization": self.gpu_utilization.as_dict(),
            "per_worker": [line.as_dict() for line in self.per_worker],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementFigures:
    """The schedulers' warm and cold placements at the end of the run (`Placements`)."""

    warm_placement_rate: float
    warm_placements: int
    cold_placements: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """One run, as every driver reports it (see the module for the JSON keys)."""

    # The driver's own keys (mode, policy, seed, duration...), first in the JSON.
    setup: Mapping[str, object]
    requests: int
    completed: int
    failed: int
    failures: Mapping[str, int]  # reason -> count, sorted by reason
    retried: int
    lost: int
    unfinished: int
    warm_start_rate: float
    cold_starts: int
    latency: Latency
    active_workers: int
    workers: WorkersSummary
    placements: PlacementFigures | None  # None when the driver could not read them

    def as_dict(self) -> Json:
        document: Json = dict(self.setup)
        document.update(
            {
                "requests": self.requests,
                "completed": self.completed,
                "failed": self.failed,
                "failures": dict(self.failures),
                "retried": self.retried,
                "lost": self.lost,
                "unfinished": self.unfinished,
                "warm_start_rate": self.warm_start_rate,
                "cold_starts": self.cold_starts,
                "latency": self.latency.as_dict(),
                "active_workers": self.active_workers,
                "workers": self.workers.as_dict(),
            }
        )
        if self.placements is not None:
            document["warm_placement_rate"] = self.placements.warm_placement_rate
            document["warm_placements"] = self.placements.warm_placements
            document["cold_placements"] = self.placements.cold_placements
        return document


# -- the simulator's section ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """Messages and bytes per second of one node or one mean over nodes."""

    messages_per_s: float
    bytes_per_s: float

    def as_dict(self) -> dict[str, float]:
        return {"messages_per_s": self.messages_per_s, "bytes_per_s": self.bytes_per_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaneTraffic:
    """One plane's messages and bytes, in total and per node, sent plus received."""

    messages: int
    bytes: int
    messages_per_s: float
    bytes_per_s: float
    per_role: Mapping[str, Rate]  # the named nodes: coordinator, client
    worker_mean: Rate
    worker_max: Rate

    def as_dict(self) -> Json:
        per_node: Json = {role: rate.as_dict() for role, rate in self.per_role.items()}
        per_node["worker_mean"] = self.worker_mean.as_dict()
        per_node["worker_max"] = self.worker_max.as_dict()
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "messages_per_s": self.messages_per_s,
            "bytes_per_s": self.bytes_per_s,
            "per_node": per_node,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkFigures:
    """The simulated link, as configured."""

    latency_ms: float
    jitter_ms: float
    loss: float
    duplicate: float

    def as_dict(self) -> Json:
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "loss": self.loss,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationSection:
    """What only a simulated run knows: its size, its network and its faults."""

    workers: int
    simulated_seconds: float
    report_interval_s: float
    worker_timeout_s: float
    link: LinkFigures
    datagrams: Mapping[str, object]  # the network's counts: sent, delivered, lost...
    by_type: Mapping[str, Mapping[str, int]]  # message type -> messages, bytes
    control: PlaneTraffic
    data: PlaneTraffic
    membership: Mapping[str, object]  # the architecture's own membership figures
    faults: tuple[Mapping[str, object], ...]

    def as_dict(self) -> Json:
        return {
            "workers": self.workers,
            "simulated_seconds": self.simulated_seconds,
            "report_interval_s": self.report_interval_s,
            "worker_timeout_s": self.worker_timeout_s,
            "network": {
                "link": self.link.as_dict(),
                "datagrams": dict(self.datagrams),
                "by_type": {name: dict(row) for name, row in self.by_type.items()},
                "control": self.control.as_dict(),
                "data": self.data.as_dict(),
            },
            "membership": dict(self.membership),
            "faults": [dict(fault) for fault in self.faults],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SimReport:
    """A simulated run's report: the run's, then the simulator's keys."""

    run: RunReport
    events: int  # the kernel's
    simulation: SimulationSection
    # The one figure that measures the machine; None leaves it out (byte-identical runs).
    wall_seconds: float | None

    def as_dict(self) -> Json:
        document = self.run.as_dict()
        document["events"] = self.events
        document["simulation"] = self.simulation.as_dict()
        if self.wall_seconds is not None:
            document["wall_seconds"] = self.wall_seconds
        return document


# -- building ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def distribution(values: list[float]) -> Distribution:
    ordered = sorted(values)
    p50, p95, p99 = (round(percentile(ordered, q), 6) for q in PERCENTILES)
    mean = round(statistics.fmean(ordered), 6) if ordered else 0.0
    return Distribution(p50=p50, p95=p95, p99=p99, mean=mean)


def mean_std(values: Sequence[float]) -> MeanStd:
    """Population mean and standard deviation, rounded as the report prints them.

    Two passes of `math.fsum`, whose sums of floats are exact: the figures agree with
    `statistics.pstdev` far below the six decimals kept, at a twentieth of its cost (it
    works in exact fractions, and a simulated hour of 1,000 workers has 7.2 million
    samples, which took it seconds).
    """
    if not values:
        return MeanStd(mean=0.0, std=0.0)
    mean = math.fsum(values) / len(values)
    deviations = [value - mean for value in values]
    variance = math.fsum([deviation * deviation for deviation in deviations]) / len(values)
    return MeanStd(mean=round(mean, 6), std=round(math.sqrt(variance), 6))


def build_report(
    outcomes: Sequence[RequestOutcome],
    samples: Mapping[str, WorkerSamples],
    active_workers: int,
    setup: Mapping[str, object] | None = None,
    retried: int = 0,
    placements: Placements | None = None,
) -> RunReport:
    """The run's report. `setup` keys (policy, seed, duration, ...) come first in its JSON.

    `retried` counts placements after a request's first (its worker died before it
    started); ``lost`` counts the failures in `NO_ANSWER_REASONS`, and ``unfinished`` the
    requests the run's end cut off (`UNFINISHED`). `placements` are the schedulers'
    counters at the end of the run, when the driver could read them.
    """
    completed = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    cold = sum(1 for o in completed if o.cold_start)
    served_by = Counter(o.worker_id for o in completed)
    per_worker: list[WorkerLine] = []
    for worker_id in sorted(set(samples) | set(served_by), key=worker_order):
        worker_samples = samples.get(worker_id, WorkerSamples())
        per_worker.append(
            WorkerLine(
                worker_id=worker_id,
                completed=served_by.get(worker_id, 0),
                queue_depth=mean_std(worker_samples.queue_depth),
                gpu_utilization=mean_std(worker_samples.gpu_utilization),
            )
        )
    return RunReport(
        setup=dict(setup or {}),
        requests=len(outcomes),
        completed=len(completed),
        failed=len(failed),
        failures=dict(sorted(Counter(o.reason or "unknown" for o in failed).items())),
        retried=retried,
        lost=sum(1 for o in failed if o.reason in NO_ANSWER_REASONS),
        unfinished=sum(1 for o in failed if o.reason == UNFINISHED),
        warm_start_rate=round(warm_start_rate(len(completed), cold), 6),
        cold_starts=cold,
        latency=Latency(
            queue=distribution([o.queue_s for o in completed]),
            ttft=distribution([o.ttft_s for o in completed]),
            e2e=distribution([o.e2e_s for o in completed]),
        ),
        active_workers=active_workers,
        workers=WorkersSummary(
            count=len(per_worker),
            queue_depth=mean_std([line.queue_depth.mean for line in per_worker]),
            gpu_utilization=mean_std([line.gpu_utilization.mean for line in per_worker]),
            per_worker=tuple(per_worker),
        ),
        placements=None
        if placements is None
        else PlacementFigures(
            warm_placement_rate=round(placements.rate, 6),
            warm_placements=placements.warm,
            cold_placements=placements.cold,
        ),
    )


def dumps(document: Mapping[str, object]) -> str:
    """A report's JSON text (from its ``as_dict``), the way every sllm report is written."""
    return json.dumps(document, indent=2) + "\n"


def render_report(report: RunReport) -> str:
    """The final report as the scripts print it."""
    latency = report.latency
    failures = report.failures
    lines = [
        "=" * 64,
        "FINAL REPORT",
        "=" * 64,
        f"requests {report.requests}  completed {report.completed}  failed {report.failed}"
        + (f"  ({', '.join(f'{k}: {v}' for k, v in failures.items())})" if failures else ""),
        f"retried {report.retried}  lost (no answer) {report.lost}  "
        f"unfinished when the run ended {report.unfinished}  "
        f"active workers {report.active_workers}",
        f"{WARM_START_RATE} {report.warm_start_rate:.1%}  "
        f"{COLD_STARTS} {report.cold_starts} of {report.completed} completed requests "
        "(waited for a model load)",
    ]
    placements = report.placements
    if placements is not None:
        placed = placements.warm_placements + placements.cold_placements
        lines.append(
            f"{WARM_PLACEMENT_RATE} {placements.warm_placement_rate:.1%}  "
            f"{COLD_PLACEMENTS} {placements.cold_placements} of {placed} placements "
            "(placed where the model had to be loaded)"
        )
    lines.append(f"{'latency (s)':<12} {'p50':>9} {'p95':>9} {'p99':>9}")
    for name, row in (("queue", latency.queue), ("ttft", latency.ttft), ("e2e", latency.e2e)):
        lines.append(f"{name:<12} {row.p50:>9.3f} {row.p95:>9.3f} {row.p99:>9.3f}")
    workers = report.workers
    lines.append(
        f"per-worker queue depth mean {workers.queue_depth.mean:.2f} "
        f"(std across workers {workers.queue_depth.std:.2f}); "
        f"utilization mean {workers.gpu_utilization.mean:.1%} "
        f"(std {workers.gpu_utilization.std:.1%})"
    )
    lines.append(f"{'worker':<16} {'done':>6} {'queue mean±std':>16} {'util mean±std':>16}")
    for line in workers.per_worker:
        q, u = line.queue_depth, line.gpu_utilization
        lines.append(
            f"{line.worker_id:<16} {line.completed:>6} "
            f"{q.mean:>8.2f}±{q.std:<7.2f} {u.mean:>8.1%}±{u.std:<7.1%}"
        )
    return "\n".join(lines)

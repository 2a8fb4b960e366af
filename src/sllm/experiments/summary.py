"""What every experiment shares: its context, one run's headline figures, and table helpers.

Every experiment (`sllm.experiments.suite` lists them) comes in four steps, each a
function of its own, so that each can be tested alone:

- **run** (`run_X(ctx) -> XRuns`): the simulations, and nothing else (the only slow step);
- **analyse** (`analyse_X(runs) -> XResult`): figures from the runs, as typed records;
- **write** (`write_X(result) -> str`): the Markdown summary;
- **plot** (`plot_X(result, plots)`): the PNGs, skipped with a note without matplotlib.

`Experiment` carries the four out in that order (the suite holds one per name), and
`Context.every_policy` is the run of every placement policy in both architectures that
exp1 and exp3 share.

A result's ``as_dict`` gives the experiment's JSON (`experiment_document` writes the
shape shared by exp1, exp3 and scale); its keys are documented in
docs/simulator.md ("The experiments at their default sizes"), and tests read them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from sllm.core.placement import policy_names
from sllm.experiments import plots as plotting
from sllm.sim.cli import CLUSTERS
from sllm.sim.cluster import CentralizedCluster, ClusterConfig, SimResult, SimulatedCluster
from sllm.sim.decentralized import DecentralizedCluster
from sllm.sim.faults import Fault
from sllm.sim.progress import Progress
from sllm.sim.report import (
    Distribution,
    Json,
    PlaneTraffic,
    Rate,
    RunReport,
    build_report,
    dumps,
)
from sllm.workload.options import WorkloadOptions, make_workload

CENTRALIZED = CentralizedCluster.mode
DECENTRALIZED = DecentralizedCluster.mode
MODES = tuple(CLUSTERS)
BASELINE_POLICY = "seed"

DECENTRALIZED_NOTE = (
    "Decentralized: every worker is a node that gossips membership and load (SWIM with "
    "Lifeguard) and schedules from its own view with the same policy; the client asks a "
    "random live node, then sends the request where it says."
)


@dataclass
class Plots:
    """The PNGs of one experiment: drawn into its folder, or skipped with the reason."""

    folder: Path
    name: str
    written: list[str] = field(default_factory=list)
    skipped: str | None = None

    def draw(self, suffix: str, draw: Callable[[Path], object]) -> None:
        """Draw ``<name>-<suffix>.png``, unless matplotlib is missing (then say so once)."""
        reason = plotting.unavailable()
        if reason is not None:
            self.skipped = reason
            return
        path = self.folder / f"{self.name}-{suffix}.png"
        draw(path)
        self.written.append(path.name)


# The simulator's work for one run, in centralized kernel events, so that progress weighs
# each run by its cost. Measured 2026-12-05 (exp1 at its default size, seed 0, and 20
# workers replaying the conversation trace for 600 s): about 5 events per request plus
# 1.3 per worker-second (reports) centralized; about 25 per node-second of gossip
# decentralized, each taking about twice a centralized event's wall time.
EVENTS_PER_REQUEST = 5.0
EVENTS_PER_WORKER_S = {CENTRALIZED: 1.3, DECENTRALIZED: 50.0}


def run_cost(workers: int, options: WorkloadOptions, mode: str = CENTRALIZED) -> float:
    """A run's expected work (`EVENTS_PER_REQUEST`): a 10,000-worker run, or a gossiping
    one, counts for what it costs rather than as one run among many."""
    requests = options.rate_rps * options.duration_s
    return EVENTS_PER_REQUEST * requests + EVENTS_PER_WORKER_S[mode] * workers * options.duration_s


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What `sllm experiment` lets a user choose for one experiment's runs."""

    quick: bool = False  # tiny sizes, for tests
    seed: int = 0  # of the arrivals, the popularity and the cluster
    hours: float | None = None  # simulated hours per run, where the experiment takes it
    # Clients ask again after a refusal with a Retry-After, this often (where the
    # experiment takes it; `ClusterConfig.refusal_retries`).
    refusal_retries: int = 0
    # Runs of each arm and level, with the same arrivals and other cluster seeds, pooled
    # (where the experiment takes it; `summarize_pooled`).
    replicas: int = 1
    # The load levels to run, as fractions of warm capacity, where the experiment takes
    # them; None: the experiment's own.
    levels: tuple[float, ...] | None = None


DEFAULT_OPTIONS = RunOptions()  # `sllm experiment NAME` with no options


@dataclass
class Context:
    """One experiment's options and progress bar; it runs the simulations.

    An experiment declares its runs' costs first (`plan`, with `run_cost`), so the progress
    and its ETA weigh each run by its cost.
    """

    name: str
    progress: Progress
    options: RunOptions = DEFAULT_OPTIONS
    planned: list[float] = field(default_factory=list)  # each run's cost, in run order
    runs_done: int = 0

    def plan(self, costs: Iterable[float]) -> None:
        """The runs to come, by cost (`run_cost`), in the order they will run."""
        self.planned = list(costs)
        self.runs_done = 0

    def simulate(
        self,
        config: ClusterConfig,
        options: WorkloadOptions,
        faults: Sequence[Fault] = (),
        mode: str = CENTRALIZED,
        prepare: Callable[[SimulatedCluster], object] | None = None,
    ) -> SimResult:
        """One run of architecture `mode`; `prepare` sees the cluster before it runs. A run
        beyond the plan is added to it, at its own cost."""
        _, arrivals = make_workload(options)
        if self.runs_done >= len(self.planned):
            self.planned.append(run_cost(config.workers, options, mode))
        total = sum(self.planned)
        before = sum(self.planned[: self.runs_done])
        cost = self.planned[self.runs_done]
        note = f"run {self.runs_done + 1}/{len(self.planned)}"

        def step(fraction: float) -> None:
            self.progress.update((before + fraction * cost) / total, note)

        cluster = CLUSTERS[mode](config)
        if prepare is not None:
            prepare(cluster)
        result = cluster.run(arrivals, options.duration_s, faults, progress=step)
        self.runs_done += 1
        return result

    def every_policy(
        self, options: WorkloadOptions, *, workers: int, record_series: bool = False
    ) -> dict[str, dict[str, SimResult]]:
        """Every placement policy on one workload in both architectures (exp1, exp3):
        mode -> policy -> run, each seeded with the experiment's seed."""
        policies = policy_names()
        self.plan(run_cost(workers, options, mode) for mode in MODES for _ in policies)
        return {
            mode: {
                policy: self.simulate(
                    ClusterConfig(
                        workers=workers,
                        policy=policy,
                        seed=self.options.seed,
                        record_series=record_series,
                    ),
                    options,
                    mode=mode,
                )
                for policy in policies
            }
            for mode in MODES
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """An experiment's outcome, before the files: its JSON and its Markdown."""

    document: Json
    markdown: str


class Entry(Protocol):
    """A typed figure that writes its own JSON."""

    def as_dict(self) -> Json: ...


Runs = TypeVar("Runs")
Result = TypeVar("Result", bound=Entry)


@dataclass(frozen=True, slots=True, kw_only=True)
class Experiment(Generic[Runs, Result]):
    """One experiment's four steps (see the module docstring), carried out in order."""

    run: Callable[[Context], Runs]
    analyse: Callable[[Runs], Result]
    write: Callable[[Result], str]
    plot: Callable[[Result, Plots], None]

    def carry_out(self, ctx: Context, plots: Plots) -> tuple[Result, Written]:
        """The steps: the analysed result (a tally over several runs reads it) and what
        to write."""
        result = self.analyse(self.run(ctx))
        self.plot(result, plots)
        return result, Written(document=result.as_dict(), markdown=self.write(result))


def write_files(out: Path, name: str, written: Written, plots: Plots) -> list[Path]:
    """``<name>.json`` and ``<name>.md`` (with the plots listed); the paths of every file."""
    document = dict(written.document)
    document["plots"] = list(plots.written)
    if plots.skipped:
        document["plots_skipped"] = plots.skipped
    notes = [f"Skipped: {plots.skipped}."] if plots.skipped else []
    notes += [f"![{name}]({name})" for name in plots.written]
    markdown = "\n".join([written.markdown, "", "## Plots", "", *notes]) + "\n"
    json_path = out / f"{name}.json"
    json_path.write_text(dumps(document), encoding="utf-8")
    md_path = out / f"{name}.md"
    md_path.write_text(markdown, encoding="utf-8")
    return [json_path, md_path, *(out / png for png in plots.written)]


# -- one run's headline figures ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """The headline numbers of one run (the JSON keys of every experiment's entries)."""

    requests: int
    completed: int
    failed: int
    failures: Mapping[str, int]
    warm_start_rate: float
    cold_starts: int
    warm_placement_rate: float | None
    cold_start_rate: float
    ttft: Distribution
    e2e: Distribution
    queue: Distribution
    control: PlaneTraffic
    events: int
    wall_seconds: float

    def as_dict(self) -> Json:
        per_node = self.control.as_dict()["per_node"]
        return {
            "requests": self.requests,
            "completed": self.completed,
            "failed": self.failed,
            "failures": dict(self.failures),
            "warm_start_rate": self.warm_start_rate,
            "cold_starts": self.cold_starts,
            "warm_placement_rate": self.warm_placement_rate,
            "cold_start_rate": self.cold_start_rate,
            "ttft": self.ttft.as_dict(),
            "e2e": self.e2e.as_dict(),
            "queue": self.queue.as_dict(),
            "control": {
                "messages_per_s": self.control.messages_per_s,
                "bytes_per_s": self.control.bytes_per_s,
                "per_node": per_node,
            },
            "events": self.events,
            "wall_seconds": self.wall_seconds,
        }


def summarize(result: SimResult) -> RunSummary:
    """The headline numbers of one run."""
    placements = result.report.run.placements
    return _summary(
        result.report.run,
        warm_placement_rate=None if placements is None else placements.warm_placement_rate,
        control=result.report.simulation.control,
        events=result.report.events,
        wall_seconds=result.wall_seconds,
    )


def summarize_pooled(results: Sequence[SimResult]) -> RunSummary:
    """The headline numbers of several runs as one: counts summed, and the latencies'
    percentiles over every completed request of them all, so that one run's luck in
    its slowest 1% weighs as one run among several. One run: `summarize`."""
    if len(results) == 1:
        return summarize(results[0])
    placements = [result.report.run.placements for result in results]
    warm_placement_rate = None
    if all(figures is not None for figures in placements):
        warm = sum(figures.warm_placements for figures in placements if figures)
        cold = sum(figures.cold_placements for figures in placements if figures)
        warm_placement_rate = round(warm / (warm + cold), 6) if warm + cold else 0.0
    return _summary(
        build_report([outcome for result in results for outcome in result.outcomes], {}, 0),
        warm_placement_rate=warm_placement_rate,
        control=_pooled_traffic([result.report.simulation.control for result in results]),
        events=sum(result.report.events for result in results),
        wall_seconds=sum(result.wall_seconds for result in results),
    )


def _summary(
    report: RunReport,
    *,
    warm_placement_rate: float | None,
    control: PlaneTraffic,
    events: int,
    wall_seconds: float,
) -> RunSummary:
    completed = report.completed
    return RunSummary(
        requests=report.requests,
        completed=completed,
        failed=report.failed,
        failures=report.failures,
        warm_start_rate=report.warm_start_rate,
        cold_starts=report.cold_starts,
        warm_placement_rate=warm_placement_rate,
        cold_start_rate=round(report.cold_starts / completed, 6) if completed else 0.0,
        ttft=report.latency.ttft,
        e2e=report.latency.e2e,
        queue=report.latency.queue,
        control=control,
        events=events,
        wall_seconds=round(wall_seconds, 3),
    )


def _pooled_traffic(planes: Sequence[PlaneTraffic]) -> PlaneTraffic:
    """Several runs' traffic of one plane: totals summed, rates averaged (the busiest
    worker's: the highest)."""

    def mean_rate(rates: Sequence[Rate]) -> Rate:
        return Rate(
            messages_per_s=round(sum(r.messages_per_s for r in rates) / len(rates), 3),
            bytes_per_s=round(sum(r.bytes_per_s for r in rates) / len(rates), 3),
        )

    roles = {role for plane in planes for role in plane.per_role}
    return PlaneTraffic(
        messages=sum(plane.messages for plane in planes),
        bytes=sum(plane.bytes for plane in planes),
        messages_per_s=round(sum(plane.messages_per_s for plane in planes) / len(planes), 3),
        bytes_per_s=round(sum(plane.bytes_per_s for plane in planes) / len(planes), 3),
        per_role={
            role: mean_rate([plane.per_role[role] for plane in planes if role in plane.per_role])
            for role in sorted(roles)
        },
        worker_mean=mean_rate([plane.worker_mean for plane in planes]),
        worker_max=max((plane.worker_max for plane in planes), key=lambda r: r.bytes_per_s),
    )


# -- measures and formatting ---------------------------------------------------------------


def gini(values: Sequence[float]) -> float:
    """The Gini coefficient of non-negative values: 0 is perfectly even, near 1 all on one."""
    ordered = sorted(values)
    total = sum(ordered)
    n = len(ordered)
    if n == 0 or total <= 0:
        return 0.0
    weighted = sum((index + 1) * value for index, value in enumerate(ordered))
    return 2.0 * weighted / (n * total) - (n + 1) / n


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


def latencies(result: SimResult, kind: str) -> list[float]:
    """The completed requests' `kind` latency (``ttft``, ``e2e``, ``queue``), in seconds."""
    return [getattr(o, f"{kind}_s") for o in result.outcomes if o.ok]


def tag(mode: str) -> str:
    """A plot name's suffix: none for the centralized arm (its names came first)."""
    return "" if mode == CENTRALIZED else f"-{mode}"


def experiment_document(
    *, experiment: str, setup: Entry, by_mode: Mapping[str, Mapping[str, Entry]]
) -> Json:
    """The JSON of an experiment whose arms are keyed the same way in each mode (exp1 and
    exp3 by policy, scale by size): its name, its setup, then ``{mode: {key: entry}}``.
    exp2's arms are named, not keyed, so it writes its own."""
    return {
        "experiment": experiment,
        "setup": setup.as_dict(),
        **{
            mode: {key: entry.as_dict() for key, entry in entries.items()}
            for mode, entries in by_mode.items()
        },
    }

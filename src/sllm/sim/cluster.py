"""A simulated centralized cluster: the production core on the kernel's clock.

Why it exists: to run the deployment guide's centralized architecture at any size, with
faults, in a fraction of real time, and get the very report the live driver
(`sllm.experiments.centralized`) prints. Nothing that decides or hosts is re-implemented
here: the processes are the hosts the live runtime runs (`sllm.hosts`), on the kernel
driver (`sllm.sim.hosts`) instead of the asyncio one:

- the coordinator is `sllm.hosts.coordinator.CoordinatorHost` around the core
  `Coordinator`: every datagram goes to ``handle(message, now)``, the replies go back to
  the sender, and a periodic timer calls ``expire(now)`` every ``WORKER_TIMEOUT /
  EXPIRY_CHECKS_PER_TIMEOUT``;
- each worker is `sllm.hosts.worker.WorkerHost` around a `WorkerState` built with
  `prestaged(...)` like the live worker's: its actions become `SimEngine` timers, one
  keep-alive timer sits at ``next_deadline()``, and it reports every REPORT_INTERVAL,
  from a random phase, and once at start;
- the client is `sllm.hosts.client.RequestClient`, the live load generator's: a
  ScheduleRequest to the coordinator, on a decision an InferenceRequest to the chosen
  worker, the InferenceResult back, with the client-side timings and timeouts written
  there once. Every second the cluster samples each worker's queue depth and GPU
  utilization from the coordinator's view, which is what the live driver's `status`
  query returns.

Every request ends exactly once: completed, or failed with a reason (``rejected: ...``
from the coordinator; the worker's own reason; ``no_decision`` when no schedule reply
comes within `SCHEDULE_TIMEOUT_S`; ``worker_lost`` when the worker it had started on
was declared dead; ``retries_exhausted`` after three placements on dying workers;
``no_result`` when no answer comes within `RESULT_TIMEOUT_S` of its arrival, the case
of a lost datagram or a death nobody noticed; and ``unfinished`` for what is still
running when the drain ends). A request queued on a worker declared dead is placed
again (the client holds every request in `sllm.core.outstanding`, as the live driver
does, and hears of a lost worker with the first scheduler's notice: `tell_client`).

Differences from the live driver, all deliberate:

- replay starts one REPORT_INTERVAL after the workers start (every worker has reported
  once), where the live driver polls until the coordinator counts every worker;
- samples read the coordinator's view directly instead of paging through
  ClusterStateRequests, so measuring costs no datagrams (a dead coordinator still
  counts as a missed sample);
- the client hears of a lost worker with the first scheduler's notice, where the live
  driver polls for it every `WATCH_PERIOD_S`; a start acknowledgement arrives at once,
  like a report;
- a worker report reaches the coordinator the instant it is sent, with every other
  property of a datagram (`sllm.sim.network`, "Instant delivery"): its transit, well
  under a millisecond, is not simulated.

Worker addresses are their names: a report's ``host`` is the worker's node name, which is
where the client sends the request (the live coordinator hands out IP addresses).

The decentralized architecture (`sllm.sim.decentralized`) shares everything here but the
processes: `SimulatedCluster` holds the kernel, network, client, faults and report, and each
architecture says where the client asks for a decision and how state is sampled.

A mixed fleet: `ClusterConfig.kinds` gives worker ``i`` the capacities and load
bandwidths of ``kinds[i % len(kinds)]`` (a `WorkerKind`; its own sim engine times its
loads); the admission deadline of the coordinator (and of every decentralized node) is
`ClusterConfig.admission_deadline_s`.

Not handled yet: the HTTP front door's retry of a request whose worker fails
before the first byte; cluster-state paging traffic from the sampler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sllm.catalog import SERVED_MODELS, served_catalog
from sllm.core.coordinator import Notice
from sllm.core.cost import CostModel, ModelInfo
from sllm.core.measures import Placements
from sllm.core.node import PROBING_CANDIDATES_DEFAULT
from sllm.core.outstanding import RequestOutcome
from sllm.core.tiers import Tier
from sllm.core.view import ClusterView
from sllm.core.worker import WorkerResources
from sllm.engines.sim import SimEngine
from sllm.hosts.client import RESULT_TIMEOUT_S, SAMPLE_PERIOD_S, SCHEDULE_TIMEOUT_S
from sllm.sim.faults import (
    HEAL,
    KILL_COORDINATOR,
    KILL_WORKER,
    LOSS_WINDOW,
    PARTITION,
    RESTART_COORDINATOR,
    RESTART_WORKER,
    Fault,
)
from sllm.sim.hosts import (
    CLIENT,
    COORDINATOR,
    Client,
    SimulatedCoordinator,
    SimulatedWorker,
    child_rng,
)
from sllm.sim.kernel import Kernel, collector_paused
from sllm.sim.network import CONTROL, DATA, LinkModel, Network, Sizer
from sllm.sim.report import (
    LinkFigures,
    PlaneTraffic,
    Rate,
    SimReport,
    SimulationSection,
    WorkerSamples,
    build_report,
)
from sllm.workload import Arrival
from sllm.workload.options import DEFAULT_DRAIN_S

__all__ = [
    "CLIENT",
    "COORDINATOR",
    "RESULT_TIMEOUT_S",
    "CentralizedCluster",
    "ClusterConfig",
    "SimResult",
    "SimulatedCluster",
    "child_rng",
    "worker_name",
]

# Notices that tell the client a worker is lost, or back (coordinator's, then gossip's).
LOST_EVENTS = frozenset({"worker_lost", "member_dead", "member_left"})
BACK_EVENTS = frozenset({"worker_joined", "member_joined", "member_alive", "member_rejoined"})


def worker_name(index: int) -> str:
    """Worker ids as `centralized_simulation.py` names them."""
    return f"worker-{index}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerKind:
    """One kind of worker in a mixed fleet: its capacities and the bandwidths it loads at.

    The schedulers still estimate with the cluster's `ClusterConfig.cost`: a worker's own
    disk speed reaches them only through the load backlog it reports.
    """

    name: str
    resources: WorkerResources
    cost: CostModel


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One simulated cluster. Defaults follow `centralized_simulation.py`."""

    workers: int = 5
    policy: str = "startup-aware"
    seed: int = 0
    report_interval_s: float = 1.0
    worker_timeout_s: float = 10.0
    resources: WorkerResources = field(default_factory=WorkerResources)
    prestage: Tier | None = Tier.DISK
    models_served: int = SERVED_MODELS
    cost: CostModel = field(default_factory=CostModel)
    link: LinkModel = field(default_factory=LinkModel)
    signed: bool = False  # charge the HMAC envelope on every datagram
    exact_bytes: bool = False  # encode every datagram to count bytes (slow)
    schedule_timeout_s: float = SCHEDULE_TIMEOUT_S
    result_timeout_s: float = RESULT_TIMEOUT_S
    # How often the client asks again after a refusal that carries a Retry-After, that
    # much later (`RequestClient`'s ``refusal_retries``; the official openai client: 2).
    refusal_retries: int = 0
    drain_s: float = DEFAULT_DRAIN_S
    sample_period_s: float = SAMPLE_PERIOD_S
    record_series: bool = False  # keep every sample with its time (for plots over time)
    # A mixed fleet: worker i is kinds[i % len(kinds)]; empty, every worker has `resources`
    # and `cost`.
    kinds: tuple[WorkerKind, ...] = ()
    # The admission deadline of the coordinator, or of each decentralized node
    # (`Coordinator`'s ``deadline_s``): None, none.
    admission_deadline_s: float | None = None
    # The held queue: a request over the deadline waits this long for room instead of
    # being refused (`Coordinator`'s ``hold_s``); None, none.
    admission_hold_s: float | None = None
    # Decentralized: the candidates each node asks for their load before a decision
    # (`sllm.core.node.ProbingConfig`); 0 places over the gossiped view alone.
    probing_candidates: int = PROBING_CANDIDATES_DEFAULT

    def kind_of(self, index: int) -> tuple[WorkerResources, CostModel]:
        """Worker `index`'s capacities and load bandwidths."""
        if not self.kinds:
            return self.resources, self.cost
        kind = self.kinds[index % len(self.kinds)]
        return kind.resources, kind.cost

    def __post_init__(self) -> None:
        problems = []
        if self.workers < 1:
            problems.append("workers must be >= 1")
        if self.report_interval_s <= 0 or self.worker_timeout_s <= self.report_interval_s:
            problems.append("need 0 < report interval < worker timeout")
        if self.sample_period_s <= 0 or self.schedule_timeout_s <= 0:
            problems.append("sample period and timeouts must be > 0")
        if self.result_timeout_s <= 0 or self.drain_s < 0:
            problems.append("result timeout must be > 0 and drain >= 0")
        if self.refusal_retries < 0:
            problems.append("refusal retries must be >= 0")
        if self.admission_hold_s is not None and (
            not self.admission_hold_s > 0 or self.admission_deadline_s is None
        ):
            problems.append("an admission hold must be > 0 and needs an admission deadline")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class SimResult:
    """A finished run: the report plus the raw records experiments plot from."""

    report: SimReport
    outcomes: list[RequestOutcome]
    spans: list[tuple[float, float]]  # (arrival, end), workload seconds, parallel to outcomes
    samples: dict[str, WorkerSamples]
    series: dict[str, list[tuple[float, int, float]]]  # worker -> (t, queue, util); opt-in
    notices: list[tuple[float, str, str]]  # (workload time, event, worker)
    faults: list[dict[str, object]]
    events: int
    wall_seconds: float
    simulated_seconds: float


class SimulatedCluster:
    """What every simulated architecture shares: kernel, network, client, faults, report.

    A subclass hosts the processes (`start_hosts`, `apply_coordinator_fault`), says where the
    client asks for a decision (`scheduler`), and samples the cluster state (`sample`).
    """

    mode = ""
    # Rows of the report's per-node traffic besides the workers: (label, network name).
    roles: tuple[tuple[str, str], ...] = (("client", CLIENT),)

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.kernel = Kernel(period_s=config.report_interval_s)  # reports take the lane
        self.catalog: dict[str, ModelInfo] = dict(
            served_catalog(max(config.models_served, SERVED_MODELS))
        )
        self.engine = SimEngine(self.catalog, config.cost)
        self.network = Network(
            self.kernel,
            child_rng(config.seed, "network"),
            config.link,
            Sizer(signed=config.signed, exact=config.exact_bytes),
        )
        self.rng = child_rng(config.seed, "cluster")
        # Replay starts once every worker has sent its first report (random phase below).
        self.t0 = config.report_interval_s
        self.workers: list[SimulatedWorker] = []
        self.notices: list[tuple[float, str, str]] = []
        self.fault_log: list[dict[str, object]] = []
        self.samples: dict[str, WorkerSamples] = {}
        self.series: dict[str, list[tuple[float, int, float]]] = {}
        self.active_workers = 0
        self.missed_samples = 0
        self.client: Client | None = None

    # -- what an architecture provides ---------------------------------------------------

    def start_hosts(self) -> None:
        raise NotImplementedError

    def scheduler(self) -> str:
        """The address the client sends its next ScheduleRequest to."""
        raise NotImplementedError

    def apply_coordinator_fault(self, fault: Fault) -> None:
        """Kill or restart the coordinator, where the architecture has one (`apply` handles
        the network's faults and the workers')."""

    def sample(self) -> None:
        raise NotImplementedError

    def tell_client(self, event: str, worker_id: str) -> None:
        """Pass a scheduler's word on a worker's liveness to the client, which holds the
        requests: the live driver polls for the same word (`Driver.watch_forever`); here
        it comes with the first scheduler's notice, at no cost in datagrams."""
        client = self.client
        if client is None:
            return
        if event in LOST_EVENTS:
            client.worker_lost(worker_id)
        elif event in BACK_EVENTS:
            client.worker_back(worker_id)

    def membership_section(self) -> dict[str, Any]:
        raise NotImplementedError

    def report_extra(self) -> dict[str, Any]:
        """Keys the architecture adds to the report (after the shared ones)."""
        return {}

    def placements(self) -> Placements | None:
        """The warm and cold placements the live schedulers counted, as the live driver
        reads them at the end of a run; None when no scheduler is up."""
        return None

    # -- time --------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Workload time: seconds since replay started (negative before)."""
        return self.kernel.now - self.t0

    def at(self, workload_s: float, callback: Callable[[None], None]) -> None:
        """Call `callback(None)` at `workload_s` seconds into the workload (for probes)."""
        self.kernel.at(self.t0 + workload_s, callback, None)

    # -- membership and faults ------------------------------------------------------------

    def live_workers(self) -> list[str]:
        """The names of the workers that are up, in the order they were made."""
        return [worker.name for worker in self.workers if worker.up]

    def schedule_faults(self, faults: Sequence[Fault]) -> None:
        for fault in faults:
            self.kernel.at(self.t0 + fault.at_s, self.apply, fault)

    def apply(self, fault: Fault) -> None:
        """Make `fault` happen now."""
        kind = fault.kind
        if kind == PARTITION:
            self.network.partition([fault.targets])
        elif kind == HEAL:
            self.network.heal()
        elif kind == LOSS_WINDOW:
            self.network.add_loss_window(self.t0 + fault.at_s, self.t0 + fault.until_s, fault.loss)
        elif kind in (KILL_WORKER, RESTART_WORKER):
            hosts = {worker.name: worker for worker in self.workers}
            for name in fault.targets:
                if kind == RESTART_WORKER:
                    hosts[name].start(0.0, fresh=True)  # a new process: it reports at once
                elif hosts[name].up:
                    hosts[name].kill()
        else:
            self.apply_coordinator_fault(fault)
        self.fault_log.append(fault.describe())

    # -- sampling ------------------------------------------------------------------------

    def record_view(self, view: ClusterView) -> None:
        """One sample of every worker's queue depth and GPU utilization in `view`."""
        self.active_workers = len(view)
        samples = self.samples
        record = self.config.record_series
        now = self.now
        for entry in view.entries():
            report = entry.report
            worker_samples = samples.get(report.node_id)
            if worker_samples is None:
                worker_samples = samples[report.node_id] = WorkerSamples()
            worker_samples.add(report.queue_depth, report.gpu_utilization)
            if record:
                self.series.setdefault(report.node_id, []).append(
                    (now, report.queue_depth, report.gpu_utilization)
                )

    # -- a run ---------------------------------------------------------------------------

    def run(
        self,
        arrivals: Sequence[Arrival],
        duration_s: float,
        faults: Sequence[Fault] = (),
        *,
        check: Callable[[], None] | None = None,
        progress: Callable[[float], None] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> SimResult:
        """Replay `arrivals` (times from 0) and return the report; runs once per cluster.

        The run lasts `duration_s` at least, then until every request has ended or the
        drain (`ClusterConfig.drain_s` after the last arrival) is over, whichever is first.
        `check` runs after every event (slow; for invariant tests). `progress` gets the
        fraction of the run done after every simulated second.
        """
        if self.client is not None:
            raise RuntimeError("a cluster runs once; build another")
        with collector_paused():
            return self._run(arrivals, duration_s, faults, check, progress, extra)

    def _run(
        self,
        arrivals: Sequence[Arrival],
        duration_s: float,
        faults: Sequence[Fault],
        check: Callable[[], None] | None,
        progress: Callable[[float], None] | None,
        extra: Mapping[str, object] | None,
    ) -> SimResult:
        started = time.perf_counter()
        config = self.config
        kernel = self.kernel
        self.start_hosts()
        client = self.client = Client(self, arrivals)
        client.start()
        self.schedule_faults(faults)
        last_arrival = arrivals[-1].time_s if arrivals else 0.0
        end_of_arrivals = self.t0 + duration_s
        hard_end = self.t0 + max(last_arrival + config.drain_s, duration_s)
        period = config.sample_period_s
        ticks = 0
        while True:
            ticks += 1
            until = self.t0 + ticks * period
            kernel.run(until, check)
            self.sample()
            if progress is not None:
                progress(min(1.0, (until - self.t0) / max(period, hard_end - self.t0)))
            if (client.done and until >= end_of_arrivals) or until >= hard_end:
                break
        client.abandon()
        wall = time.perf_counter() - started
        simulated = kernel.now
        setup: dict[str, object] = {
            "mode": self.mode,
            "policy": config.policy,
            "seed": config.seed,
            "duration_s": duration_s,
            "interrupted": False,
            "missed_state_samples": self.missed_samples,
        }
        setup.update(self.report_extra())
        setup.update(extra or {})
        report = SimReport(
            run=build_report(
                client.outcomes,
                self.samples,
                self.active_workers,
                setup,
                retried=client.outstanding.retried,
                placements=self.placements(),
            ),
            events=kernel.events,
            simulation=self._simulation_section(simulated),
            wall_seconds=round(wall, 3),
        )
        return SimResult(
            report=report,
            outcomes=client.outcomes,
            spans=client.spans,
            samples=self.samples,
            series=self.series,
            notices=self.notices,
            faults=self.fault_log,
            events=kernel.events,
            wall_seconds=wall,
            simulated_seconds=simulated,
        )

    def _simulation_section(self, simulated_s: float) -> SimulationSection:
        config = self.config
        link = config.link
        return SimulationSection(
            workers=config.workers,
            simulated_seconds=round(simulated_s, 6),
            report_interval_s=config.report_interval_s,
            worker_timeout_s=config.worker_timeout_s,
            link=LinkFigures(
                latency_ms=link.latency_s * 1e3,
                jitter_ms=link.jitter_s * 1e3,
                loss=link.loss,
                duplicate=link.duplicate,
            ),
            datagrams=self.network.summary(),
            by_type=self.network.sizer.by_type(),
            control=self.traffic(CONTROL, simulated_s),
            data=self.traffic(DATA, simulated_s),
            membership=self.membership_section(),
            faults=tuple(self.fault_log),
        )

    def traffic(self, plane: int, seconds: float) -> PlaneTraffic:
        """Messages and bytes of one plane, in total and per node, sent plus received."""
        seconds = max(seconds, 1e-9)
        nodes = {node.name: node for node in self.network.nodes()}

        def rate(name: str) -> tuple[float, float]:
            node = nodes[name]
            messages = node.sent_messages[plane] + node.received_messages[plane]
            volume = node.sent_bytes[plane] + node.received_bytes[plane]
            return messages / seconds, volume / seconds

        def rounded(pair: tuple[float, float]) -> Rate:
            return Rate(messages_per_s=round(pair[0], 3), bytes_per_s=round(pair[1], 1))

        total_messages = sum(node.sent_messages[plane] for node in nodes.values())
        total_bytes = sum(node.sent_bytes[plane] for node in nodes.values())
        workers = [rate(worker.name) for worker in self.workers]
        return PlaneTraffic(
            messages=total_messages,
            bytes=total_bytes,
            messages_per_s=round(total_messages / seconds, 3),
            bytes_per_s=round(total_bytes / seconds, 1),
            per_role={label: rounded(rate(name)) for label, name in self.roles},
            worker_mean=rounded(
                (
                    sum(m for m, _ in workers) / len(workers),
                    sum(b for _, b in workers) / len(workers),
                )
            ),
            worker_max=rounded(max(workers)),
        )


class CentralizedCluster(SimulatedCluster):
    """One coordinator, N workers and a client on one kernel and one network."""

    mode = "centralized"
    roles = (("coordinator", COORDINATOR), ("client", CLIENT))

    def __init__(self, config: ClusterConfig) -> None:
        super().__init__(config)
        self.coordinator = SimulatedCoordinator(self, self.notice)
        self.workers = [
            SimulatedWorker(self, worker_name(i), report_to=COORDINATOR, index=i)
            for i in range(config.workers)
        ]

    def start_hosts(self) -> None:
        self.coordinator.start()
        for worker in self.workers:
            worker.start(self.rng.uniform(0.0, self.config.report_interval_s), fresh=False)

    def scheduler(self) -> str:
        return COORDINATOR

    def notice(self, notices: Sequence[Notice]) -> None:
        now = self.now
        for notice in notices:
            worker_id = str(notice.fields.get("worker", ""))
            self.notices.append((now, notice.event, worker_id))
            self.tell_client(notice.event, worker_id)

    def known_workers(self) -> list[str]:
        """Workers in the coordinator's view, sorted (empty while it is down)."""
        core = self.coordinator.core
        return [] if core is None else sorted(entry.worker_id for entry in core.view.entries())

    def apply_coordinator_fault(self, fault: Fault) -> None:
        kind = fault.kind
        if kind == KILL_COORDINATOR:
            if self.coordinator.up:
                self.coordinator.kill()
        elif kind == RESTART_COORDINATOR:
            self.coordinator.start()

    def sample(self) -> None:
        """What the live driver's once-a-second `status` sees: the coordinator's view."""
        core = self.coordinator.core
        if core is None:
            self.missed_samples += 1
            return
        notices = core.expire(self.kernel.now)  # `cluster_state` expires first, too
        if notices:
            self.notice(notices)
        self.record_view(core.view)

    def placements(self) -> Placements | None:
        core = self.coordinator.core
        if core is None:
            return None
        counters = core.counters
        return Placements(warm=counters.warm_placements, cold=counters.cold_placements)

    def membership_section(self) -> dict[str, Any]:
        joined = sum(1 for _, event, _ in self.notices if event == "worker_joined")
        lost = sum(1 for _, event, _ in self.notices if event == "worker_lost")
        return {"joined": joined, "lost": lost}

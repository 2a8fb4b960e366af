"""A simulated centralized cluster: the production core on the kernel's clock.

Why it exists: to run the deployment guide's centralized architecture at any size, with
faults, in a fraction of real time, and get the very report the live driver
(`sllm.experiments.centralized`) prints. Nothing that decides is re-implemented here:

- the coordinator is `sllm.core.coordinator.Coordinator`, hosted like
  `sllm.runtime.coordinator.CoordinatorServer` does: every datagram goes to
  ``handle(message, now)`` and the replies go back to the sender; a periodic timer
  calls ``expire(now)`` at the live server's cadence (``WORKER_TIMEOUT /
  EXPIRY_CHECKS_PER_TIMEOUT``);
- each worker is a `sllm.core.worker.WorkerState` built with `prestaged(...)` like
  `sllm.runtime.worker.WorkerServer`; its actions become `SimEngine` timers, which
  `sllm.engines.sim.fire` feeds back, and its keep-alive runs at ``next_deadline()``.
  It reports every REPORT_INTERVAL, from a random phase, and once at start;
- the client does what the live driver's `Driver.run_request` does: a ScheduleRequest
  to the coordinator, on a decision an InferenceRequest to the chosen worker, the
  InferenceResult back, with the same client-side timings (time to first token = the
  scheduling round trip + the worker's arrival-to-first-token; end-to-end on the
  client's clock) and the same ``no_decision`` timeout. Every second it samples each
  worker's queue depth and GPU utilization from the coordinator's view, which is what
  the live driver's `status` query returns.

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
hosts: `SimulatedCluster` holds the kernel, network, client, faults and report, and each
architecture says where the client asks for a decision and how state is sampled.

Not handled yet: the HTTP front door's retry of a request whose worker fails
before the first byte; cluster-state paging traffic from the sampler.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sllm.catalog import SERVED_MODELS, served_catalog
from sllm.core.coordinator import Coordinator, Notice
from sllm.core.cost import CostModel, ModelInfo
from sllm.core.measures import Placements
from sllm.core.outstanding import (
    REQUEST_DEADLINE_S,
    UNFINISHED,
    Decision,
    Fail,
    OutstandingRequests,
    RequestOutcome,
)
from sllm.core.tiers import Tier
from sllm.core.view import ClusterView
from sllm.core.worker import (
    Action,
    Finished,
    StartRequest,
    WorkerResources,
    WorkerState,
    prestaged,
    result_message,
)
from sllm.engines.sim import SimEngine, Timer, fire
from sllm.experiments.centralized import SAMPLE_PERIOD_S, SCHEDULE_TIMEOUT_S
from sllm.runtime.coordinator import EXPIRY_CHECKS_PER_TIMEOUT, EXPIRY_MIN_PERIOD_S
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
from sllm.wire import (
    InferenceRequest,
    InferenceResult,
    InferenceStarted,
    Message,
    ScheduleRequest,
    ScheduleResponse,
)
from sllm.workload import Arrival
from sllm.workload.options import DEFAULT_DRAIN_S

COORDINATOR = "coordinator"
CLIENT = "client"
WORKER_PORT = 8000  # every simulated worker listens on the live default port
# The client's deadline per request, the live driver's (see `sllm.core.outstanding`).
RESULT_TIMEOUT_S = REQUEST_DEADLINE_S

# Notices that tell the client a worker is lost, or back (coordinator's, then gossip's).
LOST_EVENTS = frozenset({"worker_lost", "member_dead", "member_left"})
BACK_EVENTS = frozenset({"worker_joined", "member_joined", "member_alive", "member_rejoined"})

# Request phases on the client.
_SCHEDULING = 0
_RUNNING = 1


def worker_name(index: int) -> str:
    """Worker ids as `centralized_simulation.py` names them."""
    return f"worker-{index}"


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
    drain_s: float = DEFAULT_DRAIN_S
    sample_period_s: float = SAMPLE_PERIOD_S
    record_series: bool = False  # keep every sample with its time (for plots over time)

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
        if problems:
            raise ValueError("; ".join(problems))


def child_rng(seed: int, purpose: str) -> random.Random:
    """An independent, reproducible stream per purpose (string seeds hash with SHA-512)."""
    return random.Random(f"sllm-sim/{purpose}/{seed}")


class CoordinatorHost:
    """The core coordinator behind a simulated address, with live-like expiry."""

    def __init__(self, cluster: CentralizedCluster) -> None:
        self.cluster = cluster
        self.kernel = cluster.kernel
        self.network = cluster.network
        self.core: Coordinator | None = None
        self.epoch = 0
        timeout = cluster.config.worker_timeout_s
        self.expiry_period_s = max(EXPIRY_MIN_PERIOD_S, timeout / EXPIRY_CHECKS_PER_TIMEOUT)
        self.network.attach(COORDINATOR, self.receive)

    @property
    def up(self) -> bool:
        return self.core is not None

    def start(self) -> None:
        config = self.cluster.config
        self.epoch += 1
        self.core = Coordinator(
            config.policy,
            self.cluster.catalog,
            config.cost,
            config.worker_timeout_s,
            random.Random(config.seed),  # what `sllm coordinator --seed` does
            self.kernel.now,
        )
        self.network.set_up(COORDINATOR, True)
        self.kernel.schedule(self.expiry_period_s, self._expire, self.epoch)

    def kill(self) -> None:
        self.epoch += 1
        self.core = None
        self.network.set_up(COORDINATOR, False)

    def receive(self, message: Message, source: str) -> None:
        core = self.core
        if core is None:
            return
        outcome = core.handle(message, self.kernel.now)
        for reply in outcome.replies:
            self.network.send(COORDINATOR, source, reply)
        if outcome.notices:
            self.cluster.notice(outcome.notices)

    def _expire(self, epoch: int) -> None:
        if epoch != self.epoch or self.core is None:
            return
        notices = self.core.expire(self.kernel.now)
        if notices:
            self.cluster.notice(notices)
        self.kernel.schedule(self.expiry_period_s, self._expire, epoch)


class WorkerHost:
    """A `WorkerState` with the sim engine's timers on the kernel, reporting periodically."""

    def __init__(self, cluster: SimulatedCluster, name: str) -> None:
        self.cluster = cluster
        self.kernel = cluster.kernel
        self.network = cluster.network
        self.engine = cluster.engine
        self.name = name
        self.epoch = 0
        self.up = False
        self.state = self._fresh_state()
        self._requesters: dict[str, str] = {}
        self._wake: float | None = None  # when the pending keep-alive timer is due
        self.network.attach(name, self.receive)
        self.network.set_up(name, False)

    def _fresh_state(self) -> WorkerState:
        config = self.cluster.config
        catalog = self.cluster.catalog
        preloaded = prestaged(catalog, config.resources, config.prestage)
        return WorkerState(
            self.name, config.resources, catalog, config.cost, preloaded, now=self.kernel.now
        )

    def start(self, first_report_in: float, fresh: bool) -> None:
        """Come up (as a fresh process when `fresh`); first report after `first_report_in`."""
        self.come_up(fresh)
        self.kernel.schedule(first_report_in, self._report, self.epoch)

    def come_up(self, fresh: bool) -> None:
        """Start the process (a new one when `fresh`): its earlier timers become stale."""
        self.epoch += 1
        if fresh:
            self.state = self._fresh_state()
        self.up = True
        self._requesters.clear()
        self._wake = None
        self.network.set_up(self.name, True)

    def kill(self) -> None:
        self.epoch += 1
        self.up = False
        self._requesters.clear()
        self.network.set_up(self.name, False)

    def _report(self, epoch: int) -> None:
        if epoch != self.epoch:
            return
        now = self.kernel.now
        # Positional arguments: a call with keywords skips CPython's fast call path, and
        # this runs for every report (3.6 million in a simulated hour of 1,000 workers).
        report = self.state.report(now, self.name, WORKER_PORT, 0, now)  # timestamp=now
        self.network.send(self.name, COORDINATOR, report, False)  # transit=False
        self.kernel.after_period(self._report, epoch)  # one report interval from now

    def receive(self, message: Message, source: str) -> None:
        if type(message) is not InferenceRequest:
            return  # the live worker logs and ignores anything else
        self._requesters[message.request_id] = source
        self._carry_out(self.state.submit(message, self.kernel.now))

    def _carry_out(self, actions: list[Action]) -> None:
        schedule = self.kernel.schedule
        epoch = self.epoch
        for action in actions:
            if type(action) is Finished:
                self._send_result(action)
                continue  # a result takes no simulated time
            if type(action) is StartRequest:
                self._send_started(action.request_id)
            for timer in self.engine.timers(action):
                schedule(timer.delay_s, self._fire, (epoch, timer))
        deadline = self.state.next_deadline()
        if deadline is not None and (self._wake is None or deadline < self._wake):
            self._wake = deadline
            self.kernel.at(deadline, self._keep_alive, (epoch, deadline))

    def _fire(self, due: tuple[int, Timer]) -> None:
        epoch, timer = due
        if epoch != self.epoch:
            return  # a timer of a process that has since crashed
        self._carry_out(fire(self.state, timer, self.kernel.now))

    def _keep_alive(self, due: tuple[int, float]) -> None:
        epoch, at = due
        if epoch != self.epoch or at != self._wake:
            return  # superseded by an earlier deadline, or a crashed process's timer
        self._wake = None
        self._carry_out(self.state.tick(self.kernel.now))

    def _send_started(self, request_id: str) -> None:
        """Tell the requester its request started. Instant delivery (see `sllm.sim.network`):
        its sub-millisecond transit matters only to a worker that dies within it, and
        leaving it out spares an event per request."""
        requester = self._requesters.get(request_id)
        if requester is not None:
            started = InferenceStarted(request_id=request_id, worker_id=self.name)
            self.network.send(self.name, requester, started, transit=False)

    def _send_result(self, finished: Finished) -> None:
        requester = self._requesters.pop(finished.request_id, None)
        if requester is None:
            return
        result = result_message(self.state.worker_id, finished)
        self.network.send(self.name, requester, result)


class _Pending:
    """A request the client has not seen end yet."""

    __slots__ = ("arrival", "phase", "request_id", "scheduled", "started")

    def __init__(self, request_id: str, arrival: Arrival, started: float) -> None:
        self.request_id = request_id
        self.arrival = arrival
        self.started = started
        self.scheduled = 0.0
        self.phase = _SCHEDULING


class Client:
    """Replays arrivals like the live driver and records what a client sees."""

    def __init__(self, cluster: SimulatedCluster, arrivals: Sequence[Arrival]) -> None:
        self.cluster = cluster
        self.kernel = cluster.kernel
        self.network = cluster.network
        self.arrivals = arrivals
        self.t0 = cluster.t0
        self.pending: dict[str, _Pending] = {}
        self.issued = 0
        self.outcomes: list[RequestOutcome] = []
        # (arrival, end) in workload seconds, parallel to `outcomes`.
        self.spans: list[tuple[float, float]] = []
        config = cluster.config
        self.schedule_timeout_s = config.schedule_timeout_s
        # Every request from arrival to answer: the worker holding it, whether it started,
        # what to do when that worker is lost, and the deadline (`result_timeout_s`).
        self.outstanding = OutstandingRequests(deadline_s=config.result_timeout_s)
        # Decision deadlines in send order (the timeout is constant, so they are sorted);
        # one armed timer, re-armed at the oldest unanswered request's deadline.
        self._awaiting_decision: deque[tuple[float, str]] = deque()
        self._decision_timer = False
        self._deadline_timer = False
        self.network.attach(CLIENT, self.receive)

    @property
    def done(self) -> bool:
        """Every arrival issued and ended."""
        return self.issued == len(self.arrivals) and not self.pending

    def start(self) -> None:
        if self.arrivals:
            self.kernel.at(self.t0 + self.arrivals[0].time_s, self._arrive, 0)

    def _arrive(self, index: int) -> None:
        arrival = self.arrivals[index]
        request_id = f"r{index:07d}"
        now = self.kernel.now
        pending = _Pending(request_id, arrival, now)
        self.pending[request_id] = pending
        self.issued += 1
        self.outstanding.begin(request_id, now)
        if not self._deadline_timer:
            self._deadline_timer = True
            self.kernel.at(now + self.outstanding.deadline_s, self._deadlines, None)
        self._ask(pending)
        index += 1
        if index < len(self.arrivals):
            self.kernel.at(self.t0 + self.arrivals[index].time_s, self._arrive, index)

    def _ask(self, pending: _Pending) -> None:
        """Ask a scheduler where to run the request (again, after a retry)."""
        arrival = pending.arrival
        request_id = pending.request_id
        self.network.send(
            CLIENT,
            self.cluster.scheduler(),
            ScheduleRequest(
                request_id=request_id,
                model=arrival.model,
                priority=0,
                prompt_tokens=arrival.prompt_tokens,
                output_tokens=arrival.output_tokens,
            ),
        )
        self._awaiting_decision.append((self.kernel.now + self.schedule_timeout_s, request_id))
        if not self._decision_timer:
            self._decision_timer = True
            self.kernel.schedule(self.schedule_timeout_s, self._decision_timeouts, None)

    def receive(self, message: Message, source: str) -> None:
        if type(message) is InferenceStarted:
            self.outstanding.started(message.request_id, message.worker_id)
        elif type(message) is ScheduleResponse:
            self._decided(message)
        elif type(message) is InferenceResult:
            self._finished(message)

    def worker_lost(self, worker_id: str) -> None:
        """The cluster declared `worker_id` dead: retry or fail what it held."""
        for decision in self.outstanding.worker_lost(worker_id):
            self._carry_out(decision)

    def worker_back(self, worker_id: str) -> None:
        self.outstanding.worker_back(worker_id)

    def _carry_out(self, decision: Decision) -> None:
        pending = self.pending.get(decision.request_id)
        if pending is None:
            return
        if isinstance(decision, Fail):
            self._end(
                pending,
                RequestOutcome(
                    request_id=pending.request_id,
                    model=pending.arrival.model,
                    ok=False,
                    reason=decision.reason,
                    worker_id=decision.worker_id,
                ),
            )
            return
        pending.phase = _SCHEDULING
        if decision.after_s > 0:
            self.kernel.schedule(decision.after_s, self._ask_again, pending.request_id)
        else:
            self._ask(pending)

    def _ask_again(self, request_id: str) -> None:
        pending = self.pending.get(request_id)
        if pending is not None and pending.phase == _SCHEDULING:
            self._ask(pending)

    def _decided(self, decision: ScheduleResponse) -> None:
        pending = self.pending.get(decision.request_id)
        if pending is None or pending.phase != _SCHEDULING:
            return  # late, or a duplicate datagram: the live client drops it too
        arrival = pending.arrival
        if decision.action == "reject":
            self._end(
                pending,
                RequestOutcome(
                    request_id=pending.request_id,
                    model=arrival.model,
                    ok=False,
                    reason=f"rejected: {decision.reason}",
                ),
            )
            return
        pending.phase = _RUNNING
        pending.scheduled = self.kernel.now
        verdict = self.outstanding.placed(pending.request_id, decision.worker_id)
        if verdict is not None:
            self._carry_out(verdict)
            return
        self.network.send(
            CLIENT,
            decision.host,
            InferenceRequest(
                request_id=pending.request_id,
                model=arrival.model,
                prompt_tokens=arrival.prompt_tokens,
                output_tokens=arrival.output_tokens,
            ),
        )

    def _finished(self, result: InferenceResult) -> None:
        pending = self.pending.get(result.request_id)
        if pending is None:
            return  # a duplicate, or a late answer: the first one counts
        now = self.kernel.now
        self._end(
            pending,
            RequestOutcome(
                request_id=pending.request_id,
                model=pending.arrival.model,
                ok=result.ok,
                reason=result.reason,
                worker_id=result.worker_id,
                cold_start=result.cold_start,
                queue_s=result.queue_s,
                ttft_s=(pending.scheduled - pending.started) + result.ttft_s,
                e2e_s=now - pending.started,
            ),
        )

    def _end(self, pending: _Pending, outcome: RequestOutcome) -> None:
        del self.pending[pending.request_id]
        self.outstanding.end(pending.request_id)
        self.outcomes.append(outcome)
        self.spans.append((pending.arrival.time_s, self.kernel.now - self.t0))

    def _decision_timeouts(self, _: None) -> None:
        self._decision_timer = self._expire_queue(
            self._awaiting_decision, _SCHEDULING, "no_decision", self._decision_timeouts
        )

    def _deadlines(self, _: None) -> None:
        """Fail what is past its deadline; re-arm at the next one."""
        for failed in self.outstanding.expire(self.kernel.now):
            self._carry_out(failed)
        deadline = self.outstanding.next_deadline()
        self._deadline_timer = deadline is not None
        if deadline is not None:
            self.kernel.at(deadline, self._deadlines, None)

    def _expire_queue(
        self,
        queue: deque[tuple[float, str]],
        phase: int,
        reason: str,
        again: Callable[[None], None],
    ) -> bool:
        """Fail the requests in `queue` past their deadline; True if a timer is re-armed."""
        now = self.kernel.now
        pending_by_id = self.pending
        while queue:
            deadline, request_id = queue[0]
            pending = pending_by_id.get(request_id)
            if pending is None or pending.phase != phase:
                queue.popleft()  # answered in time
                continue
            if deadline > now:
                self.kernel.at(deadline, again, None)
                return True
            queue.popleft()
            self._end(
                pending,
                RequestOutcome(
                    request_id=request_id, model=pending.arrival.model, ok=False, reason=reason
                ),
            )
        return False

    def abandon(self) -> None:
        """End everything still pending as ``unfinished`` (the drain is over)."""
        for pending in list(self.pending.values()):
            self._end(
                pending,
                RequestOutcome(
                    request_id=pending.request_id,
                    model=pending.arrival.model,
                    ok=False,
                    reason=UNFINISHED,
                    worker_id=self.outstanding.worker_of(pending.request_id),
                ),
            )


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
        self.workers: list[WorkerHost] = []
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
        self.coordinator = CoordinatorHost(self)
        self.workers = [WorkerHost(self, worker_name(i)) for i in range(config.workers)]

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

"""The worker host: a `WorkerState` turned into timers and datagrams, once for both drivers.

Why it exists: the live worker (`sllm.runtime.worker.WorkerServer`), the live node and the
simulator's workers and nodes all run the same state machine the same way; this is that
way, written once against `sllm.hosts.driver.Driver`:

- a datagram ``inference_request`` is submitted with its requester's address; the worker
  answers it ``inference_started`` when it starts (so that a client does not place it
  again if the worker dies now, `sllm.core.outstanding`) and ``inference_result`` when it
  ends;
- each action becomes the sim engine's timers (`sllm.engines.sim`), which `fire` feeds
  back. Every timer carries the host's *epoch*, which each start and each kill advances:
  a timer of a process that has since crashed finds another epoch and does nothing;
- ONE keep-alive timer is kept at ``next_deadline()`` (`sllm.hosts.deadline.DeadlineTimer`:
  moved earlier when a new deadline is earlier; one that comes due before the deadline,
  which moved later, only ticks early, which the state machine ignores, and re-arms);
- a report goes to `report_to` every `report_interval_s`, and once when reporting starts.

Hooks for what only one world has (`start_request`, `start_load`, `evict`, `finished`):
the live worker overrides them to run loads and evictions with real engines, stream HTTP
requests and tell its metrics; by default they run the sim engine's timers.

Not handled yet: a worker that reports to several coordinators.
"""

from __future__ import annotations

from typing import Generic

from sllm.core.worker import (
    MIGRATED,
    Action,
    CancelRequest,
    Evict,
    Finished,
    StartLoad,
    StartRequest,
    WorkerState,
    result_message,
)
from sllm.engines.sim import SimEngine, Timer, TimerKind, fire
from sllm.hosts.deadline import DeadlineTimer
from sllm.hosts.driver import A, Driver
from sllm.wire import InferenceRequest, InferenceStarted, Message


class WorkerHost(Generic[A]):
    """One worker process: its state machine, its requesters and its timers."""

    def __init__(
        self,
        driver: Driver[A],
        state: WorkerState,
        timers: SimEngine,
        *,
        report_to: A | None = None,
        report_interval_s: float = 1.0,
    ) -> None:
        self.driver = driver
        self.state = state
        self.timers = timers
        self.report_to = report_to  # None: no reports (a node gossips its own)
        self.report_interval_s = report_interval_s
        # What each report says besides the state: where peers reach this worker.
        self.advertise_host = ""
        self.port = 0
        self.http_port = 0
        self.wall_offset = 0.0  # a report's timestamp is `now` plus this
        self.epoch = 0
        self.up = False
        self.requesters: dict[str, A] = {}
        # Requests stopped before their end timer (migrated off this worker): the timer,
        # when it comes, finds its request here and does nothing.
        self.stopped: set[str] = set()
        self.keep_alive = DeadlineTimer(call_at=driver.call_at, on_due=self._keep_alive)

    # -- life -------------------------------------------------------------------------

    def come_up(self, state: WorkerState | None = None) -> None:
        """Start the process (with `state`, a fresh one): earlier timers become stale."""
        self.epoch += 1
        if state is not None:
            self.state = state
        self.up = True
        self.requesters.clear()
        self.stopped.clear()
        self.keep_alive.forget()

    def kill(self) -> None:
        """Stop the process: its timers become stale, its requesters are forgotten."""
        self.epoch += 1
        self.up = False
        self.requesters.clear()
        self.keep_alive.forget()

    # -- reports ----------------------------------------------------------------------

    def start_reports(self, first_in: float) -> None:
        """Report after `first_in` seconds, then every `report_interval_s`."""
        self.driver.call_later(first_in, self._report, self.epoch)

    def send_report(self) -> None:
        """Send one report now, if there is a coordinator to send it to."""
        target = self.report_to
        if target is None:
            return
        now = self.driver.now()
        report = self.state.report(
            now,
            self.advertise_host,
            self.port,
            http_port=self.http_port,
            timestamp=now + self.wall_offset,
        )
        self.driver.send_instant(target, report)

    def _report(self, epoch: int) -> None:
        if epoch != self.epoch:
            return  # a crashed process's timer
        self.send_report()
        self.driver.call_later(self.report_interval_s, self._report, epoch)

    # -- requests ---------------------------------------------------------------------

    def receive(self, message: Message, sender: A) -> None:
        """A datagram: an ``inference_request`` runs; a worker serves nothing else."""
        if type(message) is InferenceRequest:
            self.submit(message, sender)

    def submit(self, request: InferenceRequest, requester: A) -> None:
        """A datagram request: run it, and answer `requester`."""
        self.requesters[request.request_id] = requester
        self.carry_out(self.state.submit(request, self.driver.now()))

    def carry_out(self, actions: list[Action]) -> None:
        """Turn the state machine's actions into timers and messages.

        A worker that migrated requests off reports at once: their clients place them
        again now, and a scheduler reading the last report, where their model is still
        on this GPU, would send them straight back. (Not after a hand-back: measured, the
        fresh report sent them back all the same, to the host copy of the model here,
        and failed more of them; docs/simulator.md.)"""
        migrated = False
        for action in actions:
            if type(action) is Finished:
                self.finished(action)
                if not action.ok and action.reason == MIGRATED:
                    migrated = True
            elif type(action) is StartRequest:
                self.start_request(action)
            elif type(action) is StartLoad:
                self.start_load(action)
            elif type(action) is Evict:
                self.evict(action)
            elif type(action) is CancelRequest and action.request_id in self.requesters:
                # A datagram request stops (migrated): its end timer must not end it. An
                # HTTP request's stream stops itself (`sllm.runtime.generation`).
                self.stopped.add(action.request_id)
        if migrated:
            self.send_report()
        self.keep_alive.arm(self.state.next_deadline())

    def start_request(self, action: StartRequest) -> None:
        """A request starts: tell its requester, and time it with the sim engine."""
        requester = self.requesters.get(action.request_id)
        if requester is not None:
            started = InferenceStarted(request_id=action.request_id, worker_id=self.state.worker_id)
            self.driver.send_instant(requester, started)
        self.run_timers(action)

    def start_load(self, action: StartLoad) -> None:
        """A load starts: the sim engine times it."""
        self.run_timers(action)

    def evict(self, action: Evict) -> None:
        """An eviction takes no time in the sim engine."""

    def finished(self, action: Finished) -> None:
        """A request ended: answer its requester."""
        requester = self.requesters.pop(action.request_id, None)
        if requester is not None:
            self.driver.send(requester, result_message(self.state.worker_id, action))

    def run_timers(self, action: Action) -> None:
        """The sim engine's timers for `action`, stamped with this process's epoch."""
        call_later = self.driver.call_later
        epoch = self.epoch
        for timer in self.timers.timers(action):
            call_later(timer.delay_s, self._fire, (epoch, timer))

    def _fire(self, due: tuple[int, Timer]) -> None:
        epoch, timer = due
        if epoch != self.epoch:
            return  # a timer of a process that has since crashed
        if self.stopped and timer.kind is TimerKind.REQUEST_DONE and timer.key in self.stopped:
            self.stopped.discard(timer.key)  # it went elsewhere; its time here is up
            return
        self.carry_out(fire(self.state, timer, self.driver.now()))

    def _keep_alive(self) -> None:
        self.carry_out(self.state.tick(self.driver.now()))

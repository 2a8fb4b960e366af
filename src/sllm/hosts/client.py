"""The request client: one request from arrival to end, as a pure state machine.

Why it exists: the live load generator (`sllm.experiments.centralized.Driver`) and the
simulator's client (`sllm.sim.hosts.Client`) do the same thing for every request, so it
is written once, against `sllm.hosts.driver.Driver`:

1. ``begin``: a ScheduleRequest to a scheduler (`scheduler()`: the coordinator, or a
   random live node);
2. on the decision, an InferenceRequest to the worker it names (`worker_address`), or
   the end with ``rejected: <reason>``; or, with ``refusal_retries``, a refusal that the
   front door would answer with ``Retry-After`` is asked again that much later, as the
   official openai client does (`sllm.core.coordinator.retry_after_s`);
3. on the InferenceResult, the end, with the client's timings (`outcome_of`: the one
   place of the time-to-first-token formula); or, for a request the worker handed back
   (``handed_back``: its load found no room), back to 1; or, for a running request the
   worker migrated off (``migrated``, to make room for a load), back to 1 with the rest
   of it: the prompt grows by the tokens produced (the next worker computes that prefix
   again), the output shrinks by them, and the first token keeps its time.

Every request is held in `sllm.core.outstanding` from its arrival to its end: a request
queued on a worker declared lost (`worker_lost`) is placed again, one that had started
there fails with ``worker_lost``, and one unanswered `result_timeout_s` after its arrival
fails with ``no_result``. No decision within `schedule_timeout_s` of asking ends it with
``no_decision``. Late and duplicate answers are dropped: the first one counts.

Timers: the decision timeout is constant, so the deadlines of unanswered asks are sorted
in asking order; one timer is armed at the oldest one. Only a request's latest ask can
time out: one answered, then asked again (a retry), is timed from its new ask. The
result deadlines are `OutstandingRequests`'s, with one timer at the next.

Not handled yet: cancelling a request the client gave up on (the worker runs it anyway).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic

from sllm.core.coordinator import HOLD, retry_after_s
from sllm.core.outstanding import (
    REQUEST_DEADLINE_S,
    UNFINISHED,
    Decision,
    Fail,
    OutstandingRequests,
    RequestOutcome,
)
from sllm.core.worker import HANDED_BACK, MIGRATED
from sllm.hosts.driver import A, Driver
from sllm.wire import (
    InferenceRequest,
    InferenceResult,
    InferenceStarted,
    Message,
    ScheduleRequest,
    ScheduleResponse,
)
from sllm.workload import Arrival

# A scheduler answers from memory in well under a millisecond on a LAN; two seconds covers
# a coordinator paused by a full garbage collection, and a lost datagram costs no more.
SCHEDULE_TIMEOUT_S = 2.0
# The client's deadline per request (see `sllm.core.outstanding`).
RESULT_TIMEOUT_S = REQUEST_DEADLINE_S
# How often a load generator samples the cluster's state: each worker's queue depth and
# utilization once a second, the guide's status cadence.
SAMPLE_PERIOD_S = 1.0

NO_DECISION = "no_decision"

# Request phases.
_SCHEDULING = 0
_RUNNING = 1


class _Pending:
    """A request the client has not seen end yet."""

    __slots__ = (
        "arrival",
        "decide_by",
        "first_token_s",
        "phase",
        "produced",
        "refusals",
        "request_id",
        "scheduled",
        "started",
    )

    def __init__(self, request_id: str, arrival: Arrival, started: float) -> None:
        self.request_id = request_id
        self.arrival = arrival
        self.started = started
        self.scheduled = 0.0
        self.phase = _SCHEDULING
        # A migrated request: the output tokens produced before it moved, and when the
        # first of them came (seconds since it began; None: none came yet).
        self.produced = 0
        self.first_token_s: float | None = None
        self.refusals = 0  # refusals asked again after their Retry-After
        # The decision deadline of the ask awaiting its answer; None while none is (the
        # request waits to be asked again).
        self.decide_by: float | None = None


def outcome_of(
    request_id: str,
    model: str,
    result: InferenceResult,
    waited_for_decision_s: float,
    e2e_s: float,
    first_token_s: float | None = None,
) -> RequestOutcome:
    """What the client saw of a request that got a result. Time to first token = the
    scheduling round trip + the worker's own arrival-to-first-token, unless it came
    earlier, on a worker that then migrated the request (`first_token_s`)."""
    return RequestOutcome(
        request_id=request_id,
        model=model,
        ok=result.ok,
        reason=result.reason,
        worker_id=result.worker_id,
        cold_start=result.cold_start,
        queue_s=result.queue_s,
        ttft_s=waited_for_decision_s + result.ttft_s if first_token_s is None else first_token_s,
        e2e_s=e2e_s,
    )


class RequestClient(Generic[A]):
    """Every request from arrival to end; `ended` hears of each end, in order."""

    def __init__(
        self,
        driver: Driver[A],
        *,
        scheduler: Callable[[], A],
        worker_address: Callable[[ScheduleResponse], A],
        schedule_timeout_s: float = SCHEDULE_TIMEOUT_S,
        result_timeout_s: float = RESULT_TIMEOUT_S,
        refusal_retries: int = 0,
        ended: Callable[[RequestOutcome, Arrival], None] | None = None,
    ) -> None:
        self.driver = driver
        # How often a request refused with a Retry-After asks again (the official openai
        # client: 2); 0, a refusal ends it.
        self.refusal_retries = refusal_retries
        self.scheduler = scheduler
        self.worker_address = worker_address
        self.schedule_timeout_s = schedule_timeout_s
        self.ended = ended
        self.pending: dict[str, _Pending] = {}
        self.outcomes: list[RequestOutcome] = []
        self.placed_on: set[str] = set()  # every worker a decision named
        # Every request from arrival to answer: the worker holding it, whether it started,
        # what to do when that worker is lost, and the deadline (`result_timeout_s`).
        self.outstanding = OutstandingRequests(deadline_s=result_timeout_s)
        self._awaiting_decision: deque[tuple[float, str]] = deque()
        self._decision_timer = False
        self._deadline_timer = False

    def begin(self, request_id: str, arrival: Arrival) -> None:
        """A request arrives now."""
        now = self.driver.now()
        pending = _Pending(request_id, arrival, now)
        self.pending[request_id] = pending
        self.outstanding.begin(request_id, now)
        if not self._deadline_timer:
            self._deadline_timer = True
            self.driver.call_at(now + self.outstanding.deadline_s, self._deadlines, None)
        self._ask(pending)

    def receive(self, message: Message, sender: A) -> None:
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

    def abandon(self, request_id: str | None = None) -> None:
        """End `request_id` (None: every request) as ``unfinished``: the run stopped."""
        chosen = self.pending.values() if request_id is None else [self.pending[request_id]]
        for pending in list(chosen):
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

    # -- the steps ----------------------------------------------------------------------

    def _ask(self, pending: _Pending) -> None:
        """Ask a scheduler where to run the request (again, after a retry)."""
        arrival = pending.arrival
        self.driver.send(
            self.scheduler(),
            ScheduleRequest(
                request_id=pending.request_id,
                model=arrival.model,
                priority=0,
                prompt_tokens=arrival.prompt_tokens + pending.produced,
                output_tokens=arrival.output_tokens - pending.produced,
            ),
        )
        decide_by = pending.decide_by = self.driver.now() + self.schedule_timeout_s
        self._awaiting_decision.append((decide_by, pending.request_id))
        if not self._decision_timer:
            self._decision_timer = True
            self.driver.call_later(self.schedule_timeout_s, self._decision_timeouts, None)

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
        pending.decide_by = None  # until it is asked again
        if decision.after_s > 0:
            self.driver.call_later(decision.after_s, self._ask_again, pending.request_id)
        else:
            self._ask(pending)

    def _ask_again(self, request_id: str) -> None:
        pending = self.pending.get(request_id)
        if pending is not None and pending.phase == _SCHEDULING:
            self._ask(pending)

    def _decided(self, decision: ScheduleResponse) -> None:
        pending = self.pending.get(decision.request_id)
        if pending is None or pending.phase != _SCHEDULING:
            return  # late, or a duplicate datagram
        arrival = pending.arrival
        if decision.action == HOLD:
            # The scheduler holds it and answers later, within `estimated_wait_s`.
            decide_by = self.driver.now() + decision.estimated_wait_s + self.schedule_timeout_s
            pending.decide_by = decide_by
            self.driver.call_at(decide_by, self._hold_over, (pending.request_id, decide_by))
            return
        if decision.action == "reject":
            wait = retry_after_s(decision.reason, decision.estimated_wait_s)
            if wait is not None and pending.refusals < self.refusal_retries:
                pending.refusals += 1
                pending.decide_by = None  # until it is asked again
                self.driver.call_later(wait, self._ask_again, pending.request_id)
                return
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
        pending.scheduled = self.driver.now()
        self.placed_on.add(decision.worker_id)
        verdict = self.outstanding.placed(pending.request_id, decision.worker_id)
        if verdict is not None:
            self._carry_out(verdict)
            return
        self.driver.send(
            self.worker_address(decision),
            InferenceRequest(
                request_id=pending.request_id,
                model=arrival.model,
                prompt_tokens=arrival.prompt_tokens + pending.produced,
                output_tokens=arrival.output_tokens - pending.produced,
            ),
        )

    def _finished(self, result: InferenceResult) -> None:
        pending = self.pending.get(result.request_id)
        if pending is None:
            return  # a duplicate, or a late answer: the first one counts
        if not result.ok and result.reason == HANDED_BACK:
            verdict = self.outstanding.handed_back(result.request_id, result.worker_id)
            if verdict is not None:
                self._carry_out(verdict)  # placed again elsewhere, or out of tries
                return
        if not result.ok and result.reason == MIGRATED:
            verdict = self.outstanding.migrated(result.request_id, result.worker_id)
            if verdict is not None:
                if pending.first_token_s is None and result.generated_tokens:
                    pending.first_token_s = pending.scheduled - pending.started + result.ttft_s
                pending.produced += result.generated_tokens
                self._carry_out(verdict)  # the rest placed again, or out of tries
                return
        self._end(
            pending,
            outcome_of(
                pending.request_id,
                pending.arrival.model,
                result,
                pending.scheduled - pending.started,
                self.driver.now() - pending.started,
                pending.first_token_s,
            ),
        )

    def _end(self, pending: _Pending, outcome: RequestOutcome) -> None:
        del self.pending[pending.request_id]
        self.outstanding.end(pending.request_id)
        self.outcomes.append(outcome)
        if self.ended is not None:
            self.ended(outcome, pending.arrival)

    # -- timeouts -----------------------------------------------------------------------

    def _decision_timeouts(self, _: None) -> None:
        """End the requests past their decision deadline; re-arm at the next one."""
        now = self.driver.now()
        queue = self._awaiting_decision
        pending_by_id = self.pending
        while queue:
            deadline, request_id = queue[0]
            pending = pending_by_id.get(request_id)
            if pending is None or pending.phase != _SCHEDULING or pending.decide_by != deadline:
                queue.popleft()  # answered in time (an ask since has its own entry)
                continue
            if deadline > now:
                self.driver.call_at(deadline, self._decision_timeouts, None)
                return
            queue.popleft()
            self._end(
                pending,
                RequestOutcome(
                    request_id=request_id,
                    model=pending.arrival.model,
                    ok=False,
                    reason=NO_DECISION,
                ),
            )
        self._decision_timer = False

    def _hold_over(self, held: tuple[str, float]) -> None:
        """End a held request whose later decision never came."""
        request_id, decide_by = held
        pending = self.pending.get(request_id)
        if pending is None or pending.phase != _SCHEDULING or pending.decide_by != decide_by:
            return
        self._end(
            pending,
            RequestOutcome(
                request_id=request_id, model=pending.arrival.model, ok=False, reason=NO_DECISION
            ),
        )

    def _deadlines(self, _: None) -> None:
        """Fail what is past its deadline; re-arm at the next one."""
        for failed in self.outstanding.expire(self.driver.now()):
            self._carry_out(failed)
        deadline = self.outstanding.next_deadline()
        self._deadline_timer = deadline is not None
        if deadline is not None:
            self.driver.call_at(deadline, self._deadlines, None)

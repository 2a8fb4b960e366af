"""The central coordinator: a cluster view, a placement policy and the counters `status` shows.

`Coordinator.handle(message, now)` is the whole protocol: a worker report updates the
view, a schedule request gets a decision, a cluster-state request gets one page of the
state. It returns what to send back to the sender plus notices for the runtime to log
(the core never logs). `expire(now)` drops silent workers; the runtime calls it at
`next_deadline()`.

A decision lands only where the model fits, GPUs and GPU memory enough, whatever the
policy: a pick that falls short (seed's score and the load-only policies ignore fit) is
replaced by the policy's choice among the workers it fits (`_choose_where_it_fits`), and
only a model no accepting worker fits is refused, saying why.

A report is all it takes to join, so new workers are admitted by `sllm.core.admission`:
the view holds at most `Admission.capacity` workers (MAX_WORKERS) and each source address
may announce new ones only so fast (NEW_IDENTITY_RATE); refusals are counted in the cluster
state and noticed at most once per interval. Known workers are never refused.

Admission by deadline (`deadline_s`, off by default): when the chosen worker's estimated
time to first token exceeds the deadline plus the request's own load there (a cold start
is no one's queue: a deadline below a 70B checkpoint's load from the store would refuse
that model for ever, since a refused request loads nothing), the request is rejected at
once with reason ``over_deadline`` and the estimate (the HTTP front door answers 429 with
a Retry-After from it), instead of joining a queue it would time out in. A model
already on its way to the chosen worker's GPU is no cold start of this request: the
estimate counts the wait for that load (`Estimator.wait_for_load`), which the deadline
judges like any other wait. Since startup-aware ranks such a worker as if the model were
there, another may still serve the request within the deadline (a copy already warm, a
short load): before refusing, the coordinator takes the fastest of the workers a
startup-aware decision examines (`placement.candidates`, and on a node its probed
candidates too) whose whole estimate, load included, is within the deadline.

The held queue (`hold_s`, ADMISSION_HOLD; off by default) is the other answer to a request
over the deadline, or to one every queue refuses: hold it, at most `HOLD_MAX` at once, and
place it as soon as the deadline admits it. The first answer is ``hold`` (with the seconds
left until the decision comes at the latest), and `release`, which the runtime calls every
`RELEASE_PERIOD_S`, makes the decision later and says whom it goes to (`reply_to`, the
asker as the runtime addresses it). One held `hold_s` is refused as over the deadline
then. Early refusal and the held queue are measured against each other in
docs/simulator.md ("The held queue").

Its state is soft: a restarted coordinator learns every worker again from the next round
of reports, within one REPORT_INTERVAL. Only the counters start again from zero, and the
held requests are forgotten: their clients give up on them when the hold ends.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

from sllm.core.admission import REFUSED_EVENT, Admission
from sllm.core.cost import CostModel, ModelInfo
from sllm.core.measures import warm_placement_rate
from sllm.core.placement import (
    Choice,
    Estimator,
    candidates,
    fastest_within,
    fits,
    load_time_on,
    make_policy,
)
from sllm.core.tiers import GPU
from sllm.core.view import ClusterView, WorkerEntry
from sllm.records import record
from sllm.wire.messages import (
    SECONDS_MAX,
    SUMMARY_MAX_MODELS,
    ClusterStateRequest,
    ClusterStateResponse,
    Message,
    ScheduleRequest,
    ScheduleResponse,
    WorkerReport,
    WorkerSummary,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """Something the runtime should log: a fixed event name and its details."""

    event: str
    fields: Mapping[str, object]


@record
class Outcome:
    """What the runtime does after a message: send `replies` back, log `notices`."""

    replies: tuple[Message, ...] = ()
    notices: tuple[Notice, ...] = ()


# A rejection's reason when the best estimate exceeds the admission deadline.
OVER_DEADLINE = "over_deadline"

# How long a refused request should wait before it asks again (`retry_after_s`). Every
# queue a decision looked at was full: a slot frees within a request's service time.
QUEUES_FULL_RETRY_AFTER_S = 1
# A refusal over the admission deadline asks the client to come back when the best
# estimate says a slot or a load should be free, and at most this long: the official
# openai client honours a Retry-After of up to 60 s and ignores a longer one.
OVER_DEADLINE_RETRY_MAX_S = 60
# No worker is known or ready, or none has the GPUs: the autoscaler may be starting one
# (scale from zero). KEDA looks at the metrics every 15 s (its default polling interval),
# so nothing can have changed sooner; and the official openai client waits what the
# header says before each of its 2 default retries, so it spans 30 s of a worker's start
# without the caller doing anything.
NO_WORKER_RETRY_AFTER_S = 15

# The held queue (`Coordinator`'s ``hold_s``): at most this many requests wait in it at
# once; one more over the deadline is refused as without it. Measured at 256 with a 60 s
# hold: a bound of 32 failed 3x more requests at 30% load on seed 1 (docs/simulator.md,
# "The held queue").
HOLD_MAX = 256
# While requests are held, how often the runtime asks which of them can go
# (`Coordinator.release`): workers report once a second, so a quarter of that sees each
# report's change soon, and a pass costs a placement per held request.
RELEASE_PERIOD_S = 0.25
# What a held request waits out: an estimate over the deadline, or every queue full.
HOLDABLE = frozenset({OVER_DEADLINE, "queues_full"})
# The answer to a held request (`ScheduleResponse.action`): its decision comes later, at
# the latest in `estimated_wait_s`.
HOLD = "hold"


@dataclass(slots=True, kw_only=True)
class Held:
    """A request in the held queue: since when, and whom its decision goes to (the
    runtime's address of the asker, opaque to the core)."""

    request: ScheduleRequest
    since: float
    reply_to: object


@record
class _Refused:
    """Why `Coordinator._decide` placed nothing: the caller refuses or holds."""

    reason: str
    estimated_wait_s: float = 0.0


# Most messages are worker reports that call for nothing: one shared, immutable answer.
NOTHING = Outcome()


def _wire_seconds(estimate_s: float) -> float:
    """An estimate as a decision carries it: to the millisecond (its digits beyond are
    noise, and each costs a byte), at most a day."""
    return round(min(estimate_s, SECONDS_MAX), 3)


def refusal(request_id: str, reason: str, estimated_wait_s: float = 0.0) -> ScheduleResponse:
    """The decision that refuses a request: no worker, a reason, and for a refusal over
    the deadline the estimate (the front door's Retry-After). A ``hold`` answer is the
    same with its own action."""
    return ScheduleResponse(
        request_id=request_id,
        worker_id="",
        host="",
        port=0,
        http_port=0,
        action="reject",
        estimated_wait_s=_wire_seconds(estimated_wait_s),
        reason=reason,
    )


def retry_after_s(reason: str, estimated_wait_s: float) -> int | None:
    """Whole seconds a request refused for `reason` (a decision whose best estimate was
    `estimated_wait_s`) should wait before asking again; None where asking again cannot
    help (an unknown model, one no worker fits).

    One rule for the front door's ``Retry-After`` and for the simulated client that
    honours it (`RequestClient`'s ``refusal_retries``), as the official openai client
    does: what a retrying client meets in the simulator is what it would meet live.
    Decentralized nodes refuse for the same reasons.
    """
    if reason == "queues_full":
        return QUEUES_FULL_RETRY_AFTER_S
    if reason == OVER_DEADLINE:
        wait = math.ceil(min(estimated_wait_s, OVER_DEADLINE_RETRY_MAX_S))
        return max(QUEUES_FULL_RETRY_AFTER_S, wait)
    if reason in ("no_workers", "no_ready_workers", "not_enough_gpus"):
        return NO_WORKER_RETRY_AFTER_S
    return None


@dataclass(slots=True)
class Counters:
    """Decisions since this coordinator started.

    Placements, not requests: `warm_placements` counts the ones onto a worker with the
    model on (or arriving on) its GPU, `cold_placements` the others. A request placed
    where its model is still arriving is a warm placement that waits for the load, a cold
    start to its client (`sllm.core.measures` defines both measures).
    """

    reports: int = 0
    requests: int = 0
    warm_placements: int = 0
    cold_placements: int = 0
    rejected: int = 0
    held: int = 0  # requests that entered the held queue, each once
    by_action: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, action)

    @property
    def warm_placement_rate(self) -> float:
        return warm_placement_rate(self.warm_placements, self.cold_placements)


class Coordinator:
    """Global view plus a policy; every entry point is `(input, now) -> output`."""

    def __init__(
        self,
        policy: str,
        catalog: Mapping[str, ModelInfo],
        cost: CostModel,
        worker_timeout: float,
        rng: random.Random,
        started_at: float,
        admission: Admission | None = None,
        deadline_s: float | None = None,
        hold_s: float | None = None,
        hold_max: int = HOLD_MAX,
    ) -> None:
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0 or None, got {deadline_s!r}")
        self.deadline_s = deadline_s
        if hold_s is not None and not (hold_s > 0 and deadline_s is not None):
            raise ValueError(f"hold_s must be > 0 with a deadline, or None, got {hold_s!r}")
        if hold_max < 1:
            raise ValueError(f"hold_max must be >= 1, got {hold_max!r}")
        self.hold_s = hold_s
        self.hold_max = hold_max
        self.held: dict[str, Held] = {}  # the held queue, oldest first
        self.view = ClusterView(worker_timeout, admission)
        # Admission's estimates (`_within_deadline`) and the policy's, with one timing cache.
        self.estimator = Estimator(cost)
        self.policy = make_policy(policy, cost, rng, self.estimator)
        self.catalog = catalog
        self.cost = cost
        self.counters = Counters()
        self.started_at = started_at

    def handle(
        self, message: Message, now: float, source: str = "", reply_to: object = None
    ) -> Outcome:
        """`source`: the sender's address (host), for the limit on new workers per source;
        a driver that does not know it passes nothing, and only the cap applies.
        `reply_to`: the sender as the runtime addresses it, where a held request's
        decision goes later (`place`)."""
        if isinstance(message, WorkerReport):
            self.counters.reports += 1
            joined = self.view.apply_report(message, now, source)
            if joined is False:
                return NOTHING
            if joined:
                notice = Notice(
                    event="worker_joined", fields={"worker": message.node_id, "port": message.port}
                )
                return Outcome(notices=(notice,))
            refused = self.view.admission.notice("worker", now)  # at most one per interval
            if refused is None:
                return NOTHING
            return Outcome(notices=(Notice(event=REFUSED_EVENT, fields=refused),))
        if isinstance(message, ScheduleRequest):
            notices = self.expire(now)  # or `place` drops them unannounced
            decision = self.place(message, now, reply_to=reply_to)
            return Outcome(replies=(decision,), notices=notices)
        if isinstance(message, ClusterStateRequest):
            notices = self.expire(now)
            return Outcome(replies=(self.cluster_state(message, now),), notices=notices)
        return Outcome(notices=(Notice(event="unexpected_message", fields={"type": message.TYPE}),))

    def expire(self, now: float) -> tuple[Notice, ...]:
        gone = self.view.expire(now)
        if not gone:
            return ()  # the common case: before every decision
        timeout = self.view.worker_timeout
        return tuple(
            Notice(event="worker_lost", fields={"worker": id_, "timeout_s": timeout})
            for id_ in gone
        )

    def forget(self, worker_id: str, now: float, why: str) -> list[Notice]:
        """Drop a worker the data plane failed to use (`why`: unreachable, timed out,
        answered 503, ...); its next report brings it back."""
        if worker_id not in self.view:
            return []
        self.view.remove(worker_id)
        return [Notice(event="worker_forgotten", fields={"worker": worker_id, "why": why})]

    def next_deadline(self) -> float | None:
        """When the oldest live worker times out if it stays silent."""
        oldest = next(self.view.entries(), None)
        return None if oldest is None else oldest.last_seen + self.view.worker_timeout

    def place(
        self,
        request: ScheduleRequest,
        now: float,
        among: Sequence[str] = (),
        reply_to: object = None,
    ) -> ScheduleResponse:
        """Decide where `request` runs. With `among` (workers whose reports were just
        asked for: a decentralized node's probed candidates) the policy decides among
        those alone, so that a fresh report is not passed over for a stale one that only
        looks better; when none of them can take the request, the whole view decides.

        With a held queue (`hold_s`), a request over the deadline, or one every queue
        refuses, is held while the queue has room: the answer is ``hold``, and its
        decision goes to `reply_to` later (`release`). Asked again while held, it is
        answered ``hold`` again, and its decision goes to the latest asker."""
        self.view.expire(now)
        held = self.held.get(request.request_id) if self.held else None  # mostly empty
        if held is not None:
            held.reply_to = reply_to
            return self._hold_answer(held, now)
        self.counters.requests += 1
        if request.model in self.catalog:  # any name off the wire would grow the counts
            self.view.arrivals.arrived(request.model, now)
        decision = self._decide(request, now, among)
        if not isinstance(decision, _Refused):
            return decision
        holds = self.hold_s is not None and len(self.held) < self.hold_max
        if holds and decision.reason in HOLDABLE:
            held = Held(request=request, since=now, reply_to=reply_to)
            self.held[request.request_id] = held
            self.counters.held += 1
            return self._hold_answer(held, now)
        return self._reject(request, decision)

    def release(
        self, now: float, among: Mapping[str, Sequence[str]] | None = None
    ) -> list[tuple[object, ScheduleResponse]]:
        """The decisions of the held requests that can go now, oldest first, each with
        whom it goes to: a request is placed once the deadline admits it, and refused
        once held `hold_s` (or when the cluster cannot take it at all any more). The
        runtime calls it every `RELEASE_PERIOD_S` while `held` is not empty. `among`: a
        node's probed candidates by held request id, decided among as `place` does."""
        hold_s = self.hold_s
        if not self.held or hold_s is None:
            return []
        self.view.expire(now)
        decisions = []
        probed = among or {}
        for request_id, held in list(self.held.items()):
            decision = self._decide(held.request, now, probed.get(request_id, ()))
            if isinstance(decision, _Refused):
                if decision.reason in HOLDABLE and now - held.since < hold_s:
                    continue
                decision = self._reject(held.request, decision)
            del self.held[request_id]
            decisions.append((held.reply_to, decision))
        return decisions

    def _hold_answer(self, held: Held, now: float) -> ScheduleResponse:
        """``hold``, with the seconds left until the decision comes at the latest."""
        assert self.hold_s is not None
        left = max(0.0, held.since + self.hold_s - now)
        no_worker_yet = refusal(held.request.request_id, "held", estimated_wait_s=left)
        return dataclasses.replace(no_worker_yet, action=HOLD)

    def _decide(
        self, request: ScheduleRequest, now: float, among: Sequence[str] = ()
    ) -> ScheduleResponse | _Refused:
        """The decision for `request`, or why there is none (`_Refused`). Counts a
        placement, never a refusal: the caller may hold the request instead."""
        model = self.catalog.get(request.model)
        if model is None:
            return _Refused(reason="unknown_model")
        choice = self._choose_among_candidates(request, model, among, now) if among else None
        if choice is None:
            choice = self.policy.choose(self.view, request, model)
        if choice is None:
            return _Refused(reason=self._why_none_accepts())
        if not fits(choice.worker, model):
            choice = self._choose_where_it_fits(request, model, now)
            if choice is None:
                return _Refused(reason=self._why_it_fits_nowhere(model))
        entry = choice.worker
        new_load_s = self._new_load_s(choice, model)
        if self.deadline_s is not None and choice.estimated_wait_s > self.deadline_s + new_load_s:
            within = self._within_deadline(request, model, among)
            if within is None:
                return _Refused(reason=OVER_DEADLINE, estimated_wait_s=choice.estimated_wait_s)
            choice, entry = within, within.worker
            new_load_s = self._new_load_s(choice, model)
        cold = choice.tier is not GPU
        if cold:
            self.counters.cold_placements += 1
        else:
            self.counters.warm_placements += 1
        self.view.record_placement(entry.worker_id, request.model, new_load_s)
        action = "cold_start" if cold else "serve"
        self._count(request.model, action)
        report = entry.report
        return ScheduleResponse(
            request_id=request.request_id,
            worker_id=entry.worker_id,
            host=report.host,
            port=report.port,
            http_port=report.http_port,
            action=action,
            estimated_wait_s=_wire_seconds(choice.estimated_wait_s),
            reason=choice.reason,
        )

    def _new_load_s(self, choice: Choice, model: ModelInfo) -> float:
        """The load this request starts where `choice` puts it: none where the model is
        on (or on its way to) the GPU."""
        if choice.tier is GPU:
            return 0.0
        return load_time_on(choice.worker.report, choice.tier, model.size_bytes, self.cost)

    def _within_deadline(
        self, request: ScheduleRequest, model: ModelInfo, among: Sequence[str]
    ) -> Choice | None:
        """For a request the policy's choice would make wait beyond the deadline: the
        fastest worker that serves it within the deadline, load included, or None.

        It looks where a startup-aware decision looks (`candidates`), and on a node at
        the candidates it probed as well (their reports are fresh; the other entries of
        its view may be seconds old). So a refusal costs O(CANDIDATES_PER_TIER)
        estimates, whatever the cluster's size and however often the held queue asks
        again.
        """
        assert self.deadline_s is not None
        entries = [entry for worker_id in among if (entry := self.view.get(worker_id))]
        entries += [e for e in candidates(self.view, model.name) if e.worker_id not in among]
        return fastest_within(self.estimator, entries, request, model, self.deadline_s)

    def _choose_where_it_fits(
        self, request: ScheduleRequest, model: ModelInfo, now: float
    ) -> Choice | None:
        """The policy's choice among the workers `model` fits (GPUs and memory enough),
        for when its choice over all of them did not fit: every policy, fit-aware or not
        (seed's score ignores fit), places only where the model can run. The policy
        decides over a view of just those workers, so this costs O(N) a request: only
        models too large for some workers of a mixed fleet ever take it. None when no
        worker it fits takes requests."""
        if model.size_bytes > self.view.largest_gpu_bytes:
            return None  # fits nowhere: no need to look
        eligible = [entry for entry in self.view.entries() if fits(entry, model)]
        return self._choose_in_part(request, model, eligible, now) if eligible else None

    def _choose_among_candidates(
        self, request: ScheduleRequest, model: ModelInfo, among: Sequence[str], now: float
    ) -> Choice | None:
        """The policy's choice among the workers `among`, or None when none of them is
        known, takes requests, has GPUs enough and memory enough for `model`."""
        entries = [entry for worker_id in among if (entry := self.view.get(worker_id))]
        fit = [entry for entry in entries if fits(entry, model)]
        return self._choose_in_part(request, model, fit, now) if fit else None

    def _choose_in_part(
        self, request: ScheduleRequest, model: ModelInfo, entries: list[WorkerEntry], now: float
    ) -> Choice | None:
        """The policy's choice over a view of just `entries`, as an entry of this view."""
        choice = self.policy.choose(self.view.part(entries, now), request, model)
        if choice is None:
            return None
        real = self.view.get(choice.worker.worker_id)
        return None if real is None else dataclasses.replace(choice, worker=real)

    def _why_none_accepts(self) -> str:
        """Why no worker took a request: none known, none ready, or every ready one full.

        Only "queues_full" is saturation (429, retry shortly); a cluster whose workers are
        all stopping or starting has nothing to wait for in line (503). The scan stops at
        the first ready worker, which under saturation is the first one it looks at, so a
        rejection stays O(1) when it matters; it walks the whole view only when no worker
        is ready.
        """
        if len(self.view) == 0:
            return "no_workers"
        if not any(entry.report.ready for entry in self.view.entries()):
            return "no_ready_workers"
        return "queues_full"

    def _why_it_fits_nowhere(self, model: ModelInfo) -> str:
        """Why no worker `model` fits took it: none has GPUs enough (``not_enough_gpus``,
        503: one may join), none with GPUs enough has memory enough (``model_too_large``,
        the client's error), or every one it fits is full or not ready (``queues_full``:
        retry shortly). A one-GPU model larger than every GPU is told so in O(1); the
        rest scan the view, stopping at the first worker it fits."""
        if model.gpus <= 1 and model.size_bytes > self.view.largest_gpu_bytes:
            return "model_too_large"  # every worker has a GPU
        gpus_enough = False
        for entry in self.view.entries():
            if entry.report.gpus >= model.gpus:
                if entry.report.memory_total >= model.size_bytes:
                    return "queues_full"
                gpus_enough = True
        return "model_too_large" if gpus_enough else "not_enough_gpus"

    def _reject(self, request: ScheduleRequest, refused: _Refused) -> ScheduleResponse:
        self.counters.rejected += 1
        self._count(request.model, "reject")
        return refusal(request.request_id, refused.reason, refused.estimated_wait_s)

    def _count(self, model: str, action: str) -> None:
        key = (model if model in self.catalog else "unknown", action)
        self.counters.by_action[key] = self.counters.by_action.get(key, 0) + 1

    def cluster_state(self, request: ClusterStateRequest, now: float) -> ClusterStateResponse:
        """Cluster-wide figures plus one page of workers sorted by id. O(N): for `status`."""
        self.view.expire(now)
        entries = sorted(self.view.entries(), key=lambda entry: entry.worker_id)
        depths = [entry.report.queue_depth for entry in entries]
        utilizations = [entry.report.gpu_utilization for entry in entries]
        page = entries[request.offset : request.offset + request.limit]
        return ClusterStateResponse(
            request_id=request.request_id,
            policy=self.policy.name,
            active_workers=len(entries),
            total_requests=self.counters.requests,
            cache_hits=self.counters.warm_placements,
            cold_starts=self.counters.cold_placements,
            rejected=self.counters.rejected,
            queue_depth_mean=sum(depths) / len(depths) if depths else 0.0,
            queue_depth_max=max(depths, default=0),
            gpu_utilization_mean=sum(utilizations) / len(utilizations) if utilizations else 0.0,
            uptime_s=max(0.0, now - self.started_at),
            offset=request.offset,
            workers=tuple(
                WorkerSummary(
                    worker_id=entry.worker_id,
                    host=entry.report.host,
                    port=entry.report.port,
                    models=dict(islice(entry.report.models.items(), SUMMARY_MAX_MODELS)),
                    queue_depth=entry.report.queue_depth,
                    running=entry.report.running,
                    gpu_utilization=entry.report.gpu_utilization,
                    last_report_age_s=min(max(0.0, now - entry.last_seen), 86_400.0),
                    ready=entry.report.ready,
                )
                for entry in page
            ),
            max_workers=self.view.admission.capacity,
            refused_workers=self.view.admission.refused,
        )

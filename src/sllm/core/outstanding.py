"""Requests a client has placed and not yet seen end: what to do when their worker dies.

Why it exists: a request sent to a worker that then dies gets no answer, and the client
that waits for it waits forever. Whoever holds an outstanding request (the load
generator of the experiments, the simulator's client) keeps it here, with the worker it
was placed on and whether that worker said it started (``inference_started``). When the
worker is declared lost (membership's dead notice, the coordinator's ``worker_lost``),
`worker_lost` decides for each request held there:

- not started: `Retry`, place it again elsewhere, up to `MAX_PLACEMENTS` placements in
  all (a request that meets several dying workers in a row fails with
  ``retries_exhausted``);
- started: `Fail` at once with ``worker_lost``: its tokens died with the worker, and
  running it again would double its cost without the client asking.

A request a worker hands back before starting it (``handed_back``: the load it waited
for found no room, `sllm.core.worker.WorkerState.tick`) is placed again the same way
(`handed_back`), and so is the rest of a running request the worker migrated off
(``migrated``, `migrated`): its tokens so far were answered, so nothing runs twice.
Such a move is a live worker's choice, not a death: the placement it ends does not count
against `MAX_PLACEMENTS`, which is for dying workers, and the deadline bounds how often a
request is moved. (Counted, a small model's request handed back three times failed with
``retries_exhausted`` after about three loads' time: docs/simulator.md, "Hand-back".)

Every request also has a deadline, `REQUEST_DEADLINE_S` after it began: whatever
notice is lost, `expire` fails it with ``no_result`` then, so no client waits past it.

A request placed on a worker already known lost (a scheduler that has not heard of the
death yet) is asked for again after `STALE_PLACEMENT_DELAY_S`; that placement does not
count against `MAX_PLACEMENTS`, and the deadline still bounds the loop. A lost worker is
forgotten when it is heard from again (`worker_back`: a restarted process, or a false
suspicion).

Like every core object it is sans-I/O: the driver passes ``now`` and carries out the
decisions it gets back. Not handled yet: cancelling a request on a worker that was
declared lost but still lives (it may run twice; the first answer wins).
"""

from __future__ import annotations

from collections import Counter, deque

from sllm.records import record

# Three placements (two retries): a kill of 3 nodes out of 10 at once leaves a request
# placed on one dead node then, during the detection window, on another; a third
# placement happens after both are known dead, so it lands on a live one.
MAX_PLACEMENTS = 3
# Longer than any legitimate wait: the largest catalog model (70.6B, 141 GB) loads from
# the remote store in about 114 s, behind a full queue of 64 requests. Only a lost answer
# (a datagram, or a worker's death nobody noticed) runs into it.
REQUEST_DEADLINE_S = 300.0
# A scheduler that placed a request on a worker the client knows dead has not heard of
# the death yet; gossip spreads it in log(N) rounds of a protocol period (about a second
# for 100 nodes at the live period of 0.2 s), so ask again a little later, not at once.
STALE_PLACEMENT_DELAY_S = 0.5

# Reasons a request fails with here, as the report counts them.
WORKER_LOST = "worker_lost"
RETRIES_EXHAUSTED = "retries_exhausted"
NO_RESULT = "no_result"
# The reason of a request the run itself cut off: still queued or running, on a worker
# nobody declared lost, when the drain after the last arrival ended. Counted apart from
# the lost ones: the system had not failed it, the experiment stopped waiting.
UNFINISHED = "unfinished"


@record
class Retry:
    """Place the request again, `after_s` from now: `lost_worker` held it, queued, when
    it died (or the scheduler chose it without knowing it had died)."""

    request_id: str
    lost_worker: str
    after_s: float = 0.0


@record
class Fail:
    """End the request now with `reason`; `worker_id` held it (empty if none did)."""

    request_id: str
    reason: str
    worker_id: str


Decision = Retry | Fail


@record
class RequestOutcome:
    """How one request ended, as its client saw it; latencies in seconds.

    The client that holds its outstanding requests here ends each with one of these, and
    the run report (`sllm.sim.report`) counts them.
    """

    request_id: str
    model: str
    ok: bool
    reason: str = ""
    worker_id: str = ""
    cold_start: bool = False
    queue_s: float = 0.0
    ttft_s: float = 0.0
    e2e_s: float = 0.0


class _Outstanding:
    __slots__ = ("moves", "placements", "started", "worker_id")

    def __init__(self) -> None:
        self.worker_id = ""  # empty while a placement is being decided
        self.started = False
        self.placements = 0
        self.moves = 0  # placements a live worker ended by moving it (hand-back, migration)


class OutstandingRequests:
    """Outstanding requests by id and by worker; every entry point is `(input, now)`."""

    def __init__(
        self,
        deadline_s: float = REQUEST_DEADLINE_S,
        max_placements: int = MAX_PLACEMENTS,
    ) -> None:
        if not deadline_s > 0 or max_placements < 1:
            raise ValueError("need a positive deadline and at least one placement")
        self.deadline_s = deadline_s
        self.max_placements = max_placements
        self._requests: dict[str, _Outstanding] = {}
        self._by_worker: dict[str, set[str]] = {}
        # (deadline, request id) in the order requests began: the deadline is constant,
        # so the queue is sorted and `expire` looks at its head only.
        self._deadlines: deque[tuple[float, str]] = deque()
        self._lost: set[str] = set()
        self.retried = 0  # placements after the first, over all requests
        self.migrated_total = 0  # running requests placed again after a migration
        self.failed: Counter[str] = Counter()  # requests failed here, by reason

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    def worker_of(self, request_id: str) -> str:
        """The worker holding the request ("" while unplaced or unknown)."""
        request = self._requests.get(request_id)
        return request.worker_id if request is not None else ""

    def is_started(self, request_id: str) -> bool:
        request = self._requests.get(request_id)
        return request is not None and request.started

    # -- input ---------------------------------------------------------------------------

    def begin(self, request_id: str, now: float) -> None:
        """A request arrives; its deadline runs from now."""
        if request_id in self._requests:
            return
        self._requests[request_id] = _Outstanding()
        self._deadlines.append((now + self.deadline_s, request_id))

    def placed(self, request_id: str, worker_id: str) -> Decision | None:
        """A scheduler placed the request on `worker_id`; None: send it there."""
        request = self._requests.get(request_id)
        if request is None:
            return None
        if worker_id in self._lost:  # not a real placement: it never leaves the client
            return Retry(
                request_id=request_id, lost_worker=worker_id, after_s=STALE_PLACEMENT_DELAY_S
            )
        request.placements += 1
        request.worker_id = worker_id
        request.started = False
        holding = self._by_worker.get(worker_id)
        if holding is None:
            holding = self._by_worker[worker_id] = set()
        holding.add(request_id)
        return None

    def started(self, request_id: str, worker_id: str) -> None:
        """The worker acknowledged that the request started running."""
        request = self._requests.get(request_id)
        if request is not None and request.worker_id == worker_id:
            request.started = True

    def end(self, request_id: str) -> None:
        """The request was answered (a result, a rejection): forget it."""
        request = self._requests.pop(request_id, None)
        if request is not None and request.worker_id:
            self._release(request_id, request.worker_id)

    def worker_lost(self, worker_id: str) -> list[Decision]:
        """`worker_id` was declared dead: retry what it queued, fail what it ran."""
        self._lost.add(worker_id)
        holding = self._by_worker.pop(worker_id, None)
        if not holding:
            return []
        # Sorted: a stable order, so a simulated run is the same every time.
        return [
            self._after_loss(request_id, self._requests[request_id], worker_id)
            for request_id in sorted(holding)
        ]

    def handed_back(self, request_id: str, worker_id: str) -> Decision | None:
        """`worker_id` gave the request back before starting it (its model's load found
        no room there): place it again, as a request queued on a lost worker is, but
        without counting the placement it ends against the bound. None for a request not
        held on that worker (late, or a duplicate answer)."""
        request = self._requests.get(request_id)
        if request is None or request.worker_id != worker_id or request.started:
            return None
        request.moves += 1
        return self._after_loss(request_id, request, worker_id)

    def migrated(self, request_id: str, worker_id: str) -> Decision | None:
        """`worker_id` moved the running request off (to make room for a load): place
        the rest of it again, a move as `handed_back` is. None for a request not held on
        that worker."""
        request = self._requests.get(request_id)
        if request is None or request.worker_id != worker_id:
            return None
        request.moves += 1
        request.started = False  # what ran there is done; the rest has not started
        decision = self._after_loss(request_id, request, worker_id)
        if isinstance(decision, Retry):
            self.migrated_total += 1
        return decision

    def worker_back(self, worker_id: str) -> None:
        """`worker_id` is alive again (restarted, or falsely suspected)."""
        self._lost.discard(worker_id)

    def expire(self, now: float) -> list[Fail]:
        """Fail every request past its deadline with ``no_result``."""
        deadlines = self._deadlines
        requests = self._requests
        failed: list[Fail] = []
        while deadlines:
            deadline, request_id = deadlines[0]
            if request_id not in requests:
                deadlines.popleft()  # answered in time
                continue
            if deadline > now:
                break
            deadlines.popleft()
            failed.append(self._fail(request_id, NO_RESULT))
        return failed

    def next_deadline(self) -> float | None:
        """When `expire` must next run (the oldest request's deadline, maybe answered)."""
        deadlines = self._deadlines
        requests = self._requests
        while deadlines and deadlines[0][1] not in requests:
            deadlines.popleft()
        return deadlines[0][0] if deadlines else None

    # -- internals -----------------------------------------------------------------------

    def _after_loss(self, request_id: str, request: _Outstanding, worker_id: str) -> Decision:
        if request.started:
            return self._fail(request_id, WORKER_LOST)
        if request.placements - request.moves >= self.max_placements:
            return self._fail(request_id, RETRIES_EXHAUSTED)
        self._release(request_id, worker_id)
        request.worker_id = ""
        self.retried += 1
        return Retry(request_id=request_id, lost_worker=worker_id)

    def _fail(self, request_id: str, reason: str) -> Fail:
        request = self._requests.pop(request_id)
        if request.worker_id:
            self._release(request_id, request.worker_id)
        self.failed[reason] += 1
        return Fail(request_id=request_id, reason=reason, worker_id=request.worker_id)

    def _release(self, request_id: str, worker_id: str) -> None:
        holding = self._by_worker.get(worker_id)
        if holding is not None:
            holding.discard(request_id)
            if not holding:
                del self._by_worker[worker_id]

"""The cluster view: what a scheduler believes about every worker, indexed for placement.

A view is soft state rebuilt from worker reports. It answers the questions placement asks
without scanning the cluster:

- which live workers accept work, by load (`by_load`);
- which workers hold model ``m`` on the GPU or in host memory, by load (`holders(m, t)`);
- a uniform random live worker (`random_worker`), and the next one in turn (`next_in_turn`).

**Liveness.** A worker is live while its last report is younger than ``worker_timeout``.
Entries are kept in last-report order, so expiry pops from the front: O(expired), not O(N).

**Bounded.** A report is all it takes to become a worker, so a new worker passes
`sllm.core.admission` first: a cap on the view's size and a rate of new workers per source
address. The check runs only on the branch that adds a worker, never for a known one.

**Decisions count their own effect.** Each placement adds one to the chosen worker's
``pending`` count and, for a cold start, marks the model as arriving on its GPU, so a burst
between two reports spreads out instead of landing on one "least loaded" worker. The next
report from that worker replaces the guess with the truth (``pending`` returns to 0).
Known gap: a request still in flight to the worker when its report is sent is briefly
forgotten; on a LAN that window is well under a millisecond.

**Indices.** Only the GPU and host-memory tiers are indexed per model: a worker holds a
few models there, so a placement updates a handful of indices. Disk copies are many
(a pre-populated model store holds dozens) and load about as slowly as the remote store,
so placement finds them among the least-loaded workers instead.

**Arrivals.** A view also counts each model's requests as they arrive at its scheduler
(`ArrivalRates`): placement asks how many more are coming while a load runs.

Loads are small integers (queued + running + pending), so each index is a
bucket queue: ``load -> insertion-ordered ids``, plus a sorted list of the loads present.
Finding the least-loaded worker costs O(1) in the common case and an update costs
O(log L) for L distinct loads. Ties go to the worker whose load changed longest ago,
which spreads equal-load work around (a report that changes nothing moves nothing).
"""

from __future__ import annotations

import bisect
import math
import random
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

from sllm.core.admission import MAX_WORKERS_DEFAULT, Admission
from sllm.core.keepalive import decayed
from sllm.core.tiers import GPU, REMOTE, Tier
from sllm.wire.messages import WorkerReport

INDEXED_TIERS = frozenset({int(Tier.GPU), int(Tier.HOST)})
_TIER_BY_VALUE = tuple(Tier)  # indexing a tuple is much cheaper than calling Tier(value)

V = TypeVar("V")


class LoadIndex(Generic[V]):
    """Keys bucketed by integer load, lowest load first, each with a value (the view's entry).

    Placement reads the values of the first few keys (`first`), so it never looks a key
    up again.
    """

    __slots__ = ("_buckets", "_loads", "_where")

    def __init__(self) -> None:
        self._buckets: dict[int, dict[str, V]] = {}
        self._loads: list[int] = []  # the keys of _buckets, sorted
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def set(self, key: str, load: int, value: V) -> None:
        """Put `key` at `load` (moving it if it was elsewhere), with its `value`."""
        old = self._where.get(key)
        if old == load:
            return
        if old is not None:
            self._remove_from_bucket(key, old)
        bucket = self._buckets.get(load)
        if bucket is None:
            bucket = self._buckets[load] = {}
            bisect.insort(self._loads, load)
        bucket[key] = value
        self._where[key] = load

    def discard(self, key: str) -> None:
        old = self._where.pop(key, None)
        if old is not None:
            self._remove_from_bucket(key, old)

    def _remove_from_bucket(self, key: str, load: int) -> None:
        bucket = self._buckets[load]
        del bucket[key]
        if not bucket:
            del self._buckets[load]
            del self._loads[bisect.bisect_left(self._loads, load)]

    def lowest(self) -> Iterator[str]:
        """Keys in ascending load; stop early, the walk is lazy."""
        for load in self._loads:
            yield from self._buckets[load]

    def first(self, count: int) -> list[V]:
        """The values of the first `count` keys of `lowest()` (fewer if there are fewer)."""
        found: list[V] = []
        for load in self._loads:
            found.extend(islice(self._buckets[load].values(), count - len(found)))
            if len(found) >= count:
                break
        return found


@dataclass(slots=True)
class WorkerEntry:
    """One worker as the view knows it: its last report plus this scheduler's own effect."""

    report: WorkerReport
    last_seen: float
    # The report's models on the GPU or in host memory, with their tier, GPU ones first:
    # the only ones the indices hold, kept apart so that indexing a worker skips its many
    # disk copies (and a placement, its host-memory ones).
    indexed: list[tuple[str, int]]
    pending: int = 0
    arriving: set[str] = field(default_factory=set)  # models this view sent it to cold-start
    extra_backlog_s: float = 0.0  # load seconds this view queued since the report

    @property
    def worker_id(self) -> str:
        return self.report.node_id

    @property
    def load(self) -> int:
        return self.report.queue_depth + self.report.running + self.pending

    @property
    def accepts(self) -> bool:
        """Ready and with room in its bounded queue (counting what we sent since).

        At most ``slots`` requests run, so the rest wait; and the reported queue is
        waiting already, even with free slots (its requests wait for a model load).
        """
        report = self.report
        waiting = max(report.queue_depth, self.load - report.slots)
        return report.ready and waiting < report.queue_capacity

    @property
    def load_backlog_s(self) -> float:
        return self.report.load_backlog_s + self.extra_backlog_s

    def tier_of(self, model: str) -> Tier:
        if model in self.arriving:
            return GPU
        tier = self.report.models.get(model)
        return REMOTE if tier is None else _TIER_BY_VALUE[tier]


def _count(counts: dict[int, int], key: int, change: int) -> None:
    """Add `change` to `counts[key]`, dropping keys that reach zero."""
    left = counts.get(key, 0) + change
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def indexed_models(report: WorkerReport) -> list[tuple[str, int]]:
    """The (model, tier) pairs of `report` that the indices hold, GPU ones first."""
    pairs = [(model, tier) for model, tier in report.models.items() if tier in INDEXED_TIERS]
    pairs.sort(key=lambda pair: pair[1])  # stable: the report's order within a tier
    return pairs


# A model's arrival rate at a scheduler is its count of arrivals decayed with this time
# constant: a minute, about a 70B checkpoint's load from the store, the time a copy takes
# to help (20, 30 and 120 s did worse: docs/simulator.md, "Copies for the requests to
# come").
ARRIVAL_WINDOW_S = 60.0


class ArrivalRates:
    """Each model's arrival rate at one scheduler, counted once per request as it arrives.

    Why: placement starts another copy of a model while a load of it is under way only
    when the copy is sooner; the requests that will arrive during the copy's load make it
    sooner for them (`sllm.core.placement`). A decentralized node counts the requests that
    enter the cluster through it, its share of the rate, and leaves the rest to the
    other nodes: scaled up to the cluster's rate, every node started copies for all of
    it at once (docs/simulator.md, "Copies for the requests to come"). Bounded by the
    caller: only models of the catalog are counted.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, tuple[float, float]] = {}  # model -> (count, counted at)

    def arrived(self, model: str, now: float) -> None:
        count, counted_at = self._counts.get(model, (0.0, now))
        self._counts[model] = (decayed(count, counted_at, now, ARRIVAL_WINDOW_S) + 1.0, now)

    def rate_per_s(self, model: str) -> float:
        """Requests a second for `model` here, as of its last arrival (placement asks
        while deciding that arrival, so it needs no clock)."""
        count, _ = self._counts.get(model, (0.0, 0.0))
        return count / ARRIVAL_WINDOW_S


class ClusterView:
    """Live workers, their last reports and the indices placement needs."""

    def __init__(self, worker_timeout: float, admission: Admission | None = None) -> None:
        self.worker_timeout = worker_timeout
        # Who may join: a cap on workers and a rate of new ones per source address.
        self.admission = admission or Admission(capacity=MAX_WORKERS_DEFAULT)
        self._entries: OrderedDict[str, WorkerEntry] = OrderedDict()  # oldest report first
        self.by_load: LoadIndex[WorkerEntry] = LoadIndex()  # accepting workers
        # By tier value (GPU = 0, HOST = 1): model -> accepting workers holding it there.
        self._holders: tuple[dict[str, LoadIndex[WorkerEntry]], ...] = tuple(
            {} for _ in range(max(INDEXED_TIERS) + 1)
        )
        self._live_ids: list[str] = []  # for O(1) uniform choice and round-robin
        self._live_pos: dict[str, int] = {}
        self._turn = 0
        self._workers_by_slots: dict[int, int] = {}  # slots reported -> live workers
        self._workers_by_gpu_bytes: dict[int, int] = {}  # memory_total -> live workers
        self._expired_at = -math.inf  # the time of the last `expire`
        self.arrivals = ArrivalRates()

    @property
    def same_slots(self) -> bool:
        """Every live worker reports the same number of slots (placement can then rank
        equally warm workers by load alone)."""
        return len(self._workers_by_slots) <= 1

    @property
    def largest_gpu_bytes(self) -> int:
        """The most GPU memory any live worker reports: a checkpoint larger than this fits
        nowhere, so placement need not look for a worker to hold it."""
        return max(self._workers_by_gpu_bytes, default=0)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._entries

    def get(self, worker_id: str) -> WorkerEntry | None:
        return self._entries.get(worker_id)

    def entries(self) -> Iterator[WorkerEntry]:
        """Every live worker, in no promised order. O(N): for reports, never for placement."""
        return iter(self._entries.values())

    def holders(self, model: str, tier: Tier) -> LoadIndex[WorkerEntry] | None:
        """Accepting workers holding `model` in `tier` (GPU or HOST only), by load."""
        return self._holders[tier].get(model) if tier in INDEXED_TIERS else None

    # -- reports and liveness -------------------------------------------------------

    def apply_report(self, report: WorkerReport, now: float, source: str = "") -> bool | None:
        """Take a report in; return True when it introduces a worker the view did not know,
        None when such a worker is refused (`admission`: the view is full, or `source`, the
        address the report came from, announced too many new workers lately), else False.

        A report older than the one held (lower sequence and not newer in time) is a
        reordered duplicate and is ignored. A restarted worker starts its sequence again
        but its timestamp moves on, so it is accepted. Only a new worker meets the
        admission check: a known one is never refused.
        """
        entry = self._entries.get(report.node_id)
        if entry is not None:
            held = entry.report
            if report.seq <= held.seq and report.timestamp <= held.timestamp:
                return False
            # A worker that has not changed its tiers sends the very same dict again.
            same_models = report.models is held.models or report.models == held.models
            # The indices the worker belongs in stay the same: only its load may move.
            same_indices = (
                same_models
                and not entry.arriving
                and report.ready == held.ready
                and report.slots == held.slots
                and report.queue_capacity == held.queue_capacity
            )
            # Most reports change nothing placement looks at; re-indexing them would be
            # most of the cost of taking a report in.
            unchanged = (
                same_indices
                and entry.pending == 0
                and report.queue_depth == held.queue_depth
                and report.running == held.running
            )
            if not same_indices:
                self._unindex(entry)
                if report.slots != held.slots:
                    self._count_slots(held.slots, -1)
                    self._count_slots(report.slots, 1)
            if report.memory_total != held.memory_total:
                _count(self._workers_by_gpu_bytes, held.memory_total, -1)
                _count(self._workers_by_gpu_bytes, report.memory_total, 1)
            entry.report = report
            if not same_models:
                entry.indexed = indexed_models(report)
            entry.last_seen = now
            entry.pending = 0
            if entry.arriving:
                entry.arriving.clear()
            entry.extra_backlog_s = 0.0
            self._entries.move_to_end(report.node_id)
            if not unchanged:
                if entry.accepts:
                    self._index(entry)  # moves it to its load in each index it is in
                else:
                    self._unindex(entry)
            return False
        if not self.admission.admit(size=len(self._entries), source=source, now=now):
            return None
        entry = WorkerEntry(report=report, last_seen=now, indexed=indexed_models(report))
        self._entries[report.node_id] = entry
        self._live_pos[report.node_id] = len(self._live_ids)
        self._live_ids.append(report.node_id)
        self._count_slots(report.slots, 1)
        _count(self._workers_by_gpu_bytes, report.memory_total, 1)
        if entry.accepts:
            self._index(entry)
        return True

    def expire(self, now: float) -> list[str]:
        """Drop workers silent for the timeout or longer; return their ids.

        A worker is live while its last report is younger than the timeout, so one last
        seen at ``t`` goes at ``now == t + worker_timeout``: exactly the coordinator's
        `next_deadline`, which a driver can then schedule without spinning on it.
        """
        if now == self._expired_at:
            return []  # nothing can have timed out since: the coordinator asks twice
        self._expired_at = now
        gone: list[str] = []
        timeout = self.worker_timeout
        for worker_id, entry in self._entries.items():  # oldest report first
            # The same sum as `next_deadline`, so float rounding cannot make them disagree.
            if entry.last_seen + timeout > now:
                break
            gone.append(worker_id)
        for worker_id in gone:
            self.remove(worker_id)
        return gone

    def touch(self, worker_id: str, now: float) -> None:
        """Count a worker as heard from at `now` without a new report.

        For a decentralized node: gossip sends a report only when it changes, and
        membership vouches that an unchanged worker is still there (`sllm.core.node`).
        """
        entry = self._entries.get(worker_id)
        if entry is not None:
            entry.last_seen = now
            self._entries.move_to_end(worker_id)

    def remove(self, worker_id: str) -> None:
        entry = self._entries.pop(worker_id, None)
        if entry is None:
            return
        self._unindex(entry)
        self._count_slots(entry.report.slots, -1)
        _count(self._workers_by_gpu_bytes, entry.report.memory_total, -1)
        position = self._live_pos.pop(worker_id)
        last = self._live_ids.pop()
        if last != worker_id:
            self._live_ids[position] = last
            self._live_pos[last] = position

    # -- the effect of our own decisions -------------------------------------------------

    def record_placement(self, worker_id: str, model: str, new_load_s: float) -> None:
        """Count a request just sent to `worker_id`; `new_load_s` > 0 when it cold-starts.

        The hot path of every decision: it moves the worker within the indices it is in
        rather than rebuilding them.
        """
        entry = self._entries[worker_id]
        entry.pending += 1
        if new_load_s > 0.0 and model not in entry.arriving:
            entry.arriving.add(model)
            entry.extra_backlog_s += new_load_s
        if not entry.accepts:
            self._unindex(entry)
            return
        self._index(entry, True)  # gpu_only: the placement path

    def part(self, entries: Sequence[WorkerEntry], now: float) -> ClusterView:
        """A view of just `entries`, each as this view holds it (its last report and the
        placements this view made since), for a policy to decide among them alone."""
        known = max(1, len(entries))  # every one of them joins at once
        part = ClusterView(self.worker_timeout, Admission(capacity=known, per_source_burst=known))
        part.arrivals = self.arrivals
        for entry in entries:
            part.apply_report(entry.report, now)
            if entry.pending or entry.arriving:
                copy = part._entries[entry.worker_id]
                part._unindex(copy)
                copy.pending = entry.pending
                copy.arriving = set(entry.arriving)
                copy.extra_backlog_s = entry.extra_backlog_s
                if copy.accepts:
                    part._index(copy)
        return part

    # -- random and in-turn access ---------------------------------------------------

    def random_worker(self, rng: random.Random) -> WorkerEntry | None:
        if not self._live_ids:
            return None
        return self._entries[self._live_ids[rng.randrange(len(self._live_ids))]]

    def next_in_turn(self) -> WorkerEntry | None:
        if not self._live_ids:
            return None
        self._turn = (self._turn + 1) % len(self._live_ids)
        return self._entries[self._live_ids[self._turn]]

    # -- index upkeep --------------------------------------------------------------------

    def _count_slots(self, slots: int, change: int) -> None:
        count = self._workers_by_slots.get(slots, 0) + change
        if count:
            self._workers_by_slots[slots] = count
        else:
            del self._workers_by_slots[slots]

    def _index(self, entry: WorkerEntry, gpu_only: bool = False) -> None:
        """Put (or move) a worker that accepts work at its current load in its indices (the
        caller checks that it accepts); with `gpu_only`, leave the host-memory ones.

        A placement moves the worker in the overall and GPU-holder indices only. Host-memory
        holders are re-ranked at the next report: their order may lag one interval, but
        every estimate reads the worker's current load, so only the choice of candidates
        can lag.
        """
        load = entry.load
        worker_id = entry.worker_id
        self.by_load.set(worker_id, load, entry)
        for model, tier in entry.indexed:
            if gpu_only and tier != GPU:
                break  # GPU ones come first
            self._holders_for(model, tier).set(worker_id, load, entry)
        for model in entry.arriving:
            self._holders_for(model, GPU).set(worker_id, load, entry)

    def _unindex(self, entry: WorkerEntry) -> None:
        worker_id = entry.worker_id
        self.by_load.discard(worker_id)
        for model, tier in entry.indexed:
            self._discard_holder(model, tier, worker_id)
        for model in entry.arriving:
            self._discard_holder(model, GPU, worker_id)

    def _holders_for(self, model: str, tier: int) -> LoadIndex[WorkerEntry]:
        holders = self._holders[tier]
        index = holders.get(model)
        if index is None:
            index = holders[model] = LoadIndex()
        return index

    def _discard_holder(self, model: str, tier: int, worker_id: str) -> None:
        holders = self._holders[tier]
        index = holders.get(model)
        if index is None:
            return
        index.discard(worker_id)
        if not index:
            del holders[model]

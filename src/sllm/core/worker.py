"""The worker state machine: a bounded queue, concurrency slots and model tiers.

A worker owns a GPU, host memory and a local disk. Requests wait in a bounded FIFO queue
and run in a fixed number of slots. A request runs only when its model is on the GPU; a
model that is not gets loaded, one load at a time, from the fastest tier holding it.

This class decides; it never waits. Each entry point takes ``now`` and returns `actions`
for an engine to carry out (`StartLoad`, `StartRequest`, `CancelRequest`, `Evict`) and
results to send back (`Finished`). The engine reports back through `load_done`,
`load_failed`, `first_token` and `request_done`. The sim engine turns actions into timers
from the cost model; a real engine loads weights and generates tokens. `next_deadline`
says when `tick` must run next (keep-alive expiry).

Memory rules:

- the GPU holds loaded models plus the one being loaded, never more than ``gpu_bytes``;
- to make room, idle models (nothing queued or running for them) leave the GPU in
  least-recently-used order and stay cached in host memory;
- host memory and disk are LRU caches of checkpoints: a model loaded from the remote store
  is kept on disk and in host memory, evicting the least recently used entries;
- an idle model leaves the GPU after ``keep_alive_s`` (the model's own where it has one,
  `ModelInfo.keep_alive_s`; Shahrad et al., ATC'20, report
  10-20 minute keep-alive defaults in production FaaS; the default here is 10 minutes).

A load that finds no room on the GPU because the models there are in use waits for them;
with ``hand_back`` or ``migrate`` (off by default) the worker moves requests instead once
waiting costs more than moving (`_unblock_plan`): the load's own requests go back to be placed
elsewhere, or the running requests in its way migrate, each ending here with the tokens it
produced (`Finished.generated_tokens`) while its client places the rest elsewhere.

Learned retention (`sllm.core.keepalive`, off by default): ``keep_alive_policy="histogram"``
gives each model the hybrid-histogram keep-alive window learned from its idle times here,
``eviction="expected-cost"`` makes room on the GPU and in host memory by giving up the
model whose reload is least likely to be paid soon instead of the least recently used one,
and ``prefetch`` unloads a model whose next arrival is predicted late and loads it back just
before (the pre-warm window), when the GPU has room and the load channel is free.

Not handled yet: several GPUs per worker, tensor parallelism, KV-cache memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice

from sllm.core.cost import CostModel, ModelInfo
from sllm.core.keepalive import PREWARM_MIN_S, Retention
from sllm.core.tiers import DISK, GPU, HOST, REMOTE, Tier
from sllm.records import record
from sllm.wire.messages import (
    DISK_BANDWIDTH_MAX_BPS,
    LOADS_REPORTED_MAX,
    REPORT_MAX_MODELS,
    SECONDS_MAX,
    InferenceRequest,
    InferenceResult,
    LoadEnd,
    WorkerReport,
)

GB = 10**9


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerResources:
    """Capacities of one worker. Defaults: one H200 (141 GB) on a typical inference host."""

    gpu_bytes: int = 141 * GB
    host_bytes: int = 512 * GB
    disk_bytes: int = 2000 * GB
    slots: int = 8
    queue_capacity: int = 64
    keep_alive_s: float = 600.0
    gpus: int = 1  # a model needing more (tensor parallelism) is refused
    keep_alive_policy: str = "fixed"  # or "histogram" (`sllm.core.keepalive`)
    eviction: str = "lru"  # or "expected-cost"
    prefetch: bool = False  # pre-warm by the learned window (needs "histogram")
    # Requests waiting for a load that found no room (the GPU held by models still in
    # use) go back to be placed elsewhere once they have waited as long as the load
    # itself takes (`WorkerState.tick`). Off by default: it helps placement by locality
    # from stale views, and costs the load-only policies failures (docs/simulator.md).
    hand_back: bool = False
    # A load that finds no room empties the GPU of the models in its way once its waiting
    # requests have lost as much time as moving theirs costs (`WorkerState._unblock_plan`):
    # their running requests migrate (each ends here with what it produced, and its
    # client places the rest elsewhere, where the prefix is computed again), their
    # waiting ones are handed back. Only requests whose engine can continue elsewhere
    # move (`WorkerState.submit`'s `movable`). With hand-back too, the cheaper way out is
    # taken. Off by default (docs/simulator.md).
    migrate: bool = False


# The reason of a request a worker handed back: its client places it again elsewhere.
HANDED_BACK = "handed_back"
# The reason of a running request a worker moved off to make room for a load: its client
# places the rest of it (`Finished.generated_tokens` are done) elsewhere.
MIGRATED = "migrated"


def prestaged(
    catalog: Mapping[str, ModelInfo], resources: WorkerResources, tier: Tier | None
) -> dict[str, Tier]:
    """Checkpoints a worker finds already in `tier` at start (None: none at all).

    Models are taken in catalog order while they fit: a model store pre-populated on local
    disk (or in host memory) the way a ServerlessLLM deployment keeps checkpoints on the
    worker's SSD. Host-memory copies are on disk too.
    """
    if tier is None:
        return {}
    capacity = resources.host_bytes if tier is Tier.HOST else resources.disk_bytes
    if tier is Tier.HOST:
        capacity = min(capacity, resources.disk_bytes)
    placed: dict[str, Tier] = {}
    used = 0
    for name, model in catalog.items():
        if used + model.size_bytes <= capacity:
            placed[name] = tier
            used += model.size_bytes
    return placed


# -- actions for the engine -------------------------------------------------------------


@record
class StartLoad:
    model: str
    source: Tier


@record
class StartRequest:
    request_id: str
    model: str
    prompt_tokens: int
    output_tokens: int
    batch_size: int  # requests of this model running on this worker, this one included


@record
class CancelRequest:
    request_id: str


@record
class Evict:
    """A model leaves `source`; `destination` is REMOTE when no local copy is kept."""

    model: str
    source: Tier
    destination: Tier


@record
class Finished:
    """A request ended, successfully or not; timings are seconds since it arrived."""

    request_id: str
    ok: bool
    reason: str
    cold_start: bool
    queue_s: float
    ttft_s: float
    e2e_s: float
    generated_tokens: int = 0  # output tokens produced here (a migrated request's)


Action = StartLoad | StartRequest | CancelRequest | Evict | Finished


def result_message(worker_id: str, finished: Finished) -> InferenceResult:
    """The wire answer to the client that sent the request."""
    return InferenceResult(
        request_id=finished.request_id,
        worker_id=worker_id,
        ok=finished.ok,
        reason=finished.reason,
        cold_start=finished.cold_start,
        queue_s=finished.queue_s,
        ttft_s=finished.ttft_s,
        e2e_s=finished.e2e_s,
        generated_tokens=finished.generated_tokens,
    )


@dataclass(slots=True)
class _Request:
    spec: InferenceRequest
    arrived: float
    cold_start: bool
    movable: bool = True  # its engine can continue it elsewhere (see `submit`)
    started: float = -1.0
    first_token: float = -1.0
    batch_size: int = 0  # its model's running requests when it started, itself included


@dataclass(slots=True)
class _GpuModel:
    size_bytes: int
    last_used: float
    running: int = 0
    queued: int = 0
    prefetched: bool = False  # loaded ahead of demand and not used since


@dataclass(slots=True)
class _Load:
    model: str
    source: Tier
    started: float
    estimated_s: float


class WorkerState:
    """One worker's queue, slots and tiers; the caller supplies time and carries out actions."""

    def __init__(
        self,
        worker_id: str,
        resources: WorkerResources,
        catalog: Mapping[str, ModelInfo],
        cost: CostModel,
        preloaded: Mapping[str, Tier] | None = None,
        now: float = 0.0,
        keeps_host_copy: Callable[[str], bool] = lambda model: True,
    ) -> None:
        """`keeps_host_copy(model)`: whether `model`'s engine keeps its weights in host
        memory once loaded or evicted from the GPU; where not, the host tier never holds
        it, so reports never claim a copy that is not there."""
        self.worker_id = worker_id
        self.keeps_host_copy = keeps_host_copy
        self.resources = resources
        self.catalog = catalog
        self.cost = cost
        self.ready = True
        # Waiting requests by id, in arrival order (FIFO): a duplicate is found, and a
        # request taken out of the middle, in O(1).
        self._queue: dict[str, _Request] = {}
        self._running: dict[str, _Request] = {}
        self._gpu: OrderedDict[str, _GpuModel] = OrderedDict()  # least recently used first
        self._host: OrderedDict[str, int] = OrderedDict()
        self._disk: OrderedDict[str, int] = OrderedDict()
        self._load: _Load | None = None
        # What a report says of the tiers: the models it names, how many more are held, and
        # the GPU bytes in use. Every change to the tiers (or to their LRU order, or to the
        # load under way) resets it to None, so reports rebuild it only after a change.
        self._summary: tuple[dict[str, int], int, int] | None = None
        # The host-memory and disk part of it, which changes far less often (only when a
        # checkpoint enters or leaves those tiers): the first REPORT_MAX_MODELS models,
        # most recently used first, and every model either tier holds.
        self._lower_tiers: tuple[list[tuple[str, int]], set[str]] | None = None
        self._load_queue: deque[str] = deque()
        # When the load at the head of the queue first found no room on the GPU: the
        # models that hold it have requests waiting or running. None: not blocked.
        self._blocked_since: float | None = None
        self.retention = Retention(
            keep_alive=resources.keep_alive_policy,
            eviction=resources.eviction,
            fixed_keep_alive_s=resources.keep_alive_s,
        )
        # Whether any decision depends on the requests seen: with the defaults, the worker
        # keeps its fixed keep-alive and LRU paths and records nothing.
        self._learning = self.retention.learns or resources.prefetch
        self._prewarm: dict[str, float] = {}  # model -> when to load it back (prefetch)
        self._prefetching: set[str] = set()  # loads started ahead of demand
        self._slots_divisor = max(1, resources.slots)  # for the utilization
        self._seq = 0
        self.accepted_total = 0
        self.completed_total = 0
        self.rejected_total = 0
        self.handed_back_total = 0
        self.migrated_total = 0
        for model, tier in (preloaded or {}).items():
            self._place_preloaded(model, tier, now)

    # -- queries ---------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def gpu_used(self) -> int:
        used = sum(model.size_bytes for model in self._gpu.values())
        if self._load is not None:
            used += self.catalog[self._load.model].size_bytes
        return used

    @property
    def host_used(self) -> int:
        return sum(self._host.values())

    @property
    def disk_used(self) -> int:
        return sum(self._disk.values())

    def tier_of(self, model: str) -> Tier:
        if model in self._gpu:
            return GPU
        if model in self._host:
            return HOST
        if model in self._disk:
            return DISK
        return REMOTE

    def load_backlog_s(self, now: float) -> float:
        """Estimated seconds until the load channel is free: current load plus queued ones."""
        backlog = 0.0
        if self._load is not None:
            backlog += max(0.0, self._load.started + self._load.estimated_s - now)
        for model in self._load_queue:
            spec = self.catalog[model]
            size = spec.size_bytes
            backlog += self.cost.load_time(size, self._source(model, size))
        return backlog

    def load_ends(self, now: float) -> Iterator[tuple[str, float]]:
        """Each load under way or queued, in order, and the seconds until it should end.

        Loads run one at a time, each after the ones before it. A load waiting for room on
        the GPU (the models there are in use) has no known end: it counts as waiting as
        long again as it has so far. `load_backlog_s` leaves that wait out: it ranks a cold
        start here, and the load in the way may be moved (migration, hand-back).
        """
        ends = 0.0
        load = self._load
        if load is not None:
            ends = max(0.0, load.started + load.estimated_s - now)
            yield load.model, ends
        for position, model in enumerate(self._load_queue):
            if position == 0 and self._blocked_since is not None:
                ends += now - self._blocked_since
            size = self.catalog[model].size_bytes
            ends += self.cost.load_time(size, self._source(model, size))
            yield model, ends

    def _source(self, model: str, size: int) -> Tier:
        """Where to load `model` from: the fastest tier holding it, counting the remote
        store, which holds every checkpoint and beats a slow local disk (a SATA SSD's
        0.5 GB/s against a 10 Gbit/s link)."""
        tier = self.tier_of(model)
        if tier is DISK and self.cost.load_time(size, REMOTE) < self.cost.load_time(size, DISK):
            return REMOTE
        return tier

    def next_deadline(self) -> float | None:
        """When `tick` must next run: the earliest keep-alive expiry of an idle model.

        Every idle model is looked at (a GPU holds a few): a model may have a keep-alive
        of its own, and with learned retention every model has a window of its own. Runs
        after every request event. A pending pre-warm is a deadline too, and so is moving
        requests off a blocked load (`_unblock_due`).
        """
        deadline = self._unblock_due()
        if not self._learning:
            for name, model in self._gpu.items():
                if model.running == 0 and model.queued == 0:
                    due = model.last_used + self._keep_alive_of(name)
                    deadline = due if deadline is None else min(deadline, due)
            return deadline
        for name, model in self._gpu.items():
            if model.running == 0 and model.queued == 0:
                due = model.last_used + self._warm_for(name, model)
                if deadline is None or due < deadline:
                    deadline = due
        for due in self._prewarm.values():
            if deadline is None or due < deadline:
                deadline = due
        return deadline

    def _keep_alive_of(self, name: str) -> float:
        """How long idle `name` stays on the GPU under the fixed policy: its own
        keep-alive where it was deployed with one, else the worker's."""
        own = self.catalog[name].keep_alive_s
        return self.resources.keep_alive_s if own is None else own

    def _warm_for(self, name: str, model: _GpuModel) -> float:
        """How long idle `model` stays on the GPU after its last use."""
        window = self.retention.window(name)
        if model.prefetched:
            return window.keep_alive_s  # loaded at the end of its pre-warm window
        if self._prewarms(window.learned, window.prewarm_s):
            return 0.0  # not expected back soon: free the memory now, pre-warm later
        return window.ends_s

    def _prewarms(self, learned: bool, prewarm_s: float) -> bool:
        return self.resources.prefetch and learned and prewarm_s >= PREWARM_MIN_S

    def report(
        self, now: float, host: str, port: int, http_port: int = 0, timestamp: float | None = None
    ) -> WorkerReport:
        """The soft state the scheduler sees, summarized to fit one datagram.

        Models being loaded count as GPU-resident: requests for them should come here and
        wait for the load already under way, not start another elsewhere; `loads` says how
        long that wait is (`load_ends`). `timestamp` is
        the sender's wall clock (it orders a restarted worker's reports); default `now`.
        """
        self._seq += 1
        summary = self._summary
        if summary is None:
            summary = self._summary = self._summarize_tiers()
        kept, omitted, gpu_used = summary
        resources = self.resources
        running = len(self._running)
        slots = self._slots_divisor
        loading = self._load is not None or self._load_queue
        if timestamp is None:
            timestamp = now
        # By name: seventeen fields, nine of them counts, would trade places silently by
        # position (docs/benchmarks.md has what naming them costs the simulator).
        return WorkerReport(
            node_id=self.worker_id,
            host=host,
            port=port,
            http_port=http_port,
            models=kept,
            models_omitted=omitted,
            queue_depth=len(self._queue),
            queue_capacity=resources.queue_capacity,
            running=running,
            slots=resources.slots,
            gpu_utilization=running / slots if running < slots else 1.0,  # at most 1
            memory_used=gpu_used,
            memory_total=resources.gpu_bytes,
            load_backlog_s=min(self.load_backlog_s(now), SECONDS_MAX) if loading else 0.0,
            ready=self.ready,
            seq=self._seq,
            timestamp=timestamp if timestamp > 0.0 else 0.0,
            gpus=resources.gpus,
            disk_bandwidth_Bps=min(self.cost.disk_bandwidth_Bps, DISK_BANDWIDTH_MAX_BPS),
            loads=self._reported_loads(now) if loading else (),
        )

    def _reported_loads(self, now: float) -> tuple[LoadEnd, ...]:
        """The next LOADS_REPORTED_MAX loads' ends, to a tenth of a second (a shorter
        datagram; the estimates they feed are coarser)."""
        return tuple(
            LoadEnd(model=model, ready_in_s=round(min(ends, SECONDS_MAX), 1))
            for model, ends in islice(self.load_ends(now), LOADS_REPORTED_MAX)
        )

    def _summarize_tiers(self) -> tuple[dict[str, int], int, int]:
        """The fastest-tier models, most recently used first, how many held models that
        leaves out, and the GPU bytes in use."""
        kept: dict[str, int] = {}
        gpu_tier = int(GPU)
        for model in reversed(self._gpu):  # most recently used first
            if len(kept) == REPORT_MAX_MODELS:
                break
            kept[model] = gpu_tier
        arriving = [self._load.model] if self._load is not None else []
        arriving.extend(self._load_queue)
        for model in arriving:
            if len(kept) == REPORT_MAX_MODELS:
                break
            kept.setdefault(model, gpu_tier)
        lower = self._lower_tiers
        if lower is None:
            lower = self._lower_tiers = self._summarize_lower_tiers()
        first_lower, lower_held = lower
        for model, tier in first_lower:
            if len(kept) == REPORT_MAX_MODELS:
                break
            kept.setdefault(model, tier)
        held = (
            len(lower_held)
            + len(self._gpu.keys() - lower_held)
            + len(set(arriving) - lower_held - self._gpu.keys())
        )
        return kept, held - len(kept), self.gpu_used

    def _summarize_lower_tiers(self) -> tuple[list[tuple[str, int]], set[str]]:
        first: dict[str, int] = {}
        for models, tier in ((self._host, int(HOST)), (self._disk, int(DISK))):
            for model in reversed(models):  # most recently used first
                if len(first) == REPORT_MAX_MODELS:
                    break
                first.setdefault(model, tier)
        return list(first.items()), self._host.keys() | self._disk.keys()

    # -- events in -------------------------------------------------------------------

    def submit(self, request: InferenceRequest, now: float, movable: bool = True) -> list[Action]:
        """A request arrives. It is queued, or finished at once with a reason.

        A duplicate of a request already queued or running (a datagram the network
        delivered twice) is dropped: the first copy answers. `movable`: its client can
        place the rest of it elsewhere once it runs (a datagram request, whose client
        holds it in `sllm.hosts.client`); a streamed HTTP answer cannot, so it never
        migrates.
        """
        request_id = request.request_id
        if request_id in self._running or request_id in self._queue:
            return []
        spec = self.catalog.get(request.model)
        reason = ""
        if not self.ready:
            reason = "not_ready"
        elif spec is None:
            reason = "unknown_model"
        elif spec.size_bytes > self.resources.gpu_bytes:
            reason = "model_too_large"
        elif spec.gpus > self.resources.gpus:
            reason = "not_enough_gpus"
        elif len(self._queue) >= self.resources.queue_capacity:
            reason = "queue_full"
        if reason:
            self.rejected_total += 1
            return [
                Finished(
                    request_id=request.request_id,
                    ok=False,
                    reason=reason,
                    cold_start=False,
                    queue_s=0.0,
                    ttft_s=0.0,
                    e2e_s=0.0,
                )
            ]
        self.accepted_total += 1
        model = request.model
        gpu_model = self._gpu.get(model)
        if self._learning:
            busy = (
                gpu_model.running + gpu_model.queued > 0
                if gpu_model is not None
                else self._queued_for(model) > 0
            )
            self.retention.arrived(model, now, idle=not busy)
            self._prewarm.pop(model, None)  # demand came first
        self._queue[request_id] = _Request(request, now, gpu_model is None, movable)
        if gpu_model is not None:
            gpu_model.queued += 1
        elif (self._load is None or self._load.model != model) and model not in self._load_queue:
            # The only way a waiting request's model comes to need a load: models with
            # requests waiting never leave the GPU, and a failed load fails its waiters.
            self._load_queue.append(model)
            self._summary = None
        return self._dispatch(now)

    def retire(self, model: str) -> list[Action] | None:
        """Take `model` out of every tier (it was deleted from the registry): the evictions
        to carry out, or None while a request for it waits or runs or it loads (ask again
        later). Removing it from the catalog is the caller's, once the evictions are done."""
        gpu_model = self._gpu.get(model)
        loading = self._load is not None and self._load.model == model
        busy = gpu_model is not None and (gpu_model.running or gpu_model.queued)
        if busy or loading or model in self._load_queue:
            return None
        actions: list[Action] = []
        for tier, held in ((Tier.GPU, self._gpu), (Tier.HOST, self._host), (Tier.DISK, self._disk)):
            if held.pop(model, None) is not None:
                actions.append(Evict(model=model, source=tier, destination=Tier.REMOTE))
        if actions:
            self._summary = None
            self._lower_tiers = None
        return actions

    def load_done(self, model: str, now: float) -> list[Action]:
        if self._load is None or self._load.model != model:
            return []
        size = self.catalog[model].size_bytes
        self._load = None
        queued = self._queued_for(model)
        prefetched = model in self._prefetching and queued == 0
        self._prefetching.discard(model)
        self._gpu[model] = _GpuModel(size, last_used=now, queued=queued, prefetched=prefetched)
        self._summary = None
        actions = self._cache_in_host(model, size, now)
        actions.extend(self._cache(self._disk, model, size, self.resources.disk_bytes, now))
        return actions + self._dispatch(now)

    def load_failed(self, model: str, now: float, reason: str) -> list[Action]:
        """The engine could not load `model`: every request waiting for it fails."""
        if self._load is None or self._load.model != model:
            return []
        self._load = None
        self._summary = None
        self._prefetching.discard(model)
        actions: list[Action] = []
        for waiting in [r for r in self._queue.values() if r.spec.model == model]:
            del self._queue[waiting.spec.request_id]
            actions.append(self._finish(waiting, now, ok=False, reason=f"load_failed: {reason}"))
        return actions + self._dispatch(now)

    def host_copy_measured(self, model: str, size_bytes: int, now: float) -> list[Action]:
        """`model`'s engine measured its host copy at `size_bytes` (a checkpoint loaded as
        float32 from bfloat16 files takes twice the files' bytes): count those against the
        host memory instead of the catalog's size, giving up the copies that no longer fit,
        this one first if it alone is too large. Only a copy in the host tier is counted
        again; one that went back to the GPU meanwhile keeps its count."""
        if model not in self._host or model in self._gpu:
            return []
        if self._load is not None and self._load.model == model:
            return []
        if size_bytes > self.resources.host_bytes:
            del self._host[model]
            self._summary = None
            self._lower_tiers = None
            below = self._next_tier_holding(model, HOST)
            return [Evict(model=model, source=Tier.HOST, destination=below)]
        return self._cache(self._host, model, size_bytes, self.resources.host_bytes, now)

    def first_token(self, request_id: str, now: float) -> None:
        request = self._running.get(request_id)
        if request is not None and request.first_token < 0:
            request.first_token = now

    def request_done(
        self, request_id: str, now: float, ok: bool = True, reason: str = ""
    ) -> list[Action]:
        request = self._running.pop(request_id, None)
        if request is None:
            return []
        gpu_model = self._gpu.get(request.spec.model)
        if gpu_model is not None:
            gpu_model.running -= 1
            self._used(request.spec.model, gpu_model, now)
            if self._learning and gpu_model.running == 0 and gpu_model.queued == 0:
                gpu_model.prefetched = False
                self.retention.went_idle(request.spec.model, now)
        if ok:
            self.completed_total += 1
        return [self._finish(request, now, ok, reason), *self._dispatch(now)]

    def cancel(self, request_id: str, now: float) -> list[Action]:
        """The client went away: drop the request, stopping it if it runs."""
        waiting = self._queue.pop(request_id, None)
        if waiting is not None:
            gpu_model = self._gpu.get(waiting.spec.model)
            if gpu_model is not None:
                gpu_model.queued -= 1
            finished = self._finish(waiting, now, ok=False, reason="cancelled")
            return [finished, *self._dispatch(now)]
        if request_id in self._running:
            actions = self.request_done(request_id, now, ok=False, reason="cancelled")
            return [CancelRequest(request_id=request_id), *actions]
        return []

    def tick(self, now: float) -> list[Action]:
        """Expire idle models past keep-alive: they leave the GPU and stay in host memory.
        With prefetch, also load back the models whose pre-warm window has ended. With
        hand-back or migration, move requests off a load blocked for longer than moving
        them costs (`_unblock`)."""
        actions = self._unblock(now)
        if not self._learning:
            for name, model in list(self._gpu.items()):
                idle = model.running == 0 and model.queued == 0
                if idle and now >= model.last_used + self._keep_alive_of(name):
                    actions.extend(self._demote(name, now))
            return actions
        for name, model in list(self._gpu.items()):
            if model.running or model.queued or now < model.last_used + self._warm_for(name, model):
                continue
            actions.extend(self._demote(name, now))
            window = self.retention.window(name)
            if not model.prefetched and self._prewarms(window.learned, window.prewarm_s):
                due = self.retention.idle_since(name) + window.prewarm_s
                if due > now:
                    self._prewarm[name] = due
        if self._prewarm:
            actions.extend(self._prefetch_due(now))
        return actions

    def _prefetch_due(self, now: float) -> list[Action]:
        """Start the pre-warm loads that are due, where the GPU has room and the load
        channel is free: a prefetch never delays a load that a request waits for."""
        for name, due in list(self._prewarm.items()):
            if due > now:
                continue
            del self._prewarm[name]
            if name in self._gpu or self._load is not None or self._load_queue:
                continue
            if self.gpu_used + self.catalog[name].size_bytes > self.resources.gpu_bytes:
                continue
            self._load_queue.append(name)
            self._prefetching.add(name)
            self._summary = None
        return self._dispatch(now)

    # -- internals -------------------------------------------------------------------

    def _used(self, model: str, gpu_model: _GpuModel, now: float) -> None:
        """`model` was used now: it becomes the most recently used on the GPU."""
        gpu_model.last_used = now
        # Most uses are of the model used last, whose place stands; the summary a report
        # gives of the tiers depends on that order and is rebuilt only when it changes.
        if next(reversed(self._gpu)) != model:
            self._gpu.move_to_end(model)
            self._summary = None

    def _queued_for(self, model: str) -> int:
        return sum(1 for r in self._queue.values() if r.spec.model == model)

    def _dispatch(self, now: float) -> list[Action]:
        """Start what can start and the next load (`submit` queues the loads requests need)."""
        if not self._queue and not self._load_queue:
            return []  # the common case once a request ends: nothing waits
        actions: list[Action] = []
        slots = self.resources.slots
        running = self._running
        if len(running) < slots:
            for request in list(self._queue.values()):
                spec = request.spec
                gpu_model = self._gpu.get(spec.model)
                if gpu_model is None:
                    continue  # its model's load is queued (see `submit`)
                del self._queue[spec.request_id]
                gpu_model.queued -= 1
                gpu_model.running += 1
                self._used(spec.model, gpu_model, now)
                request.started = now
                request.batch_size = gpu_model.running
                running[spec.request_id] = request
                actions.append(
                    StartRequest(
                        request_id=spec.request_id,
                        model=spec.model,
                        prompt_tokens=spec.prompt_tokens,
                        output_tokens=spec.output_tokens,
                        batch_size=gpu_model.running,
                    )
                )
                if len(running) >= slots:
                    break
        if self._load is None and self._load_queue:
            actions.extend(self._start_next_load(now))
        return actions

    def _start_next_load(self, now: float) -> list[Action]:
        model = self._load_queue[0]
        size = self.catalog[model].size_bytes
        actions: list[Action] = []
        free = self.resources.gpu_bytes - self.gpu_used
        for name in self._eviction_order(now):
            if free >= size:
                break
            resident = self._gpu[name]
            actions.extend(self._demote(name, now))
            free += resident.size_bytes
        if free < size:
            if self._blocked_since is None:
                self._blocked_since = now
            return actions  # wait until running requests release a model
        self._blocked_since = None
        self._load_queue.popleft()
        self._summary = None
        source = self._source(model, size)
        self._load = _Load(model, source, now, self.cost.load_time(size, source))
        actions.append(StartLoad(model=model, source=source))
        return actions

    def _models_in_the_way(self, needed: int) -> list[str]:
        """The busy GPU models to empty so that `needed` more bytes are free: the cheapest
        to move first (`_moving_cost_s`), and only models whose running requests can all
        move. None at all when they cannot free enough."""
        busy = [name for name, resident in self._gpu.items() if resident.running + resident.queued]
        busy.sort(key=self._moving_cost_s)  # among equals, the least recently used first
        movable_running: dict[str, bool] = {}
        for request in self._running.values():
            model = request.spec.model
            movable_running[model] = movable_running.get(model, True) and request.movable
        chosen: list[str] = []
        for name in busy:
            if needed <= 0:
                break
            if movable_running.get(name, True):
                chosen.append(name)
                needed -= self._gpu[name].size_bytes
        return chosen if needed <= 0 else []

    def _move_requests_of(self, model: str, now: float) -> list[Action]:
        """Empty `model` on the GPU: hand its waiting requests back, and migrate its
        running ones, each ending here with the tokens it produced (its client places the
        rest elsewhere)."""
        actions = self._hand_back_waiting(model, now)
        timing = self.cost.timing(self.catalog[model])
        for request_id, request in list(self._running.items()):
            if request.spec.model != model:
                continue
            del self._running[request_id]
            spec = request.spec
            produced = timing.tokens_by(
                now - request.started, spec.prompt_tokens, spec.output_tokens, request.batch_size
            )
            produced = min(produced, spec.output_tokens - 1)  # its last token ends it here
            if produced and request.first_token < 0:
                request.first_token = request.started + timing.prefill_time(spec.prompt_tokens)
            actions.append(CancelRequest(request_id=request_id))
            actions.append(self._finish(request, now, False, MIGRATED, produced))
            self.migrated_total += 1
        resident = self._gpu[model]
        resident.running = resident.queued = 0
        return actions

    def _unblock_due(self) -> float | None:
        """When a blocked load is unblocked by moving requests (`_unblock_plan`); None
        when no load is blocked, moving is off, or nothing can move."""
        return self._unblock_plan()[0]

    def _unblock_plan(self) -> tuple[float | None, list[str]]:
        """When to unblock the blocked load, and the models whose requests to migrate
        then (empty: hand the load's own requests back instead).

        What each way out costs, in request-seconds of delay:

        - hand-back (`hand_back`): each waiting request cold-starts elsewhere, taking
          about as long as the load here would;
        - migration (`migrate`): each request in the way (running or waiting) goes
          elsewhere, where its model may have to load from the store.

        The waiting requests pay their own delay meanwhile: once it adds up to the cheaper
        of the two, moving beats waiting on (the models in the way may stay busy for as
        long as their requests keep coming). With hand-back alone, that is once they have
        waited as long as their load takes.
        """
        since = self._blocked_since
        resources = self.resources
        if since is None or not (resources.hand_back or resources.migrate):
            return None, []
        model = self._load_queue[0]
        size = self.catalog[model].size_bytes
        waiting = max(1, self._queued_for(model))
        hand_back_s = math.inf
        if resources.hand_back:
            hand_back_s = waiting * self.cost.load_time(size, self._source(model, size))
        in_the_way: list[str] = []
        migrate_s = math.inf
        if resources.migrate:
            in_the_way = self._models_in_the_way(size - (resources.gpu_bytes - self.gpu_used))
            if in_the_way:
                migrate_s = sum(map(self._moving_cost_s, in_the_way))
        cheaper = min(hand_back_s, migrate_s)
        if cheaper == math.inf:
            return None, []  # nothing can move (requests that cannot continue elsewhere)
        return since + cheaper / waiting, in_the_way if migrate_s < hand_back_s else []

    def _moving_cost_s(self, name: str) -> float:
        """Request-seconds of delay to move GPU model `name`'s requests elsewhere: each
        may find it cold there, loading from the store (its prefix computed again is a
        prefill, small beside a load)."""
        resident = self._gpu[name]
        moved = resident.running + resident.queued
        return moved * self.cost.load_time(resident.size_bytes, REMOTE)

    def _unblock(self, now: float) -> list[Action]:
        """Once due, take the cheaper way out (`_unblock_plan`): migrate the requests of
        the models in the blocked load's way and start the load, or give the load up and
        hand its waiting requests back."""
        due, in_the_way = self._unblock_plan()
        if due is None or now < due:
            return []
        self._blocked_since = None
        if in_the_way:
            actions: list[Action] = []
            for name in in_the_way:
                actions.extend(self._move_requests_of(name, now))
            return actions + self._dispatch(now)  # the load starts: they are idle now
        return self._hand_back(self._load_queue[0], now)

    def _hand_back(self, model: str, now: float) -> list[Action]:
        """Give up the blocked load of `model` and hand its waiting requests back (each
        ends with `HANDED_BACK`, and its client places it again: in the live system the
        front door gets a 429 and retries elsewhere). Its report stops naming the model
        as arriving, so it is not sent more of them."""
        self._load_queue.popleft()
        self._summary = None
        self._prefetching.discard(model)
        return self._hand_back_waiting(model, now) + self._dispatch(now)

    def _hand_back_waiting(self, model: str, now: float) -> list[Action]:
        """End every waiting request of `model` with `HANDED_BACK`: its client places it
        again elsewhere."""
        actions: list[Action] = []
        for request_id, request in list(self._queue.items()):
            if request.spec.model == model:
                del self._queue[request_id]
                actions.append(self._finish(request, now, False, HANDED_BACK))
        self.handed_back_total += len(actions)
        return actions

    def _eviction_order(self, now: float) -> list[str]:
        """The idle GPU models, in the order to give them up for room."""
        idle = [
            name for name, resident in self._gpu.items() if not resident.running + resident.queued
        ]  # least recently used first
        if not self._learning or self.retention.eviction == "lru" or len(idle) < 2:
            return idle
        host_bytes = self.resources.host_bytes
        candidates = []
        for name in idle:
            size = self._gpu[name].size_bytes
            lands = HOST if size <= host_bytes else DISK if name in self._disk else REMOTE
            candidates.append((name, self.cost.load_time(size, lands)))
        return self.retention.eviction_order(candidates, now)

    def _demote(self, model: str, now: float) -> list[Action]:
        resident = self._gpu.pop(model)
        self._summary = None
        actions = self._cache_in_host(model, resident.size_bytes, now)
        if model in self._host:
            destination = Tier.HOST
        else:
            destination = Tier.DISK if model in self._disk else Tier.REMOTE
        return [Evict(model=model, source=Tier.GPU, destination=destination), *actions]

    def _cache_in_host(self, model: str, size: int, now: float) -> list[Action]:
        """Count `model`'s host copy, where its engine keeps one."""
        if not self.keeps_host_copy(model):
            return []
        return self._cache(self._host, model, size, self.resources.host_bytes, now)

    def _cache(
        self, cache: OrderedDict[str, int], model: str, size: int, capacity: int, now: float
    ) -> list[Action]:
        """Put `model` in a cache tier, evicting to make room: the least recently used, or
        in host memory under expected-cost eviction the cheapest to lose."""
        if size > capacity:
            return []
        tier = Tier.HOST if cache is self._host else Tier.DISK
        actions: list[Action] = []
        cache.pop(model, None)
        used = sum(cache.values())
        if used + size <= capacity:
            victims: list[str] = []
        elif tier is Tier.HOST and self._learning and self.retention.eviction != "lru":
            victims = self.retention.eviction_order(
                (
                    (name, self.cost.load_time(held, DISK if name in self._disk else REMOTE))
                    for name, held in cache.items()
                ),
                now,
            )
        else:
            victims = list(cache)  # least recently used first
        for victim in victims:
            if used + size <= capacity:
                break
            victim_size = cache.pop(victim)
            used -= victim_size
            actions.append(
                Evict(model=victim, source=tier, destination=self._next_tier_holding(victim, tier))
            )
        cache[model] = size
        self._summary = None
        self._lower_tiers = None
        return actions

    def _next_tier_holding(self, model: str, below: Tier) -> Tier:
        if below is Tier.HOST and model in self._disk:
            return Tier.DISK
        return Tier.REMOTE

    def _finish(
        self, request: _Request, now: float, ok: bool, reason: str, generated_tokens: int = 0
    ) -> Finished:
        start = request.started if request.started >= 0 else now
        first = request.first_token if request.first_token >= 0 else now
        arrived = request.arrived
        return Finished(
            request_id=request.spec.request_id,
            ok=ok,
            reason=reason,
            cold_start=request.cold_start,
            queue_s=start - arrived,
            ttft_s=first - arrived,
            e2e_s=now - arrived,
            generated_tokens=generated_tokens,
        )

    def _place_preloaded(self, model: str, tier: Tier, now: float) -> None:
        """A checkpoint found at start; one on the GPU counts as used at `now`."""
        size = self.catalog[model].size_bytes
        if tier <= Tier.DISK:
            self._cache(self._disk, model, size, self.resources.disk_bytes, now)
        if tier <= Tier.HOST:
            self._cache_in_host(model, size, now)
        if tier is Tier.GPU and self.gpu_used + size <= self.resources.gpu_bytes:
            self._gpu[model] = _GpuModel(size, last_used=now)
            self._summary = None

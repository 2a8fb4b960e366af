"""Placement policies: every way this project can pick a worker, and nowhere else.

Each policy answers one question, "which live, accepting worker should run this request?",
from a `ClusterView`, and returns a `Choice` (or None when no worker can take it). The
coordinator and every decentralized node call the same policies over their own view.

Theory of operation:

- ``seed``: the deployment guide's original score, kept as the baseline every improvement
  is measured against: ``1000 * loaded - 10 * queue_depth - 100 * gpu_utilization``. It
  scans every worker, by design: that is what the guide did.
- ``least-loaded``: the accepting worker with the fewest queued + running + pending
  requests, from the view's bucket index: O(1) in the common case.
- ``round-robin`` and ``random``: the classic baselines; they ignore where models are.
- ``power-of-two``: two uniform samples, keep the less loaded (Mitzenmacher, "The Power of
  Two Choices in Randomized Load Balancing", 2001; the probe count Sparrow builds on,
  Ousterhout et al., SOSP'13).
- ``startup-aware``: after ServerlessLLM (Fu et al., OSDI'24). For each candidate it
  estimates time to first token = queue wait + load time from the best tier holding the
  checkpoint (plus the loads already queued there) + prefill, and takes the smallest. So it
  weighs waiting for a warm worker against cold-starting on an idle one. Candidates are the
  few least-loaded holders of the model on the GPU and in host memory, then the few
  least-loaded workers overall (where disk copies are found), so a decision costs
  O(CANDIDATES_PER_TIER) estimates, independent of cluster size. The sources are visited
  fastest tier first and a source is skipped when even a zero wait could not beat the best
  estimate so far, so a warm, idle holder ends the search after the GPU holders. Where
  every worker has the same slots, only the least-loaded GPU holder is estimated: the
  others can only wait longer. A typical warm decision makes one estimate. A worker whose
  GPU is smaller than the checkpoint is estimated at infinity; when every candidate is,
  the decision scans the view for one that fits (a mixed fleet's large models). A load
  from a worker's disk is estimated at the disk bandwidth the worker reports. A model on
  its way to a worker's GPU ranks as if it were there (its requests follow that load);
  the chosen estimate, which admission judges, adds the wait for it. A request beyond
  that load's first batch starts a copy instead on one of the least-loaded workers whose
  GPU has room for it without evicting a model in use (free memory, or a worker with
  nothing to serve), when that cold start is sooner than the whole wait, counting the
  requests the model's arrival rate says will join while the copy loads
  (`StartupAware._copy_in_spare_room`).

Not handled yet: a decision never migrates (the ``migrate`` action ServerlessLLM adds);
a worker migrates running requests off itself when a load finds no room
(`sllm.core.worker`, ``WorkerResources.migrate``), and their clients place the rest here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from sllm.core.cost import CostModel, ModelInfo, ModelTiming
from sllm.core.tiers import DISK, GPU, HOST, REMOTE, Tier
from sllm.core.view import ClusterView, LoadIndex, WorkerEntry
from sllm.records import record
from sllm.wire.messages import ScheduleRequest, WorkerReport

# How many of the least-loaded workers startup-aware examines per source (GPU holders,
# host-memory holders, all workers). Four finds the best queue among equally warm holders
# without walking long buckets; a decision makes at most 3 * 4 estimates, whatever the
# cluster size.
CANDIDATES_PER_TIER = 4
# Random-choice policies retry this often to find an accepting worker before falling back
# to the least-loaded one.
RANDOM_TRIES = 4


# Why startup-aware chose a worker, by the tier the model was in there.
STARTUP_AWARE_REASONS = tuple(
    "warm" if tier is Tier.GPU else f"cold_start_from_{tier.name.lower()}" for tier in Tier
)


@record
class Choice:
    """A placement decision, before it is turned into a wire response."""

    worker: WorkerEntry
    tier: Tier  # where the model was on that worker: GPU means no load is needed
    estimated_wait_s: float
    reason: str


class PlacementPolicy(Protocol):
    name: str

    def choose(
        self, view: ClusterView, request: ScheduleRequest, model: ModelInfo
    ) -> Choice | None: ...


class RequestCost:
    """What one request costs anywhere: its service time and its load time from each tier.

    Computed once per decision, so each candidate costs a few additions.
    """

    __slots__ = ("e2e_s", "load_s", "model", "prefill_s", "size_bytes")

    def __init__(self, request: ScheduleRequest, timing: ModelTiming, size_bytes: int) -> None:
        self.model = request.model
        self.size_bytes = size_bytes
        self.prefill_s, self.e2e_s = timing.service_time(
            request.prompt_tokens, request.output_tokens
        )
        self.load_s = timing.load_s  # by tier

    def lower_bound(self, tier: Tier) -> float:
        """The best time to first token any worker holding the model in `tier` could offer."""
        return self.load_s[tier] + self.prefill_s  # GPU: load_s is 0


class Estimator:
    """The startup-aware time-to-first-token estimate, shared by every policy's reply."""

    def __init__(self, cost: CostModel) -> None:
        self.cost = cost
        self._timings: dict[str, ModelTiming] = {}  # per model; the cost model is frozen

    def request_cost(self, request: ScheduleRequest, model: ModelInfo) -> RequestCost:
        timing = self._timings.get(model.name)
        if timing is None:
            timing = self._timings[model.name] = self.cost.timing(model)
        return RequestCost(request, timing, model.size_bytes)

    def ttft(self, entry: WorkerEntry, cost: RequestCost) -> float:
        """Queue wait, then the load (from the fastest tier holding the model, after the
        loads queued there), then the prefill.

        The wait is the requests ahead spread over the slots. The view does not know the
        other requests' lengths, so each is assumed to take as long as this one would.
        Good enough to rank workers; not a promise. Every decision runs this a few times,
        so it reads the entry's fields directly rather than through its properties.
        A worker whose GPU is too small for the weights never serves them: infinite.
        """
        report = entry.report
        if cost.size_bytes > report.memory_total:
            return math.inf
        slots = report.slots if report.slots > 1 else 1
        ahead = requests_ahead(entry)
        wait = ahead / slots * cost.e2e_s if ahead > 0 else 0.0
        model = cost.model
        if model in entry.arriving:
            return wait + cost.prefill_s  # on its way to the GPU
        tier = report.models.get(model, REMOTE)
        if tier == GPU:
            return wait + cost.prefill_s
        backlog = report.load_backlog_s + entry.extra_backlog_s
        if tier == DISK and report.disk_bandwidth_Bps > 0.0:  # its disk, at its speed,
            disk = cost.size_bytes / report.disk_bandwidth_Bps  # unless the store is faster
            load = min(self.cost.engine_start_s + disk, cost.load_s[REMOTE])
        else:
            load = cost.load_s[tier]
        return wait + (backlog + load) + cost.prefill_s

    def wait_for_load(self, entry: WorkerEntry, model: str) -> float:
        """The seconds until `model`, which `entry` reports as on its way to the GPU, is
        there (the worker's `WorkerReport.loads`); 0 for a model it does not report
        loading.

        `ttft` leaves this wait out on purpose: a model on its way ranks as if it were
        there, so that its requests follow the load under way rather than start another
        elsewhere (ranking by the whole wait sent them off to copies that evicted each
        other: docs/simulator.md). The choice's estimate counts it, so that admission
        and Retry-After judge the wait the request will see.
        """
        for load in entry.report.loads:
            if load.model == model:
                return load.ready_in_s
        return 0.0

    def chosen(self, entry: WorkerEntry, tier: Tier, model: str, ttft: float) -> float:
        """The estimate a choice carries: `ttft`, plus the wait for the load of a model on
        its way to `entry`'s GPU (`wait_for_load`; most reports carry no loads)."""
        if tier is GPU and entry.report.loads:
            return ttft + self.wait_for_load(entry, model)
        return ttft


def load_time_on(report: WorkerReport, tier: Tier, size_bytes: int, cost: CostModel) -> float:
    """A load of `size_bytes` from `tier` on the worker of `report`: from its disk at the
    bandwidth it reports (a mixed fleet), from any other tier at the cost model's."""
    if tier is DISK and report.disk_bandwidth_Bps > 0.0:
        disk = cost.engine_start_s + size_bytes / report.disk_bandwidth_Bps
        return min(disk, cost.load_time(size_bytes, REMOTE))
    return cost.load_time(size_bytes, tier)


def sources(view: ClusterView, model: str) -> list[tuple[Tier, LoadIndex[WorkerEntry] | None]]:
    """Where startup-aware looks, fastest tier first, with the fastest tier a source can
    offer."""
    return [
        (GPU, view.holders(model, GPU)),
        (HOST, view.holders(model, HOST)),
        (DISK, view.by_load),  # disk copies and cold starts: any worker
    ]


def candidates(view: ClusterView, model: str) -> Iterator[WorkerEntry]:
    """The workers a startup-aware decision may examine before pruning: the few least
    loaded of each source, O(CANDIDATES_PER_TIER) whatever the cluster's size."""
    seen: set[str] = set()
    for _, index in sources(view, model):
        if index is None:
            continue
        for entry in index.first(CANDIDATES_PER_TIER):
            if entry.worker_id not in seen:
                seen.add(entry.worker_id)
                yield entry


def fastest_within(
    estimator: Estimator,
    entries: Iterable[WorkerEntry],
    request: ScheduleRequest,
    model: ModelInfo,
    limit_s: float,
) -> Choice | None:
    """Of `entries`, the one whose estimate (with the wait for a load under way there) is
    the smallest and at most `limit_s`; None when none is within it, takes requests and
    has the GPUs and the memory for `model`.

    Why: startup-aware ranks a model on its way to a worker as if it were there, so that
    its requests follow that load; when that load is far off, a copy already warm
    elsewhere may serve the request within an admission deadline that the ranked choice
    misses (docs/simulator.md, "Admission looks past a load under way").
    """
    cost = estimator.request_cost(request, model)
    best: Choice | None = None
    for entry in entries:
        report = entry.report
        if not entry.accepts or report.gpus < model.gpus:
            continue
        ttft = estimator.ttft(entry, cost)  # infinite where the weights do not fit
        tier = entry.tier_of(request.model)
        estimate = estimator.chosen(entry, tier, request.model, ttft)
        if estimate <= limit_s and (best is None or estimate < best.estimated_wait_s):
            reason = STARTUP_AWARE_REASONS[tier]
            best = Choice(worker=entry, tier=tier, estimated_wait_s=estimate, reason=reason)
    return best


class Seed:
    """The guide's original scoring, scanning every worker (the baseline)."""

    name = "seed"

    def __init__(self, estimator: Estimator) -> None:
        self._estimator = estimator

    def choose(
        self, view: ClusterView, request: ScheduleRequest, model: ModelInfo
    ) -> Choice | None:
        best: WorkerEntry | None = None
        best_score = 0.0
        for entry in view.entries():
            if not entry.accepts:
                continue
            report = entry.report
            loaded = entry.tier_of(request.model) is GPU
            score = (
                (1000.0 if loaded else 0.0)
                - 10.0 * (report.queue_depth + entry.pending)
                - 100.0 * report.gpu_utilization
            )
            if best is None or score > best_score:
                best, best_score = entry, score
        return None if best is None else _choice(self._estimator, best, request, model, "seed")


class LeastLoaded:
    name = "least-loaded"

    def __init__(self, estimator: Estimator) -> None:
        self._estimator = estimator

    def choose(
        self, view: ClusterView, request: ScheduleRequest, model: ModelInfo
    ) -> Choice | None:
        lowest = view.by_load.first(1)
        if not lowest:
            return None
        return _choice(self._estimator, lowest[0], request, model, "least_loaded")


class RoundRobin:
    name = "round-robin"

    def __init__(self, estimator: Estimator) -> None:
        self._estimator = estimator

    def choose(
        self, view: ClusterView, request: ScheduleRequest, model: ModelInfo
    ) -> Choice | None:
        for _ in range(min(len(view), RANDOM_TRIES)):
            entry = view.next_in_turn()
            if entry is not None and entry.accepts:
                return _choice(self._estimator, entry, request, model, "round_robin")
        return _fallback(self._estimator, view, request, model)


class Random:
    name = "random"

    def __init__(self, estimator: Estimator, rng: random.Random) -> None:
        self._estimator = estimator
        self._rng = rng

    def choose(
        self, view: ClusterView, request: ScheduleRequest, model: ModelInfo
    ) -> Choice | None:
        for _ in range(RANDOM_TRIES):
            entry = view.random_worker(self._rng)
            if entry is not None and entry.accepts:
                return _choice(self._estimator, entry, request, model, "random")
        return _fallback(self._estimator, view, request, model)


class PowerOfTwo:
    name = "power-of-two"

    def __init__(self, estimator: Estimator, rng: random.Random) -> None:
        self._estimator = estimator
        self._rng = rng

    def choose(
        self, view: ClusterView, request: ScheduleRequest, model: ModelInfo
    ) -> Choice | None:
        sampled = [view.random_worker(self._rng) for _ in range(2)]
        accepting = [entry for entry in sampled if entry is not None and entry.accepts]
        if not accepting:
            return _fallback(self._estimator, view, request, model)
        best = min(accepting, key=lambda entry: entry.load)
        return _choice(self._estimator, best, request, model, "power_of_two")


class StartupAware:
    """Minimise estimated time to first token over a bounded candidate set."""

    name = "startup-aware"

    def __init__(self, estimator: Estimator) -> None:
        self._estimator = estimator

    def choose(
        self, view: ClusterView, request: ScheduleRequest, model: ModelInfo
    ) -> Choice | None:
        cost = self._estimator.request_cost(request, model)
        estimate = self._estimator.ttft
        best: WorkerEntry | None = None
        best_ttft = 0.0
        seen: set[int] = set()  # entries already estimated, by identity
        for fastest, index in sources(view, request.model):
            if index is None or (best is not None and cost.lower_bound(fastest) >= best_ttft):
                continue
            # GPU holders differ only in their queue wait, which grows with the load and
            # shrinks with the slots: where every worker has the same slots, the least
            # loaded holder is the best of them and the others need no estimate.
            wanted = 1 if fastest is GPU and view.same_slots else CANDIDATES_PER_TIER
            for entry in index.first(wanted):
                if id(entry) in seen:
                    continue
                seen.add(id(entry))
                ttft = estimate(entry, cost)
                if best is None or ttft < best_ttft:
                    best, best_ttft = entry, ttft
        if best is None:
            return None
        if best_ttft == math.inf and cost.size_bytes <= view.largest_gpu_bytes:
            # Every candidate is too small for the weights, and a larger worker exists (a
            # mixed fleet): the rare case where a decision looks at every worker.
            for entry in view.entries():
                if entry.accepts and id(entry) not in seen:
                    ttft = estimate(entry, cost)
                    if ttft < best_ttft:
                        best, best_ttft = entry, ttft
        tier = best.tier_of(request.model)
        best_ttft = self._estimator.chosen(best, tier, request.model, best_ttft)
        if tier is GPU and best.report.loads and requests_ahead(best) > 0:
            to_come_s = _wait_of_requests_to_come(view, best, cost)
            spare = self._copy_in_spare_room(view, model, cost, best_ttft + to_come_s)
            if spare is not None:
                best, best_ttft = spare
                tier = best.tier_of(request.model)
        return Choice(
            worker=best, tier=tier, estimated_wait_s=best_ttft, reason=STARTUP_AWARE_REASONS[tier]
        )

    def _copy_in_spare_room(
        self, view: ClusterView, model: ModelInfo, cost: RequestCost, wait_s: float
    ) -> tuple[WorkerEntry, float] | None:
        """Of the least-loaded workers, the one with room for another copy of `model`
        (`_has_room_for`), and no load of its own to wait for, if its cold start beats
        `wait_s`: the whole wait behind a load under way, and that of the requests to come
        (`_wait_of_requests_to_come`).

        Why: a load under way gathers the requests of its first batch (they rank it as if
        the model were there), and the next ones wait for the load and that batch. On a
        cold cluster a popular large model's requests piled up behind one load after
        another this way, each copy started only once its queue outgrew a whole cold
        start (docs/simulator.md, "A copy in spare room"). A copy that evicts no model in
        use costs the others little, so it starts as soon as it is sooner; where every
        GPU is full and busy, nothing changes.
        """
        best: tuple[WorkerEntry, float] | None = None
        for entry in view.by_load.first(CANDIDATES_PER_TIER):
            if entry.report.loads or entry.arriving or not _has_room_for(entry, model):
                continue
            ttft = self._estimator.ttft(entry, cost)
            if ttft < (wait_s if best is None else best[1]):
                best = (entry, ttft)
        return best


def _wait_of_requests_to_come(view: ClusterView, best: WorkerEntry, cost: RequestCost) -> float:
    """The queue wait that the model's requests arriving while a copy loads from the store
    add to its copies (the GPU holders, loads under way included), each as long as this
    one, spread over `best`'s slots: the wait a copy started now would spare them.

    Why: a request behind a load under way asked only whether a copy was sooner for
    itself, and a load that ends in 100 s beats a copy that ends in 111 s. So the copies
    of a hot 138 GB model started one by one, each once its queue outgrew a whole cold
    start, and hundreds of requests waited minutes behind the first few
    (docs/simulator.md, "Copies for the requests to come"). The request that starts the
    copy may wait a little longer for it; the ones after it wait much less.
    """
    holders = view.holders(cost.model, GPU)
    copies = len(holders) if holders else 1
    to_come = view.arrivals.rate_per_s(cost.model) * cost.load_s[REMOTE] / copies
    slots = best.report.slots if best.report.slots > 1 else 1
    return to_come / slots * cost.e2e_s


def fits(entry: WorkerEntry, model: ModelInfo) -> bool:
    """Whether `model` can run on `entry`'s worker: GPUs enough for its tensor-parallel
    degree, and GPU memory enough for its weights."""
    return entry.report.gpus >= model.gpus and entry.report.memory_total >= model.size_bytes


def _has_room_for(entry: WorkerEntry, model: ModelInfo) -> bool:
    """`model` `fits` `entry`, and its GPU takes it without evicting a model in use: its
    free memory, or all of it where the worker has nothing queued, running or on its way.

    Why the idle worker: the models on its GPU serve nobody now. Counting only free memory
    left the copies of a cold cluster's hot model to wait for GPUs that held idle models
    (docs/simulator.md, "An idle worker's GPU is room").
    """
    report = entry.report
    free = report.memory_total - report.memory_used
    return fits(entry, model) and (free >= model.size_bytes or entry.load == 0)


def requests_ahead(entry: WorkerEntry) -> int:
    """The requests a new one on `entry` would wait behind for a slot: 0 or fewer, it
    starts at once (once its model is there)."""
    report = entry.report
    slots = report.slots if report.slots > 1 else 1
    return report.queue_depth + report.running + entry.pending - slots + 1


def _choice(
    estimator: Estimator, entry: WorkerEntry, request: ScheduleRequest, model: ModelInfo, why: str
) -> Choice:
    ttft = estimator.ttft(entry, estimator.request_cost(request, model))
    tier = entry.tier_of(request.model)
    estimate = estimator.chosen(entry, tier, request.model, ttft)
    return Choice(worker=entry, tier=tier, estimated_wait_s=estimate, reason=why)


def _fallback(
    estimator: Estimator, view: ClusterView, request: ScheduleRequest, model: ModelInfo
) -> Choice | None:
    """When sampling found no accepting worker, the least-loaded one, if any accepts."""
    return LeastLoaded(estimator).choose(view, request, model)


PolicyFactory = Callable[[Estimator, random.Random], PlacementPolicy]

# The one registry of policies: the configuration, the CLI, the simulator, the experiments,
# the coordinator and every node read it (through `policy_names` and `make_policy`), so a
# policy added here is accepted and run everywhere.
POLICIES: dict[str, PolicyFactory] = {
    "seed": lambda estimator, rng: Seed(estimator),
    "least-loaded": lambda estimator, rng: LeastLoaded(estimator),
    "round-robin": lambda estimator, rng: RoundRobin(estimator),
    "random": Random,
    "power-of-two": PowerOfTwo,
    "startup-aware": lambda estimator, rng: StartupAware(estimator),
}


def policy_names() -> tuple[str, ...]:
    """The registered policies, in the registry's order.

    Read when needed (a parser, a configuration check), never copied at import, so that a
    policy added to `POLICIES` is offered by every consumer at once.
    """
    return tuple(POLICIES)


def make_policy(
    name: str, cost: CostModel, rng: random.Random, estimator: Estimator | None = None
) -> PlacementPolicy:
    """Build a policy by name; raises KeyError naming the valid choices. `estimator`:
    one the caller estimates with too (the coordinator's admission), so that both share
    its per-model timings."""
    try:
        factory = POLICIES[name]
    except KeyError:
        choices = ", ".join(POLICIES)
        raise KeyError(f"unknown placement policy {name!r}; choose from {choices}") from None
    return factory(estimator or Estimator(cost), rng)

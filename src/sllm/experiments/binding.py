"""What binding each request to one copy when it arrives costs: the same copies, one queue.

Why: a scheduler sends a request to one worker as it arrives, and it waits there. Startup-
aware ranks a load under way as if it were done, so a burst's requests gather at the first
copies to start loading; copies ready at different times then leave a request bound to a
late one waiting while another copy's slots are free. This replays each model's completed
requests first come, first served from one queue that all of the model's copies serve,
with each copy there for as long as it served the model in the run, and counts the
requests that would still wait longer than a target. On seed 1 at 60% it put the whole
hot model under the target that its bound requests missed (docs/simulator.md, "What
seed 1 at 60% asks").

An idealisation, not a policy: the copies' slots serve only this model (their other
models are left out), each request holds a slot from its first token to its end as it
ran (its prefill, tens of milliseconds, is left out of its wait), and the copies are the
ones the run started. It says what late binding could gain with those copies, not what a
scheduler that binds late would get: it would start other copies. Measured, it gets
nothing: moving waiting requests to free slots of ready copies with full knowledge of
every queue left that cell's p99 where it was, or raised it (docs/simulator.md, "Late
binding, omniscient").
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sllm.sim.cluster import SimResult


@dataclass(frozen=True, slots=True, kw_only=True)
class Served:
    """A completed request as it ran, in workload seconds."""

    model: str
    worker: str
    arrival_s: float
    first_token_s: float
    end_s: float
    cold_start: bool  # it waited for a load of its model on `worker` (`copy_windows`)


def served(result: SimResult) -> list[Served]:
    """The completed requests of a run."""
    return [
        Served(
            model=outcome.model,
            worker=outcome.worker_id,
            arrival_s=arrival,
            first_token_s=arrival + outcome.ttft_s,
            end_s=end,
            cold_start=outcome.cold_start,
        )
        for outcome, (arrival, end) in zip(result.outcomes, result.spans, strict=True)
        if outcome.ok
    ]


def copy_windows(requests: Iterable[Served]) -> list[tuple[float, float]]:
    """When each copy of one model was there to serve: on each worker, from the first token
    of its first request there to the end of the last request before it was loaded again.

    A request that waited for a load is a cold start, and so are the others of the load's
    first batch; the model was loaded again only where such a request's first token comes
    after every earlier request there ended (the copy had gone idle, and was evicted)."""
    by_worker: dict[str, list[Served]] = {}
    for request in requests:
        by_worker.setdefault(request.worker, []).append(request)
    windows: list[tuple[float, float]] = []
    for on_worker in by_worker.values():
        on_worker.sort(key=lambda request: request.first_token_s)
        start, end = on_worker[0].first_token_s, on_worker[0].end_s
        for request in on_worker[1:]:
            if request.cold_start and request.first_token_s > end:  # reloaded: a new copy
                windows.append((start, end))
                start, end = request.first_token_s, request.end_s
            else:
                end = max(end, request.end_s)
        windows.append((start, end))
    return windows


def shared_queue_waits(requests: Sequence[Served], slots: int) -> list[float]:
    """The waits of one model's `requests`, in arrival order, served first come, first
    served by `slots` slots of each of its copies (`copy_windows`): each request takes the
    slot free soonest and holds it as long as it ran (first token to end). A request no
    copy's window still has room for keeps the wait it had."""
    ordered = sorted(requests, key=lambda request: request.arrival_s)
    # (free from, copy gone at): the slot free soonest gives the soonest start.
    free_slots = [(start, end) for start, end in copy_windows(ordered) for _ in range(slots)]
    heapq.heapify(free_slots)
    waits = []
    for request in ordered:
        while free_slots:
            free_from, gone_at = heapq.heappop(free_slots)
            start = max(request.arrival_s, free_from)
            if start < gone_at:  # else gone for every later request too: arrivals only grow
                heapq.heappush(free_slots, (start + request.end_s - request.first_token_s, gone_at))
                waits.append(start - request.arrival_s)
                break
        else:
            waits.append(request.first_token_s - request.arrival_s)
    return waits


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One arm at one level: completed requests over a target as they ran, and with a
    queue shared by each model's copies; the slowest 1% is what a p99 under the target
    allows."""

    target_s: float
    completed: int
    over_target: int
    over_target_shared: int

    @property
    def allowed(self) -> int:
        return self.completed // 100

    def as_dict(self) -> dict[str, float | int]:
        return {
            "target_s": self.target_s,
            "completed": self.completed,
            "over_target": self.over_target,
            "over_target_shared": self.over_target_shared,
            "allowed": self.allowed,
        }


def binding(runs: Iterable[Sequence[Served]], target_s: float, slots: int) -> Binding:
    """`Binding` of `runs`, each a run's `served` requests (the cluster seeds of one arm and
    level, pooled)."""
    completed = over = over_shared = 0
    for run in runs:
        by_model: dict[str, list[Served]] = {}
        for request in run:
            by_model.setdefault(request.model, []).append(request)
            over += request.first_token_s - request.arrival_s > target_s
        completed += len(run)
        for requests in by_model.values():
            over_shared += sum(wait > target_s for wait in shared_queue_waits(requests, slots))
    return Binding(
        target_s=target_s,
        completed=completed,
        over_target=over,
        over_target_shared=over_shared,
    )

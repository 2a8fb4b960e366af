"""WorkerState driven by the sim engine on a tiny discrete-event loop, with invariants.

The loop is a heap of (time, sequence, kind, payload): the sequence number makes ties
deterministic, so one seed is one schedule. Requests arrive at random, a few are cancelled,
the engine's timers and the worker's keep-alive deadline drive everything else.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import (
    Action,
    Evict,
    Finished,
    StartLoad,
    StartRequest,
    WorkerResources,
    WorkerState,
    prestaged,
)
from sllm.engines.sim import SimEngine, Timer, TimerKind, fire
from sllm.wire.messages import InferenceRequest
from sllm.workload import default_catalog

GB = 10**9
COST = CostModel()
CATALOG = {spec.name: spec for spec in default_catalog(11)}
RESOURCES = WorkerResources(
    gpu_bytes=40 * GB,
    host_bytes=60 * GB,
    disk_bytes=500 * GB,
    slots=4,
    queue_capacity=16,
    keep_alive_s=20.0,
)
# Popular small models, a few mid-size ones that crowd the GPU, one that never fits
# (65 GB > 40 GB) and one the worker does not know.
MIX = {
    "llama-3.2-1b": 30,
    "llama-3.2-3b": 20,
    "llama-2-7b": 15,
    "mistral-7b": 10,
    "llama-2-13b": 8,
    "qwen2.5-14b": 6,
    "qwen2.5-32b": 2,
    "not-in-catalog": 1,
}


@dataclass
class Run:
    finished: dict[str, list[Finished]] = field(default_factory=lambda: defaultdict(list))
    started: dict[str, StartRequest] = field(default_factory=dict)
    submitted: dict[str, InferenceRequest] = field(default_factory=dict)
    actions: list[tuple[float, Action]] = field(default_factory=list)
    worker: WorkerState | None = None


def simulate(seed: int, requests: int = 300, prestage: Tier | None = Tier.DISK) -> Run:
    rng = random.Random(seed)
    w = WorkerState("w", RESOURCES, CATALOG, COST, prestaged(CATALOG, RESOURCES, prestage))
    engine = SimEngine(CATALOG, COST)
    heap: list[tuple[float, int, str, Any]] = []
    sequence = itertools.count()
    run = Run(worker=w)

    def push(at: float, kind: str, payload: Any) -> None:
        heapq.heappush(heap, (at, next(sequence), kind, payload))

    now = 0.0
    names, weights = list(MIX), list(MIX.values())
    for i in range(requests):
        now += rng.expovariate(0.6)
        rid = f"r{i}"
        spec = InferenceRequest(
            request_id=rid,
            model=rng.choices(names, weights)[0],
            prompt_tokens=rng.randint(1, 4096),
            output_tokens=rng.randint(1, 512),
        )
        run.submitted[rid] = spec
        push(now, "submit", spec)
        if rng.random() < 0.08:
            push(now + rng.uniform(0.0, 6.0), "cancel", rid)

    loads_in_flight = 0
    running: dict[str, str] = {}  # request id -> model, from the actions alone
    ticks_at: set[float] = set()
    steps = 0
    while heap:
        now, _, kind, payload = heapq.heappop(heap)
        steps += 1
        assert steps < 100 * requests, "the loop does not settle"
        if kind == "submit":
            actions = w.submit(payload, now)
        elif kind == "cancel":
            actions = w.cancel(payload, now)
        elif kind == "timer":
            if payload.kind is TimerKind.LOAD_DONE:
                loads_in_flight -= 1
            actions = fire(w, payload, now)
        else:
            actions = w.tick(now)
        for action in actions:
            run.actions.append((now, action))
            if isinstance(action, Finished):
                run.finished[action.request_id].append(action)
                running.pop(action.request_id, None)
            elif isinstance(action, StartRequest):
                assert action.request_id not in run.started
                run.started[action.request_id] = action
                running[action.request_id] = action.model
            elif isinstance(action, Evict) and action.source is Tier.GPU:
                assert action.model not in running.values(), "evicted a model in use"
            elif isinstance(action, StartLoad):
                loads_in_flight += 1
            timer: Timer
            for timer in engine.timers(action):
                push(now + timer.delay_s, "timer", timer)
        # Invariants after every event.
        assert loads_in_flight <= 1, "loads are serialized"
        assert w.gpu_used <= RESOURCES.gpu_bytes
        assert w.running <= RESOURCES.slots
        assert w.queue_depth <= RESOURCES.queue_capacity
        assert w.host_used <= RESOURCES.host_bytes
        assert w.disk_used <= RESOURCES.disk_bytes
        deadline = w.next_deadline()
        if deadline is not None and deadline not in ticks_at:
            ticks_at.add(deadline)
            push(max(now, deadline), "tick", None)
    assert loads_in_flight == 0
    return run


@pytest.mark.parametrize("seed", range(4))
def test_every_request_finishes_exactly_once(seed: int) -> None:
    run = simulate(seed)
    assert set(run.finished) == set(run.submitted)
    assert all(len(results) == 1 for results in run.finished.values())
    assert run.worker is not None
    assert (run.worker.queue_depth, run.worker.running) == (0, 0)
    reasons = {results[0].reason for results in run.finished.values()}
    assert {"", "model_too_large", "unknown_model", "cancelled"} <= reasons


@pytest.mark.parametrize("seed", range(4))
def test_finished_timings_match_the_cost_model(seed: int) -> None:
    run = simulate(seed)
    for rid, (result,) in run.finished.items():
        assert 0.0 <= result.queue_s <= result.ttft_s <= result.e2e_s
        if not result.ok:
            continue
        assert result.reason == ""
        start = run.started[rid]
        ttft, e2e = COST.service_time(
            CATALOG[start.model], start.prompt_tokens, start.output_tokens, start.batch_size
        )
        assert result.ttft_s - result.queue_s == pytest.approx(ttft)
        assert result.e2e_s - result.queue_s == pytest.approx(e2e)
        assert 1 <= start.batch_size <= RESOURCES.slots


def test_the_run_exercises_loads_evictions_and_keep_alive() -> None:
    run = simulate(0)
    loads = [action for _, action in run.actions if isinstance(action, StartLoad)]
    evictions = [action for _, action in run.actions if isinstance(action, Evict)]
    assert len(loads) > len({load.model for load in loads})  # models came back after leaving
    assert {load.source for load in loads} >= {Tier.DISK, Tier.HOST}
    assert any(e.source is Tier.GPU for e in evictions)
    assert any(e.source is Tier.HOST for e in evictions)  # host memory (60 GB) overflowed
    cold = [r for (r,) in run.finished.values() if r.ok and r.cold_start]
    assert cold
    assert any(r.ok and not r.cold_start for (r,) in run.finished.values())


def test_cold_start_from_remote_without_prestaging() -> None:
    run = simulate(1, requests=120, prestage=None)
    sources = {a.source for _, a in run.actions if isinstance(a, StartLoad)}
    assert Tier.REMOTE in sources
    assert set(run.finished) == set(run.submitted)


def test_a_seed_is_a_schedule() -> None:
    first, second = simulate(5, requests=150), simulate(5, requests=150)
    assert first.actions == second.actions
    assert first.actions != simulate(6, requests=150).actions

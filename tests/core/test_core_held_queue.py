"""The held queue (ADMISSION_HOLD): what the deadline would refuse waits for room instead.

Hand-built reports and a fake clock: the coordinator holds a request over the deadline,
answers ``hold``, and `release` places it once a report shows room, or refuses it once
held `hold_s`.
"""

from __future__ import annotations

import random

import pytest
from core_builders import report, request

from sllm.core.coordinator import HOLD, OVER_DEADLINE, Coordinator
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.wire.messages import LoadEnd, WorkerReport
from sllm.workload import default_catalog

COST = CostModel()
CATALOG = {spec.name: spec for spec in default_catalog(11)}
MODEL = "llama-2-7b"
DEADLINE_S = 60.0
HOLD_S = 60.0


def coordinator(hold_max: int = 8) -> Coordinator:
    return Coordinator(
        "startup-aware",
        CATALOG,
        COST,
        1e9,  # no worker times out here
        random.Random(0),
        0.0,
        deadline_s=DEADLINE_S,
        hold_s=HOLD_S,
        hold_max=hold_max,
    )


def loading(ready_in_s: float, seq: int = 1) -> WorkerReport:
    """The only worker: MODEL is on its way to its GPU, ready in `ready_in_s`."""
    return report(
        "loading",
        models={MODEL: int(Tier.GPU)},
        loads=(LoadEnd(model=MODEL, ready_in_s=ready_in_s),),
        load_backlog_s=ready_in_s,
        seq=seq,
    )


def test_a_request_over_the_deadline_is_held_and_placed_when_the_wait_shrinks() -> None:
    c = coordinator()
    c.handle(loading(90.0), 0.0)
    answer = c.place(request(), 0.0, reply_to="client-a")
    assert (answer.action, answer.reason, answer.worker_id) == (HOLD, "held", "")
    assert answer.estimated_wait_s == HOLD_S  # the latest the decision comes
    assert list(c.held) == ["r"]
    assert c.release(1.0) == []  # still 89 s to go
    c.handle(loading(30.0, seq=2), 20.0)  # the load is nearer its end now
    [(reply_to, decision)] = c.release(20.25)
    assert reply_to == "client-a"
    assert (decision.action, decision.worker_id) == ("serve", "loading")
    assert 30.0 <= decision.estimated_wait_s < 31.0
    assert not c.held
    counters = c.counters
    assert (counters.requests, counters.held, counters.rejected) == (1, 1, 0)
    assert counters.warm_placements == 1
    assert c.release(30.0) == []


def test_a_request_held_for_the_whole_hold_is_refused_over_the_deadline() -> None:
    c = coordinator()
    c.handle(loading(500.0), 0.0)
    assert c.place(request(), 0.0, reply_to="a").action == HOLD
    assert c.release(HOLD_S - 0.25) == []
    [(reply_to, decision)] = c.release(HOLD_S)
    assert reply_to == "a"
    assert (decision.action, decision.reason) == ("reject", OVER_DEADLINE)
    assert decision.estimated_wait_s > DEADLINE_S  # the client's Retry-After
    assert c.counters.rejected == 1
    assert c.counters.by_action == {(MODEL, "reject"): 1}  # one decision, not one per pass


def test_asked_again_while_held_it_is_answered_hold_and_answered_once() -> None:
    c = coordinator()
    c.handle(loading(500.0), 0.0)
    c.place(request(), 0.0, reply_to="first")
    again = c.place(request(), 10.0, reply_to="second")
    assert again.action == HOLD and again.estimated_wait_s == HOLD_S - 10.0
    assert c.counters.requests == 1 and c.counters.held == 1
    [(reply_to, _)] = c.release(HOLD_S)
    assert reply_to == "second"  # the latest asker


def test_the_held_queue_is_bounded() -> None:
    c = coordinator(hold_max=2)
    c.handle(loading(500.0), 0.0)
    actions = [c.place(request(rid=f"r{i}"), 0.0).action for i in range(3)]
    assert actions == [HOLD, HOLD, "reject"]
    assert len(c.held) == 2 and c.counters.rejected == 1


def test_a_request_every_queue_refuses_is_held_until_a_slot_frees() -> None:
    c = coordinator()
    full = {"queue_depth": 64, "queue_capacity": 64, "running": 8}
    c.handle(report("w", models={MODEL: int(Tier.GPU)}, **full), 0.0)
    assert c.place(request(), 0.0, reply_to="a").action == HOLD
    assert c.release(1.0) == []
    c.handle(report("w", models={MODEL: int(Tier.GPU)}, queue_depth=3, running=8, seq=2), 2.0)
    [(_, decision)] = c.release(2.0)
    assert (decision.action, decision.worker_id) == ("serve", "w")


def test_the_oldest_held_request_goes_first() -> None:
    c = coordinator()
    c.handle(loading(500.0), 0.0)
    for i in range(3):
        c.place(request(rid=f"r{i}"), float(i), reply_to=i)
    c.handle(loading(1.0, seq=2), 5.0)
    assert [reply_to for reply_to, _ in c.release(5.0)] == [0, 1, 2]


def test_a_hold_is_a_decision_the_runtime_routes_through_handle() -> None:
    c = coordinator()
    c.handle(loading(500.0), 0.0)
    outcome = c.handle(request(), 0.0, reply_to=("127.0.0.1", 4000))
    [answer] = outcome.replies
    assert answer.action == HOLD
    [(reply_to, _)] = c.release(HOLD_S)
    assert reply_to == ("127.0.0.1", 4000)


def test_a_request_that_can_never_run_is_refused_at_once_not_held() -> None:
    c = coordinator()
    c.handle(loading(500.0), 0.0)
    decision = c.place(request(model="no-such-model"), 0.0)
    assert (decision.action, decision.reason) == ("reject", "unknown_model")
    assert not c.held


@pytest.mark.parametrize(
    ("deadline_s", "hold_s", "hold_max"), [(None, 30.0, 8), (60.0, 0.0, 8), (60.0, 30.0, 0)]
)
def test_a_hold_needs_a_deadline_a_positive_length_and_room(
    deadline_s: float | None, hold_s: float, hold_max: int
) -> None:
    with pytest.raises(ValueError):
        Coordinator(
            "seed",
            CATALOG,
            COST,
            5.0,
            random.Random(0),
            0.0,
            deadline_s=deadline_s,
            hold_s=hold_s,
            hold_max=hold_max,
        )


def test_a_release_decides_among_the_candidates_a_node_probed() -> None:
    """A node probes before it releases (`Node._start_release`): its held request goes
    to a probed candidate whose fresh report admits it, not to a worker whose gossiped
    report only looks better."""
    c = coordinator()
    c.handle(loading(90.0), 0.0)
    assert c.place(request(), 0.0, reply_to="a").action == HOLD
    warm = {MODEL: int(Tier.GPU)}
    c.handle(report("idle-as-gossiped", models=warm), 1.0)
    c.handle(report("probed", models=warm, running=2), 1.0)
    [(_, decision)] = c.release(1.25, among={"r": ["probed"]})
    assert (decision.action, decision.worker_id) == ("serve", "probed")
    # Without probed candidates, the whole view decides: the worker that looks idle.
    assert c.place(request(rid="r2"), 1.5, reply_to="b").worker_id == "idle-as-gossiped"

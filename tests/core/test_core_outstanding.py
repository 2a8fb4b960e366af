"""Pure tests of `OutstandingRequests`: what a client does when a worker holding its
requests dies. No clock but the numbers passed in."""

from __future__ import annotations

import pytest

from sllm.core.outstanding import (
    NO_RESULT,
    RETRIES_EXHAUSTED,
    STALE_PLACEMENT_DELAY_S,
    WORKER_LOST,
    Fail,
    OutstandingRequests,
    Retry,
)


def test_a_dead_worker_retries_what_it_queued_and_fails_what_it_ran() -> None:
    held = OutstandingRequests(deadline_s=60.0)
    for request_id in ("queued-1", "queued-2", "running", "elsewhere"):
        held.begin(request_id, now=0.0)
    assert held.placed("queued-1", "w1") is None
    assert held.placed("queued-2", "w1") is None
    assert held.placed("running", "w1") is None
    assert held.placed("elsewhere", "w2") is None
    held.started("running", "w1")
    held.started("elsewhere", "w1")  # an ack from a worker that does not hold it: ignored
    decisions = held.worker_lost("w1")
    assert decisions == [
        Retry(request_id="queued-1", lost_worker="w1"),
        Retry(request_id="queued-2", lost_worker="w1"),
        Fail(request_id="running", reason=WORKER_LOST, worker_id="w1"),
    ]
    assert held.retried == 2 and held.failed == {WORKER_LOST: 1}
    assert "running" not in held and "queued-1" in held and held.worker_of("queued-1") == ""
    assert held.worker_lost("w2") == [
        Retry(request_id="elsewhere", lost_worker="w2")
    ]  # it never started on w2


def test_a_request_placed_on_a_worker_already_lost_is_asked_for_again_later() -> None:
    held = OutstandingRequests(max_placements=1)
    held.worker_lost("w1")
    held.begin("r", now=0.0)
    for _ in range(3):  # the scheduler has not heard yet: no placement is used up
        assert held.placed("r", "w1") == Retry(
            request_id="r", lost_worker="w1", after_s=STALE_PLACEMENT_DELAY_S
        )
    assert held.retried == 0 and held.worker_of("r") == ""
    # Heard from again (a restart, a false suspicion): placements there stand.
    held.worker_back("w1")
    assert held.placed("r", "w1") is None
    assert held.worker_of("r") == "w1"


def test_placements_are_bounded() -> None:
    held = OutstandingRequests(max_placements=2)
    held.begin("r", now=0.0)
    held.placed("r", "w1")
    assert held.worker_lost("w1") == [Retry(request_id="r", lost_worker="w1")]
    held.placed("r", "w2")
    assert held.worker_lost("w2") == [
        Fail(request_id="r", reason=RETRIES_EXHAUSTED, worker_id="w2")
    ]
    assert "r" not in held and held.failed == {RETRIES_EXHAUSTED: 1}


def test_no_request_outlives_its_deadline() -> None:
    held = OutstandingRequests(deadline_s=10.0)
    held.begin("answered", now=0.0)
    held.begin("silent", now=1.0)
    held.begin("later", now=5.0)
    held.placed("silent", "w1")
    held.end("answered")
    assert held.next_deadline() == 11.0
    assert held.expire(10.999) == []
    assert held.expire(11.0) == [Fail(request_id="silent", reason=NO_RESULT, worker_id="w1")]
    assert held.next_deadline() == 15.0
    assert held.worker_lost("w1") == []  # nothing left there
    held.end("later")
    assert held.next_deadline() is None and len(held) == 0


def test_an_answered_request_is_forgotten_everywhere() -> None:
    held = OutstandingRequests()
    held.begin("r", now=0.0)
    held.placed("r", "w1")
    held.started("r", "w1")
    assert held.is_started("r")
    held.end("r")
    assert held.worker_lost("w1") == [] and held.retried == 0 and not held.failed


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        OutstandingRequests(deadline_s=0.0)
    with pytest.raises(ValueError):
        OutstandingRequests(max_placements=0)


def test_a_request_handed_back_is_placed_again_however_often_it_moves() -> None:
    held = OutstandingRequests(deadline_s=60.0, max_placements=2)
    held.begin("r", now=0.0)
    assert held.placed("r", "w1") is None
    assert held.handed_back("r", "w2") is None  # not where it is: a stray answer
    for move, (here, there) in enumerate((("w1", "w2"), ("w2", "w3"), ("w3", "w4"))):
        assert held.handed_back("r", here) == Retry(request_id="r", lost_worker=here)
        assert held.worker_of("r") == "" and held.retried == move + 1
        assert held.placed("r", there) is None
    # A death still counts: the bound is two placements on workers that died.
    assert held.worker_lost("w4") == [Retry(request_id="r", lost_worker="w4")]
    held.placed("r", "w5")
    assert held.worker_lost("w5") == [
        Fail(request_id="r", reason=RETRIES_EXHAUSTED, worker_id="w5")
    ]
    assert "r" not in held


def test_a_migrated_request_is_placed_again_though_it_had_started() -> None:
    held = OutstandingRequests(deadline_s=60.0, max_placements=1)
    held.begin("r", now=0.0)
    held.placed("r", "w1")
    held.started("r", "w1")
    assert held.migrated("r", "w2") is None  # not where it is: a stray answer
    assert held.migrated("r", "w1") == Retry(request_id="r", lost_worker="w1")
    assert not held.is_started("r") and held.migrated_total == 1
    held.placed("r", "w2")
    held.started("r", "w2")
    assert held.migrated("r", "w2") == Retry(request_id="r", lost_worker="w2")
    assert held.migrated_total == 2
    held.placed("r", "w3")
    assert held.worker_lost("w3") == [
        Fail(request_id="r", reason=RETRIES_EXHAUSTED, worker_id="w3")
    ]


def test_a_started_request_is_never_handed_back() -> None:
    held = OutstandingRequests(deadline_s=60.0)
    held.begin("r", now=0.0)
    held.placed("r", "w1")
    held.started("r", "w1")
    assert held.handed_back("r", "w1") is None

"""ClusterView and LoadIndex: ordering, liveness on a fake clock, and our own decisions' effect."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from core_builders import report as base_report
from core_builders import view_of

from sllm.core.tiers import Tier
from sllm.core.view import ARRIVAL_WINDOW_S, ArrivalRates, ClusterView, LoadIndex
from sllm.wire.messages import WorkerReport

TIMEOUT = 5.0


def report(node_id: str, **overrides: Any) -> WorkerReport:
    """A small worker (2 slots, a queue of 8): loads reach the queue's end in a few steps."""
    small = {"http_port": 0, "queue_capacity": 8, "slots": 2}
    return base_report(node_id, **{**small, **overrides})


# -- LoadIndex ------------------------------------------------------------------------


def test_lowest_is_ascending_load() -> None:
    index: LoadIndex[str] = LoadIndex()
    for worker_id, load in [("a", 3), ("b", 0), ("c", 7), ("d", 1)]:
        index.set(worker_id, load, worker_id)
    assert list(index.lowest()) == ["b", "d", "a", "c"]
    assert len(index) == 4
    assert "a" in index
    assert "z" not in index


def test_ties_go_to_the_longest_unchanged() -> None:
    index: LoadIndex[str] = LoadIndex()
    for worker_id in "abc":
        index.set(worker_id, 1, worker_id)
    assert list(index.lowest()) == ["a", "b", "c"]
    index.set("a", 2, "a")
    index.set("a", 1, "a")  # a's load changed most recently: it goes last among equals
    assert list(index.lowest()) == ["b", "c", "a"]
    index.set("b", 1, "b")  # no change, no move
    assert list(index.lowest()) == ["b", "c", "a"]


def test_discard_and_empty_buckets() -> None:
    index: LoadIndex[str] = LoadIndex()
    index.set("a", 5, "a")
    index.set("b", 2, "b")
    index.discard("b")
    index.discard("missing")
    assert list(index.lowest()) == ["a"]
    index.set("a", 0, "a")
    assert list(index.lowest()) == ["a"]
    index.discard("a")
    assert list(index.lowest()) == []
    assert len(index) == 0


def test_lowest_is_lazy() -> None:
    index: LoadIndex[str] = LoadIndex()
    for i in range(1000):
        index.set(f"w{i}", i % 7, f"w{i}")
    walk = index.lowest()
    assert [next(walk) for _ in range(3)] == ["w0", "w7", "w14"]


@pytest.mark.parametrize("count", [0, 1, 3, 4, 50, 2000])
def test_first_is_the_start_of_lowest(count: int) -> None:
    index: LoadIndex[str] = LoadIndex()
    for i in range(1000):  # buckets of many sizes, across several loads
        index.set(f"w{i}", (i * 7919) % 13, f"value of w{i}")
    keys = itertools.islice(index.lowest(), count)
    assert index.first(count) == [f"value of {key}" for key in keys]


def test_a_key_keeps_its_value_until_discarded() -> None:
    index: LoadIndex[str] = LoadIndex()
    index.set("a", 1, "first")
    index.set("a", 1, "second")  # same load: nothing moves
    index.set("a", 2, "third")  # moved: it takes the value it is given
    assert index.first(1) == ["third"]
    index.discard("a")
    index.set("a", 2, "fourth")
    assert index.first(1) == ["fourth"]


# -- reports and liveness -------------------------------------------------------------


def test_by_load_orders_workers() -> None:
    view = view_of(
        report("busy", queue_depth=3, running=2),
        report("idle"),
        report("half", running=1),
    )
    assert list(view.by_load.lowest()) == ["idle", "half", "busy"]
    assert len(view) == 3
    assert "idle" in view
    assert view.get("nobody") is None


def test_apply_report_says_when_a_worker_is_new() -> None:
    view = ClusterView(TIMEOUT)
    assert view.apply_report(report("w", seq=1, timestamp=1.0), 0.0) is True
    assert view.apply_report(report("w", seq=2, timestamp=2.0), 1.0) is False


def test_expiry_after_timeout_and_not_before() -> None:
    view = view_of(report("w"), now=10.0)
    assert view.expire(10.0) == []
    assert view.expire(10.0 + TIMEOUT - 1e-6) == []
    assert "w" in view
    assert view.expire(10.0 + TIMEOUT) == ["w"]
    assert "w" not in view
    assert list(view.by_load.lowest()) == []
    assert view.random_worker(random.Random(1)) is None
    assert view.next_in_turn() is None


def test_expiry_pops_only_the_silent() -> None:
    view = ClusterView(TIMEOUT)
    view.apply_report(report("old", seq=1), 0.0)
    view.apply_report(report("young", seq=1), 3.0)
    view.apply_report(report("old", seq=2, timestamp=101.0), 4.0)  # old speaks again
    assert view.expire(3.0 + TIMEOUT) == ["young"]
    assert [entry.worker_id for entry in view.entries()] == ["old"]
    assert view.expire(4.0 + TIMEOUT + 1.0) == ["old"]
    assert len(view) == 0


def test_reordered_report_is_ignored() -> None:
    view = ClusterView(TIMEOUT)
    view.apply_report(report("w", seq=5, timestamp=50.0, queue_depth=1), 1.0)
    assert view.apply_report(report("w", seq=4, timestamp=49.0, queue_depth=7), 2.0) is False
    assert view.apply_report(report("w", seq=5, timestamp=50.0, queue_depth=7), 2.0) is False
    entry = view.get("w")
    assert entry is not None
    assert entry.report.queue_depth == 1
    assert entry.last_seen == 1.0  # a stale report is no sign of life
    assert view.expire(1.0 + TIMEOUT) == ["w"]


def test_restarted_worker_is_accepted() -> None:
    view = ClusterView(TIMEOUT)
    view.apply_report(report("w", seq=900, timestamp=50.0, queue_depth=4), 1.0)
    # The process restarted: its sequence starts again, its clock moved on.
    assert view.apply_report(report("w", seq=1, timestamp=60.0, queue_depth=0), 2.0) is False
    entry = view.get("w")
    assert entry is not None
    assert entry.report.seq == 1
    assert entry.report.queue_depth == 0
    assert entry.last_seen == 2.0


def test_record_placement_counts_pending() -> None:
    view = view_of(report("a"), report("b"))
    assert list(view.by_load.lowest()) == ["a", "b"]
    view.record_placement("a", "m", 0.0)
    entry = view.get("a")
    assert entry is not None
    assert entry.pending == 1
    assert entry.load == 1
    assert "m" not in entry.arriving  # no load: not a cold start
    assert list(view.by_load.lowest()) == ["b", "a"]


def test_cold_start_marks_the_model_arriving_until_the_next_report() -> None:
    view = view_of(report("a", load_backlog_s=2.0), report("b"))
    assert view.holders("m", Tier.GPU) is None
    view.record_placement("a", "m", 7.5)
    entry = view.get("a")
    assert entry is not None
    assert entry.tier_of("m") is Tier.GPU
    assert entry.load_backlog_s == pytest.approx(9.5)
    holders = view.holders("m", Tier.GPU)
    assert holders is not None
    assert list(holders.lowest()) == ["a"]
    # A second request for the same model joins the load already under way.
    view.record_placement("a", "m", 7.5)
    assert entry.pending == 2
    assert entry.load_backlog_s == pytest.approx(9.5)
    # The worker's report replaces the guess with the truth.
    view.apply_report(report("a", seq=2, timestamp=101.0, models={"m": int(Tier.HOST)}), 1.0)
    assert entry.pending == 0
    assert entry.arriving == set()
    assert entry.load_backlog_s == 0.0
    assert entry.tier_of("m") is Tier.HOST
    assert view.holders("m", Tier.GPU) is None
    host = view.holders("m", Tier.HOST)
    assert host is not None
    assert list(host.lowest()) == ["a"]


def test_holders_by_tier_and_load() -> None:
    view = view_of(
        report("g1", models={"m": 0}, running=2),
        report("g2", models={"m": 0}),
        report("h1", models={"m": 1, "n": 0}),
        report("none"),
    )
    gpu = view.holders("m", Tier.GPU)
    host = view.holders("m", Tier.HOST)
    assert gpu is not None
    assert host is not None
    assert list(gpu.lowest()) == ["g2", "g1"]
    assert list(host.lowest()) == ["h1"]
    entry = view.get("none")
    assert entry is not None
    assert entry.tier_of("m") is Tier.REMOTE
    assert view.holders("absent", Tier.GPU) is None


def test_full_queue_leaves_the_indices() -> None:
    # 2 slots + 3 queued fill a queue of capacity 3.
    view = view_of(
        report("full", running=2, queue_depth=3, queue_capacity=3, models={"m": 0}),
        report("open", running=2, queue_depth=2, queue_capacity=3, models={"m": 0}),
    )
    assert list(view.by_load.lowest()) == ["open"]
    gpu = view.holders("m", Tier.GPU)
    assert gpu is not None
    assert list(gpu.lowest()) == ["open"]
    full = view.get("full")
    assert full is not None
    assert not full.accepts
    # Our own placement fills the last place.
    view.record_placement("open", "m", 0.0)
    assert list(view.by_load.lowest()) == []
    assert view.holders("m", Tier.GPU) is None
    # A report that says the queue drained takes it back.
    view.apply_report(report("open", seq=2, timestamp=101.0, queue_capacity=3), 1.0)
    assert list(view.by_load.lowest()) == ["open"]


def test_queue_full_of_requests_waiting_for_a_load_is_full() -> None:
    # Every slot is free but the queue is at capacity: its requests wait for a model to
    # load, and the worker rejects the next one with queue_full. The view must not send it.
    view = view_of(report("w", running=0, queue_depth=3, queue_capacity=3, slots=8))
    entry = view.get("w")
    assert entry is not None
    assert not entry.accepts
    assert list(view.by_load.lowest()) == []


def test_not_ready_worker_takes_no_work() -> None:
    view = view_of(report("w", ready=False, models={"m": 0}))
    assert list(view.by_load.lowest()) == []
    assert view.holders("m", Tier.GPU) is None
    assert len(view) == 1  # still live, just not accepting


def test_remove_keeps_random_and_turn_consistent() -> None:
    ids = [f"w{i}" for i in range(6)]
    view = view_of(*(report(worker_id) for worker_id in ids))
    view.remove("w2")
    view.remove("w0")
    view.remove("w5")
    view.remove("missing")
    live = {"w1", "w3", "w4"}
    rng = random.Random(3)
    seen: set[str] = set()
    for _ in range(200):
        entry = view.random_worker(rng)
        assert entry is not None
        seen.add(entry.worker_id)
    assert seen == live
    turns = []
    for _ in range(6):
        entry = view.next_in_turn()
        assert entry is not None
        turns.append(entry.worker_id)
    assert set(turns[:3]) == live
    assert turns[3:] == turns[:3]
    assert set(view.by_load.lowest()) == live
    # Removing down to nothing and adding back works.
    for worker_id in live:
        view.remove(worker_id)
    assert view.next_in_turn() is None
    view.apply_report(report("w9"), 1.0)
    entry = view.next_in_turn()
    assert entry is not None
    assert entry.worker_id == "w9"


def test_arrival_rates_decay_with_the_window() -> None:
    """A burst's count decays with the window's time constant, so a model's rate follows
    its burst; each model is counted apart."""
    rates = ArrivalRates()
    assert rates.rate_per_s("m") == 0.0
    for _ in range(60):
        rates.arrived("m", 0.0)
    assert rates.rate_per_s("m") == pytest.approx(60 / ARRIVAL_WINDOW_S)
    rates.arrived("m", ARRIVAL_WINDOW_S)  # one window later: the burst is down to 1/e
    assert rates.rate_per_s("m") == pytest.approx((60 / math.e + 1) / ARRIVAL_WINDOW_S)
    assert rates.rate_per_s("other") == 0.0

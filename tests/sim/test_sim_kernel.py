"""The event kernel: time order, deterministic ties, and what `run(until)` leaves behind."""

from __future__ import annotations

import gc
import random
import weakref

import pytest

from sllm.sim.kernel import Kernel, collector_paused


def test_events_run_in_time_order() -> None:
    kernel = Kernel()
    seen: list[tuple[float, str]] = []
    for delay, name in ((3.0, "c"), (1.0, "a"), (2.0, "b")):
        kernel.schedule(delay, lambda n: seen.append((kernel.now, n)), name)
    assert kernel.run(10.0) == 3
    assert seen == [(1.0, "a"), (2.0, "b"), (3.0, "c")]
    assert kernel.now == 10.0
    assert kernel.events == 3


def test_ties_run_in_the_order_they_were_scheduled() -> None:
    kernel = Kernel()
    seen: list[int] = []
    for index in range(100):
        kernel.at(5.0, seen.append, index)
    kernel.run(5.0)
    assert seen == list(range(100))


def test_an_event_scheduled_now_runs_after_the_ones_already_due() -> None:
    kernel = Kernel()
    seen: list[str] = []

    def first(_: None) -> None:
        seen.append("first")
        kernel.schedule(0.0, seen.append, "scheduled-by-first")

    kernel.at(1.0, first, None)
    kernel.at(1.0, seen.append, "second")
    kernel.run(2.0)
    assert seen == ["first", "second", "scheduled-by-first"]


def test_run_stops_at_until_and_resumes() -> None:
    kernel = Kernel()
    seen: list[float] = []
    for when in (1.0, 2.0, 2.5, 4.0):
        kernel.at(when, lambda _: seen.append(kernel.now), None)
    assert kernel.run(2.0) == 2  # an event due exactly at `until` runs
    assert kernel.now == 2.0
    assert kernel.next_time() == 2.5
    assert len(kernel) == 2
    assert kernel.run(3.0) == 1
    assert kernel.run(10.0) == 1
    assert seen == [1.0, 2.0, 2.5, 4.0]
    assert kernel.next_time() is None


def test_the_past_means_now() -> None:
    kernel = Kernel(start=5.0)
    seen: list[float] = []
    kernel.schedule(-1.0, lambda _: seen.append(kernel.now), None)
    kernel.at(1.0, lambda _: seen.append(kernel.now), None)
    kernel.run(5.0)
    assert seen == [5.0, 5.0]


def test_the_three_queues_run_in_one_time_order_with_ties_in_schedule_order() -> None:
    kernel = Kernel(period_s=1.0)
    seen: list[tuple[float, str]] = []

    def note(name: str) -> None:
        seen.append((kernel.now, name))

    kernel.at(0.5, note, "heap-0.5")
    kernel.soon(1.0, note, "near-1")
    kernel.after_period(note, "lane-1")  # due at 1.0, scheduled after near-1
    kernel.at(1.0, note, "heap-1")  # same time, scheduled after the lane event
    kernel.schedule(2.0, note, "heap-2")
    kernel.soon(0.75, note, "near-0.75")
    kernel.run(0.25)
    kernel.after_period(note, "lane-1.25")  # due at 1.25
    kernel.at(1.25, note, "heap-1.25")
    kernel.soon(1.0, note, "near-1.25")
    assert len(kernel) == 9
    assert kernel.next_time() == 0.5
    kernel.run(5.0)
    assert seen == [
        (0.5, "heap-0.5"),
        (0.75, "near-0.75"),
        (1.0, "near-1"),
        (1.0, "lane-1"),
        (1.0, "heap-1"),
        (1.25, "lane-1.25"),
        (1.25, "heap-1.25"),
        (1.25, "near-1.25"),
        (2.0, "heap-2"),
    ]
    assert kernel.events == 9 and len(kernel) == 0


def test_any_mix_of_queues_gives_the_order_of_one_heap() -> None:
    rng = random.Random(7)
    kernel = Kernel(period_s=0.3)
    seen: list[tuple[float, int]] = []
    expected: list[tuple[float, int]] = []

    def note(index: int) -> None:
        seen.append((kernel.now, index))
        if index < 2000:  # each event schedules another, in a random queue
            add(index + 1000)

    def add(index: int) -> None:
        choice = rng.random()
        delay = rng.choice([0.0, 0.3, rng.random()])
        if choice < 0.3:
            kernel.after_period(note, index)
            delay = 0.3
        elif choice < 0.6:
            kernel.soon(delay, note, index)
        else:
            kernel.schedule(delay, note, index)
        expected.append((kernel.now + delay, len(expected)))
        order.append(index)

    order: list[int] = []
    for index in range(1000):
        add(index)
    kernel.run(1e9)
    # One heap would run them by time, ties in the order they were scheduled.
    by_time = sorted(expected)
    assert [index for _, index in seen] == [order[position] for _, position in by_time]


def test_a_periodic_event_that_reschedules_itself_keeps_its_phase() -> None:
    kernel = Kernel(period_s=0.5)
    seen: list[float] = []

    def tick(_: None) -> None:
        seen.append(kernel.now)
        kernel.after_period(tick, None)

    kernel.at(0.2, tick, None)
    kernel.run(2.0)
    assert seen == [0.2, 0.7, 1.2, 1.7]
    assert kernel.next_time() == 2.2


def test_the_lane_stops_at_until_like_the_heap() -> None:
    kernel = Kernel(period_s=3.0)
    seen: list[float] = []
    kernel.after_period(lambda _: seen.append(kernel.now), None)
    assert kernel.run(2.9) == 0
    assert kernel.run(3.0, lambda: None) == 1
    assert seen == [3.0]


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period"):
        Kernel(period_s=0.0)


def test_run_checks_after_every_event_when_asked() -> None:
    kernel = Kernel()
    checks: list[float] = []
    for when in (1.0, 2.0, 3.0):
        kernel.at(when, lambda _: None, None)
    kernel.run(2.5, lambda: checks.append(kernel.now))
    assert checks == [1.0, 2.0]
    assert kernel.events == 2


def test_a_run_pauses_the_cycle_collector_and_collects_at_the_end() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        garbage = weakref.ref(Cycle())
        assert garbage() is not None  # a cycle waits for the collector
    assert gc.isenabled()
    assert garbage() is None  # collected on the way out


def test_a_paused_collector_stays_paused_after_a_run() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()

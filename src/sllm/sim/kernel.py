"""A discrete-event kernel: virtual time, a heap of events, deterministic ties.

Why it exists: the simulator must run hours of cluster time in seconds and give the
same history for the same seed. Time here is a number the kernel advances from one event
to the next; nothing waits.

Theory of operation (after SimPy): the pending events are a binary heap of tuples
``(time, sequence, callback, argument)``. The sequence number is unique and increases
with every `schedule`, so two events due at the same time run in the order they were
scheduled, and the heap never compares callbacks. `run(until)` pops and calls events
in order until the next one is due after ``until``, then leaves the clock at ``until``.

**The period lane.** Most events of a large run are periodic: every worker reports once per
report interval. Events that are all scheduled the same delay ahead (`after_period`) come
due in the order they were scheduled, so they wait in a FIFO queue instead of the heap:
appending and popping cost O(1) where the heap costs O(log n), and the heap holds only the
other events (Node.js keeps its timers in one list per duration for the same reason).
The loop takes whichever of the two heads is earlier by ``(time, sequence)``, so the order
is exactly the one a single heap would give.

This is the simulator's hot path (millions of events per simulated hour), so the loop
does nothing but pop, set the clock and call: no logging, no per-event objects beyond
the heap tuple, no cancellation bookkeeping. A caller that needs to cancel an event
checks a generation number in its callback instead (a stale event is a cheap no-op).
`run_checked` is the same loop with a check after every event, for tests that assert
invariants; it is a separate method so the plain loop pays nothing for it.

A run holds millions of long-lived objects (the workload, the outcomes so far, the
hosts' state) and makes millions of short-lived, acyclic ones (events, messages), which
reference counting frees. CPython's cycle collector would walk the long-lived heap again
and again and find next to nothing, so `collector_paused` turns it off for a run and
collects once at the end (measured in docs/benchmarks.md, "Simulator").

Not handled yet: event priorities other than time and order, and real-time pacing.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from heapq import heappop, heappush
from typing import Any, TypeVar

T = TypeVar("T")

Event = tuple[float, int, Callable[[Any], None], Any]


class Kernel:
    """The clock and the pending events of one simulation."""

    __slots__ = ("events", "heap", "lane", "now", "period_s", "sequence")

    def __init__(self, start: float = 0.0, period_s: float = 1.0) -> None:
        if not period_s > 0.0:
            raise ValueError(f"the period must be > 0 seconds, not {period_s!r}")
        self.now = start
        self.period_s = period_s  # the one delay of `after_period`
        self.events = 0  # events run so far
        # A hot path (the network's send) may push ``(time, next(sequence), callback,
        # argument)`` onto `heap` itself, saving a call; nothing else touches them.
        self.heap: list[Event] = []
        self.lane: deque[Event] = deque()  # `after_period` events, due in this order
        self.sequence = itertools.count()

    def __len__(self) -> int:
        """Events pending."""
        return len(self.heap) + len(self.lane)

    def schedule(self, delay: float, callback: Callable[[T], None], argument: T) -> None:
        """Run ``callback(argument)`` `delay` seconds from now (a negative delay means now)."""
        when = self.now + delay if delay > 0.0 else self.now
        heappush(self.heap, (when, next(self.sequence), callback, argument))

    def at(self, when: float, callback: Callable[[T], None], argument: T) -> None:
        """Run ``callback(argument)`` at time `when` (a time in the past means now)."""
        now = self.now
        heappush(self.heap, (when if when > now else now, next(self.sequence), callback, argument))

    def after_period(self, callback: Callable[[T], None], argument: T) -> None:
        """Run ``callback(argument)`` `period_s` from now, in the lane (see the module)."""
        self.lane.append((self.now + self.period_s, next(self.sequence), callback, argument))

    def next_time(self) -> float | None:
        """When the next event is due, or None when nothing is pending."""
        heads = [queue[0][0] for queue in (self.heap, self.lane) if queue]
        return min(heads, default=None)

    def run(self, until: float) -> int:
        """Run every event due at or before `until`; return how many ran.

        The clock ends at `until` (or stays where it is if that is earlier).
        """
        heap = self.heap
        lane = self.lane
        pop = heappop
        pop_lane = lane.popleft
        ran = 0
        while True:
            if lane and (not heap or lane[0] < heap[0]):
                if lane[0][0] > until:
                    break
                when, _, callback, argument = pop_lane()
            elif heap and heap[0][0] <= until:
                when, _, callback, argument = pop(heap)
            else:
                break
            self.now = when
            callback(argument)
            ran += 1
        self.events += ran
        if until > self.now:
            self.now = until
        return ran

    def run_checked(self, until: float, check: Callable[[], None]) -> int:
        """`run`, calling `check()` after every event (for invariant tests)."""
        heap = self.heap
        lane = self.lane
        ran = 0
        while True:
            if lane and (not heap or lane[0] < heap[0]):
                if lane[0][0] > until:
                    break
                when, _, callback, argument = lane.popleft()
            elif heap and heap[0][0] <= until:
                when, _, callback, argument = heappop(heap)
            else:
                break
            self.now = when
            callback(argument)
            ran += 1
            check()
        self.events += ran
        if until > self.now:
            self.now = until
        return ran


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; one collection when it ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            gc.collect()

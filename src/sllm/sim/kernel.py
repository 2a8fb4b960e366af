"""A discrete-event kernel: virtual time, a heap of events, deterministic ties.

Why it exists: the simulator must run hours of cluster time in seconds and give the
same history for the same seed. Time here is a number the kernel advances from one event
to the next; nothing waits.

Theory of operation (after SimPy): the pending events are a binary heap of tuples
``(time, sequence, callback, argument)``. The sequence number is unique and increases
with every `schedule`, so two events due at the same time run in the order they were
scheduled, and the heap never compares callbacks. `run(until)` pops and calls events
in order until the next one is due after ``until``, then leaves the clock at ``until``.

**Three queues, one order.** Popping a heap costs its depth, and a large run keeps about
a thousand timers pending (one per running request, one report per worker). So events
wait in one of three queues, chosen for speed alone:

- the **period lane**: every worker reports once per report interval, and events that
  are all scheduled the same delay ahead (`after_period`) come due in the order they
  were scheduled, so they wait in a FIFO queue: O(1) to add and take (Node.js keeps its
  timers in one list per duration for the same reason);
- the **near heap**: events due within moments of being scheduled (datagrams in
  transit, `soon`). Only a few are pending at a time, so its heap is shallow;
- the **heap**: everything else.

The loop takes whichever head is earliest by ``(time, sequence)``, so the order is exactly
the one a single heap would give; which queue an event waits in changes only the speed.
The queues are private: everything, the network's hot path included, schedules through
the methods (`schedule`, `at`, `soon`, `after_period`).

Tests and benchmarks that wait for a state (the gossip tests, `sllm bench gossip`) run in
steps until a predicate holds: `run_until_true(predicate, timeout, step)` returns the
virtual seconds it took, or None at the timeout.

This is the simulator's hot path (millions of events per simulated hour), so the loop
does nothing but pop, set the clock and call: no logging, no per-event objects beyond
the heap tuple, no cancellation bookkeeping. A caller that needs to cancel an event
checks a generation number in its callback instead (a stale event is a cheap no-op).
`run` can call a check after every event, for tests that assert invariants; the loop pays
one comparison per event for it.

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

# `run_until_true` checks its predicate this often by default (virtual seconds): a quarter
# of a gossip round (0.2 s), fine enough to time what gossip does, coarse enough that
# checking a predicate over a whole cluster costs little next to the events between.
DEFAULT_STEP_S = 0.05


class Kernel:
    """The clock and the pending events of one simulation."""

    __slots__ = ("_heap", "_lane", "_near", "_sequence", "events", "now", "period_s")

    def __init__(self, start: float = 0.0, period_s: float = 1.0) -> None:
        if not period_s > 0.0:
            raise ValueError(f"the period must be > 0 seconds, not {period_s!r}")
        self.now = start
        self.period_s = period_s  # the one delay of `after_period`
        self.events = 0  # events run so far
        # The three queues (see the module docstring); only the methods below touch them.
        self._heap: list[Event] = []
        self._near: list[Event] = []  # a heap of events due within moments (`soon`)
        self._lane: deque[Event] = deque()  # `after_period` events, due in this order
        self._sequence = itertools.count()

    def __len__(self) -> int:
        """Events pending."""
        return len(self._heap) + len(self._near) + len(self._lane)

    def schedule(self, delay: float, callback: Callable[[T], None], argument: T) -> None:
        """Run ``callback(argument)`` `delay` seconds from now (a negative delay means now)."""
        when = self.now + delay if delay > 0.0 else self.now
        heappush(self._heap, (when, next(self._sequence), callback, argument))

    def at(self, when: float, callback: Callable[[T], None], argument: T) -> None:
        """Run ``callback(argument)`` at time `when` (a time in the past means now)."""
        now = self.now
        when = when if when > now else now
        heappush(self._heap, (when, next(self._sequence), callback, argument))

    def soon(self, delay: float, callback: Callable[[T], None], argument: T) -> None:
        """`schedule`, for an event due within moments (see the module): a datagram's
        transit, say. Any delay is correct; a short one is fast."""
        when = self.now + delay if delay > 0.0 else self.now
        heappush(self._near, (when, next(self._sequence), callback, argument))

    def after_period(self, callback: Callable[[T], None], argument: T) -> None:
        """Run ``callback(argument)`` `period_s` from now, in the lane (see the module)."""
        self._lane.append((self.now + self.period_s, next(self._sequence), callback, argument))

    def run_for(self, seconds: float, check: Callable[[], None] | None = None) -> int:
        """`run` for `seconds` from now."""
        return self.run(self.now + seconds, check)

    def run_until_true(
        self, predicate: Callable[[], bool], timeout: float, step: float = DEFAULT_STEP_S
    ) -> float | None:
        """Run in `step`s until `predicate()` holds; the virtual seconds it took, or None
        when `timeout` seconds pass first (for tests and benchmarks that wait on a state)."""
        if not step > 0.0:
            raise ValueError(f"the step must be > 0 seconds, not {step!r}")
        start = self.now
        while not predicate():
            if self.now - start >= timeout:
                return None
            self.run(self.now + step)
        return self.now - start

    def next_time(self) -> float | None:
        """When the next event is due, or None when nothing is pending."""
        heads = [queue[0][0] for queue in (self._heap, self._near, self._lane) if queue]
        return min(heads, default=None)

    def run(self, until: float, check: Callable[[], None] | None = None) -> int:
        """Run every event due at or before `until`; return how many ran.

        The clock ends at `until` (or stays where it is if that is earlier). `check`, if
        given, is called after every event (for tests that assert invariants).
        """
        heap = self._heap
        near = self._near
        lane = self._lane
        pop = heappop
        pop_lane = lane.popleft
        ran = 0
        while True:
            # The earliest of the three heads; `source` is the heap it is in.
            event = heap[0] if heap else None
            source = heap
            if near and (event is None or near[0] < event):
                event = near[0]
                source = near
            if lane and (event is None or lane[0] < event):
                if lane[0][0] > until:
                    break
                when, _, callback, argument = pop_lane()
            elif event is None or event[0] > until:
                break
            else:
                when, _, callback, argument = pop(source)
            self.now = when
            callback(argument)
            ran += 1
            if check is not None:
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

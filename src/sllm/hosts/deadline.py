"""One timer kept at a state machine's next deadline, written once for every host.

Why it exists: a sans-I/O state machine (a core `Node`, a `WorkerState`'s keep-alive, a
gossip `Membership`) says when it next needs time with ``next_deadline()``. Its host
keeps ONE timer there, on either driver's clock, and the rules are the same everywhere,
so they live here:

- `arm` after every delivery and tick: a deadline earlier than the pending timer's arms
  a new one; a later one arms nothing (the pending timer comes due early, the state
  machine's tick ignores it, and the host re-arms at the new deadline);
- timers cannot be cancelled (see `sllm.hosts.driver`), so each carries the epoch and
  the time it was armed for; one that matches neither is a no-op: superseded by an
  earlier deadline, or left by a process that has since crashed (`forget`);
- a live timer calls `on_due()`, which ticks the state machine and re-arms.

Users: `sllm.hosts.node.NodeHost`, `sllm.hosts.worker.WorkerHost` (its keep-alive) and
`sllm.sim.participants` (any participant on the simulator's kernel).

A past deadline is armed as it is, not clamped to now: both drivers run a past time at
once (the kernel's ``at``, asyncio's ``call_at``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sllm.hosts.driver import Callback

CallAt = Callable[[float, Callback, Any], None]


class DeadlineTimer:
    """The one pending timer of one state machine (see the module docstring)."""

    __slots__ = ("_call_at", "_on_due", "due", "epoch")

    def __init__(self, *, call_at: CallAt, on_due: Callable[[], None]) -> None:
        self._call_at = call_at
        self._on_due = on_due
        self.epoch = 0
        self.due: float | None = None  # when the pending timer comes due; None: none

    def arm(self, deadline: float | None) -> None:
        """Have a timer at `deadline` (None: nothing to wait for), moved earlier if needed."""
        if deadline is None:
            return
        due = self.due
        if due is not None and due <= deadline:
            return
        self.due = deadline
        self._call_at(deadline, self._fire, (self.epoch, deadline))

    def forget(self) -> None:
        """The state machine is gone or replaced: the pending timer becomes a no-op."""
        self.epoch += 1
        self.due = None

    def _fire(self, armed: tuple[int, float]) -> None:
        epoch, at = armed
        if epoch != self.epoch or at != self.due:
            return  # superseded by an earlier deadline, or a crashed process's timer
        self.due = None
        self._on_due()

"""The coordinator host: the core `Coordinator` behind an address, once for both drivers.

Why it exists: the live coordinator (`sllm.runtime.coordinator.CoordinatorServer`) and the
simulator's (`sllm.sim.cluster.CentralizedCluster`) host the core the same way, and the
live-versus-simulated replay test (`tests/hosts`) relies on it:

- every datagram goes to ``handle(message, now, source)``; the replies go back to the
  sender and the notices to the driver;
- a periodic timer calls ``expire(now)`` every `expiry_period` of the worker timeout, so
  a silent worker is dropped at most that late even when no request asks;
- with a held queue (the core's ``hold_s``), another calls ``release(now)`` every
  `RELEASE_PERIOD_S` and sends each decision to whoever asked for it: a sender's
  address, or for a request the process placed itself (its front door: ``reply_to``
  None) the `decided_here` callback.

`start` and `kill` advance an epoch, so a killed coordinator's expiry timer is stale.

Not handled yet: a standby coordinator (a restarted one relearns the cluster from reports).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, cast

from sllm.core.coordinator import RELEASE_PERIOD_S, Coordinator
from sllm.hosts.driver import A, Driver
from sllm.wire import Message, ScheduleResponse

# Expiry runs this many times per WORKER_TIMEOUT, so a dead worker is dropped at most a
# quarter-timeout late; bounded below so a tiny timeout in a test does not spin the loop.
EXPIRY_CHECKS_PER_TIMEOUT = 4
EXPIRY_MIN_PERIOD_S = 0.05


def expiry_period(worker_timeout_s: float) -> float:
    """How often the host expires silent workers (see the constants)."""
    return max(EXPIRY_MIN_PERIOD_S, worker_timeout_s / EXPIRY_CHECKS_PER_TIMEOUT)


class CoordinatorHost(Generic[A]):
    """The core coordinator, its replies and its expiry timer."""

    def __init__(
        self,
        driver: Driver[A],
        *,
        worker_timeout_s: float,
        source_of: Callable[[A], str] | None = None,
    ) -> None:
        self.driver = driver
        self.core: Coordinator | None = None
        self.epoch = 0
        self.expiry_period_s = expiry_period(worker_timeout_s)
        # The host part of an address, for the core's limit on new workers per source;
        # None where the driver's addresses have no host part (the simulator's names).
        self.source_of = source_of
        # Where a held request's decision goes when this process asked itself (its front
        # door placed it): None, nowhere.
        self.decided_here: Callable[[ScheduleResponse], None] | None = None

    @property
    def up(self) -> bool:
        return self.core is not None

    def start(self, core: Coordinator) -> None:
        """Serve with `core` (a fresh one after a restart) and start expiring."""
        self.epoch += 1
        self.core = core
        self.driver.call_later(self.expiry_period_s, self._expire, self.epoch)
        if core.hold_s is not None:
            self.driver.call_later(RELEASE_PERIOD_S, self._release, self.epoch)

    def kill(self) -> None:
        self.epoch += 1
        self.core = None

    def receive(self, message: Message, sender: A) -> None:
        core = self.core
        if core is None:
            return
        source_of = self.source_of
        source = "" if source_of is None else source_of(sender)
        outcome = core.handle(message, self.driver.now(), source, reply_to=sender)
        send = self.driver.send
        for reply in outcome.replies:
            send(sender, reply)
        if outcome.notices:
            self.driver.notify(outcome.notices, sender)

    def _expire(self, epoch: int) -> None:
        core = self.core
        if epoch != self.epoch or core is None:
            return
        notices = core.expire(self.driver.now())
        if notices:
            self.driver.notify(notices, None)
        self.driver.call_later(self.expiry_period_s, self._expire, epoch)

    def _release(self, epoch: int) -> None:
        """Send the decisions of the held requests that can go (see the module)."""
        core = self.core
        if epoch != self.epoch or core is None:
            return
        for reply_to, decision in core.release(self.driver.now()):
            if reply_to is None:
                if self.decided_here is not None:
                    self.decided_here(decision)
            else:
                self.driver.send(cast(A, reply_to), decision)
        self.driver.call_later(RELEASE_PERIOD_S, self._release, epoch)

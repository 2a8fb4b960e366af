"""The one deadline timer (`sllm.hosts.deadline`), and that every host keeps it.

Its rules used to be written three times (the node host, the worker host's keep-alive,
the simulator's participants); these tests pin them once on the real kernel, and check
that each of the three hosts uses this one timer rather than a copy.
"""

from __future__ import annotations

import random
from typing import Any

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.membership import GossipConfig
from sllm.core.worker import WorkerResources, WorkerState
from sllm.engines.sim import SimEngine
from sllm.hosts.deadline import DeadlineTimer
from sllm.hosts.driver import Callback
from sllm.hosts.node import NodeHost
from sllm.hosts.worker import WorkerHost
from sllm.sim.hosts import KernelDriver
from sllm.sim.kernel import Kernel
from sllm.sim.network import Network
from sllm.sim.participants import Participants, membership_cluster


class Ticks:
    """A timer on a kernel that records when it came due."""

    def __init__(self) -> None:
        self.kernel = Kernel()
        self.calls: list[float] = []  # every time a kernel timer was asked for
        self.due: list[float] = []
        self.timer = DeadlineTimer(call_at=self._call_at, on_due=self._on_due)

    def _call_at(self, when: float, callback: Callback, argument: Any) -> None:
        self.calls.append(when)
        self.kernel.at(when, callback, argument)

    def _on_due(self) -> None:
        self.due.append(self.kernel.now)


def test_an_earlier_deadline_supersedes_the_pending_timer() -> None:
    ticks = Ticks()
    ticks.timer.arm(5.0)
    ticks.timer.arm(2.0)
    ticks.kernel.run(10.0)
    assert ticks.calls == [5.0, 2.0]
    assert ticks.due == [2.0]  # the timer at 5.0 was superseded: a no-op


def test_a_later_or_equal_deadline_arms_nothing() -> None:
    ticks = Ticks()
    ticks.timer.arm(2.0)
    ticks.timer.arm(2.0)
    ticks.timer.arm(7.0)
    ticks.timer.arm(None)
    ticks.kernel.run(10.0)
    assert ticks.calls == [2.0]
    assert ticks.due == [2.0]  # due early; the host's tick re-arms at its new deadline


def test_a_forgotten_timer_is_stale_even_when_re_armed_for_the_same_time() -> None:
    ticks = Ticks()
    ticks.timer.arm(3.0)
    ticks.timer.forget()  # the process crashed; a new one wants the same instant
    ticks.timer.arm(3.0)
    ticks.kernel.run(10.0)
    assert ticks.calls == [3.0, 3.0]
    assert ticks.due == [3.0]  # once: the old process's timer did nothing


def test_it_re_arms_after_coming_due() -> None:
    ticks = Ticks()
    ticks.timer.arm(1.0)
    ticks.kernel.run(1.5)
    assert ticks.timer.due is None
    ticks.timer.arm(4.0)
    ticks.kernel.run(10.0)
    assert ticks.due == [1.0, 4.0]


def test_every_host_keeps_this_one_timer() -> None:
    catalog = served_catalog()
    kernel = Kernel()
    network = Network(kernel, random.Random(0))
    driver = KernelDriver(kernel, network, "w")
    state = WorkerState("w", WorkerResources(), catalog, CostModel(), {}, now=0.0)
    worker = WorkerHost(driver, state, SimEngine(catalog, CostModel()))
    node = NodeHost(driver, worker, address_of=lambda name: (name, 1), destination_of=str)
    assert type(worker.keep_alive) is DeadlineTimer
    assert type(node.timer) is DeadlineTimer
    participants = Participants(seed=0)
    members = membership_cluster(participants, 3, GossipConfig())
    seat_timers = [participants._seats[member.address].timer for member in members]
    assert all(type(timer) is DeadlineTimer for timer in seat_timers)
    assert all(timer.due is not None for timer in seat_timers)  # each one armed

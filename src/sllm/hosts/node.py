"""The node host: a decentralized `sllm.core.node.Node` and its worker, once for both drivers.

Why it exists: the live node (`sllm.runtime.node.NodeServer`) and the simulator's nodes
(`sllm.sim.decentralized.DecentralizedCluster`) host the core node the same way:

- an ``inference_request`` goes to the node's worker (`worker`, a
  `sllm.hosts.worker.WorkerHost` around the same `WorkerState` the node reports by gossip);
- every other datagram goes to ``Node.handle(message, sender, now)``, and the `Send`s it
  returns go out through the driver; so do those of ``tick(now)``;
- ONE timer is kept at ``Node.next_deadline()`` (`sllm.hosts.deadline.DeadlineTimer`:
  moved earlier when a new deadline is earlier; a timer superseded that way, or left by a
  killed process, is a no-op);
- what the node noticed goes to the driver's `notify`;
- a decision asked for in this process (`place_here`, the node's HTTP front door) goes to
  `decided` instead of the network: with probing it comes later, after the replies.

The core speaks in ``(host, port)`` addresses. A driver whose addresses are something else
(the simulator's node names) passes `address_of` and `destination_of` to translate.

Not handled yet: a node without a worker (a scheduler-only member).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic

from sllm.core.membership import Address, Send
from sllm.core.node import LOCAL_REQUESTER, Node
from sllm.hosts.deadline import DeadlineTimer
from sllm.hosts.driver import A, Driver
from sllm.hosts.worker import WorkerHost
from sllm.wire import InferenceRequest, Message, ScheduleRequest, ScheduleResponse


class NodeHost(Generic[A]):
    """One node process: its core `Node`, its worker and its one timer."""

    def __init__(
        self,
        driver: Driver[A],
        worker: WorkerHost[A],
        *,
        address_of: Callable[[A], Address],
        destination_of: Callable[[Address], A],
    ) -> None:
        self.driver = driver
        self.worker = worker
        self.address_of = address_of
        self.destination_of = destination_of
        self.node: Node | None = None
        self.timer = DeadlineTimer(call_at=driver.call_at, on_due=self._tick)
        # Where decisions asked for by `place_here` go; None drops them.
        self.decided: Callable[[ScheduleResponse], None] | None = None

    def serve(self, node: Node) -> None:
        """Run `node` (built around ``worker.state``) from now on."""
        self.timer.forget()
        self.node = node
        self.arm()

    def kill(self) -> None:
        """Stop the process: the node and its worker go, their timers become stale."""
        self.timer.forget()
        self.node = None
        self.worker.kill()

    def receive(self, message: Message, sender: A) -> None:
        if type(message) is InferenceRequest:
            if self.worker.up:
                self.worker.submit(message, sender)
            return
        node = self.node
        if node is None:
            return
        self.send(node.handle(message, self.address_of(sender), self.driver.now()))
        self.after(node, sender)

    def place_here(self, request: ScheduleRequest) -> bool:
        """Ask the node for a decision in this process; it goes to `decided`, now or once
        the candidates have replied. False when the node is not running."""
        node = self.node
        if node is None:
            return False
        self.send(node.handle(request, LOCAL_REQUESTER, self.driver.now()))
        self.after(node, None)
        return True

    def send(self, sends: list[Send]) -> None:
        driver_send = self.driver.send
        destination_of = self.destination_of
        for item in sends:
            if item.to == LOCAL_REQUESTER:
                if self.decided is not None and isinstance(item.message, ScheduleResponse):
                    self.decided(item.message)
                continue
            driver_send(destination_of(item.to), item.message)

    def after(self, node: Node, sender: A | None) -> None:
        """Pass on what the node noticed, and keep its timer at its next deadline."""
        notices = node.take_notices()
        if notices:
            self.driver.notify(notices, sender)
        self.arm()

    def arm(self) -> None:
        """Keep one timer at the node's next deadline, moving it earlier when needed."""
        node = self.node
        if node is not None:
            self.timer.arm(node.next_deadline())

    def _tick(self) -> None:
        node = self.node
        if node is None:
            return
        self.send(node.tick(self.driver.now()))
        self.after(node, None)

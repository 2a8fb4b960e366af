"""The driver interface: what a host needs from the world it runs in.

Why it exists: a host (`sllm.hosts`) turns a core object's decisions into timers and
messages. That logic is the same on the real clock and on the simulator's, so it is
written once, against this small interface, and each world provides a driver:

- the live runtime's asyncio driver (`sllm.runtime.service.AsyncioDriver`):
  ``loop.call_at``, ``Endpoint.send``, ``time.monotonic``;
- the simulator's kernel driver (`sllm.sim.hosts.KernelDriver`): `sllm.sim.kernel.Kernel`
  and `sllm.sim.network.Network`.

A driver is generic in the address type: the live runtime addresses a host by
``(host, port)``, the simulator by a node name.

Timers cannot be cancelled: a host that needs to forget one checks a generation number
(its epoch) in the callback, which costs the simulator's hot loop nothing.

Not handled yet: a driver for a host in another process (every host is one process's).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, TypeVar

from sllm.core.coordinator import Notice
from sllm.wire import Message

# A host's address in its world: ``(host, port)`` live, a node name in the simulator.
A = TypeVar("A", bound=Hashable)
A_contra = TypeVar("A_contra", bound=Hashable, contravariant=True)

Callback = Callable[[Any], None]


class Driver(Protocol[A_contra]):
    """The clock, the timers, the network and the notices of one host."""

    def now(self) -> float:
        """Seconds on the host's monotonic clock."""
        ...

    def call_at(self, when: float, callback: Callback, argument: Any) -> None:
        """Run ``callback(argument)`` at `when` (a time in the past means now)."""
        ...

    def call_later(self, delay: float, callback: Callback, argument: Any) -> None:
        """Run ``callback(argument)`` `delay` seconds from now."""
        ...

    def send(self, destination: A_contra, message: Message) -> None:
        """Send one datagram; a lost one is lost silently, as UDP is."""
        ...

    def send_instant(self, destination: A_contra, message: Message) -> None:
        """`send`, for a message whose transit time the simulator may leave out (worker
        reports and start acknowledgements: see `sllm.sim.network`, "Instant delivery").
        The live driver sends it like any other."""
        ...

    def notify(self, notices: Sequence[Notice], sender: A_contra | None) -> None:
        """What the core noticed: logged live, collected in the simulator. `sender` is the
        address of the datagram that caused them, None for a timer."""
        ...

"""The asyncio driver: the hosts (`sllm.hosts`) on the real clock and a real UDP socket.

Time is ``time.monotonic()`` (what the event loop's clock reads), timers are
``loop.call_at`` on the running loop, datagrams go
through the service's `Endpoint` (which shrinks an oversized one to fit), and notices go
to the service's logging function. The simulator's driver is `sllm.sim.hosts`.

Not handled yet: timers survive a stopped service; the hosts' epochs make them no-ops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from sllm.core.coordinator import Notice
from sllm.hosts.driver import Callback
from sllm.runtime.udp import Address, Endpoint
from sllm.wire import Message

NoticeSink = Callable[[Sequence[Notice], Address | None], None]


def _ignore(notices: Sequence[Notice], sender: Address | None) -> None:
    """Notices nobody asked for (a worker's host makes none)."""


class AsyncioDriver:
    """One service's clock, timers, socket and notice log."""

    def __init__(self, notices: NoticeSink = _ignore) -> None:
        self.endpoint: Endpoint | None = None  # set once the service has bound it
        self.notices = notices

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callback, argument: Any) -> None:
        asyncio.get_running_loop().call_at(when, callback, argument)

    def call_later(self, delay: float, callback: Callback, argument: Any) -> None:
        asyncio.get_running_loop().call_later(delay, callback, argument)

    def send(self, destination: Address, message: Message) -> None:
        if self.endpoint is not None:
            self.endpoint.send(message, destination)

    def send_instant(self, destination: Address, message: Message) -> None:
        self.send(destination, message)

    def notify(self, notices: Sequence[Notice], sender: Address | None) -> None:
        self.notices(notices, sender)

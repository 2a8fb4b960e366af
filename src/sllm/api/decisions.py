"""Decisions that come later to a process's own front door, by request id.

Why it exists: the front door of a coordinator or of a decentralized node asks its own
core for a decision, and the answer is not always immediate: a node that probes decides
once its candidates reply, and with a held queue (ADMISSION_HOLD) the first answer may be
``hold``, whose decision the host sends later. Both wait here the same way:

- `decide` gives the request a key of this process's own, so that two clients sending
  the same ``X-Request-Id`` cannot take each other's decision (the core sees that key),
  asks for the first answer, and after a ``hold`` waits for the decision it promised, at
  the latest its ``estimated_wait_s`` plus `HOLD_GRACE_S`, after which the request is
  refused as over the deadline (the core that held it was restarted, and forgot it);
- `decided` (the host's callback) queues each decision for its key, and `next` waits for
  the next one (a node's probing answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from sllm.core.coordinator import HOLD, OVER_DEADLINE, refusal
from sllm.wire import ScheduleRequest, ScheduleResponse

# How much later than a hold's latest decision time the front door still waits for it:
# the host releases every quarter second, so this is reached only if the core forgot it.
HOLD_GRACE_S = 2.0


class PendingDecisions:
    """The decisions this process's front door waits for (see the module)."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[ScheduleResponse]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._queues)

    async def decide(
        self,
        request: ScheduleRequest,
        first_answer: Callable[[ScheduleRequest], Awaitable[ScheduleResponse]],
    ) -> ScheduleResponse:
        """The decision for `request`: `first_answer` asks the core for it under this
        process's key (the request's `request_id`); a ``hold`` is waited out here."""
        self._seq += 1
        key = f"front-door-{self._seq}"
        self._queues[key] = asyncio.Queue()
        try:
            decision = await first_answer(dataclasses.replace(request, request_id=key))
            if decision.action == HOLD:
                decision = await self._after_hold(key, decision)
            return dataclasses.replace(decision, request_id=request.request_id)
        finally:
            del self._queues[key]

    def decided(self, decision: ScheduleResponse) -> None:
        queue = self._queues.get(decision.request_id)
        if queue is not None:
            queue.put_nowait(decision)

    async def next(self, key: str, within_s: float) -> ScheduleResponse:
        """The next decision for `key`; TimeoutError when none comes within `within_s`."""
        return await asyncio.wait_for(self._queues[key].get(), within_s)

    async def _after_hold(self, key: str, hold: ScheduleResponse) -> ScheduleResponse:
        """The decision a ``hold`` answer promised, or a refusal over the deadline."""
        try:
            return await self.next(key, hold.estimated_wait_s + HOLD_GRACE_S)
        except TimeoutError:
            return refusal(key, OVER_DEADLINE)

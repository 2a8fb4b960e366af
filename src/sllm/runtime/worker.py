"""The live worker: a `WorkerState` on the real clock, reporting to the coordinator over UDP.

It reports its state every REPORT_INTERVAL (and once at start, so a coordinator learns it
at once), runs inference requests that arrive as datagrams, and carries out the state
machine's actions with an engine. With the sim engine a load or a request is a timer on
the event loop; its length comes from the same cost model the simulator uses.

The coordinator's name is resolved again before every report, so a coordinator that
comes back at a new address (a restarted container) is found without restarting workers.
On stop, the worker sends one last report with ``ready = false`` so that the coordinator
stops placing work on it before the timeout would tell it so.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Mapping

from sllm.core.cost import CostModel, ModelInfo
from sllm.core.tiers import Tier
from sllm.core.worker import (
    Action,
    Evict,
    Finished,
    WorkerResources,
    WorkerState,
    prestaged,
)
from sllm.engines.sim import SimEngine, Timer, fire
from sllm.logs import log_event
from sllm.runtime.udp import Address, Endpoint
from sllm.wire import Codec, InferenceRequest, InferenceResult, Message

log = logging.getLogger("sllm.worker")

# A lookup failure is logged once per this many seconds, not once per report.
UNRESOLVED_LOG_PERIOD_S = 30.0


class WorkerServer:
    """Runs requests with the sim engine and reports to the coordinator until stopped."""

    name = "worker"

    def __init__(
        self,
        worker_id: str,
        host: str,
        port: int,
        coordinator: Address,
        codec: Codec,
        catalog: Mapping[str, ModelInfo],
        cost: CostModel,
        resources: WorkerResources,
        report_interval: float,
        advertise_host: str = "",
        prestage: Tier | None = Tier.DISK,
    ) -> None:
        self.host = host
        self.port = port
        self.coordinator = coordinator
        self.codec = codec
        self.report_interval = report_interval
        self.advertise_host = advertise_host
        self.state = WorkerState(
            worker_id,
            resources,
            catalog,
            cost,
            prestaged(catalog, resources, prestage),
            now=time.monotonic(),
        )
        self.engine = SimEngine(catalog, cost)
        self.endpoint: Endpoint | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._requesters: dict[str, Address] = {}
        self._keep_alive: asyncio.TimerHandle | None = None
        self._unresolved_logged_at = -UNRESOLVED_LOG_PERIOD_S

    @property
    def address(self) -> Address:
        assert self.endpoint is not None
        return self.endpoint.address

    async def start(self) -> None:
        self.endpoint = await Endpoint.bind(self.codec, self.host, self.port, self._on_message)
        host, port = self.endpoint.address
        log_event(
            log,
            logging.INFO,
            "listening",
            service=self.name,
            worker=self.state.worker_id,
            host=host,
            port=port,
            coordinator=f"{self.coordinator[0]}:{self.coordinator[1]}",
        )
        self._reporter = asyncio.create_task(self._report_forever())

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
        if self._keep_alive is not None:
            self._keep_alive.cancel()
        self.state.ready = False
        await self._send_report()  # tell the coordinator at once that we are going
        if self.endpoint is not None:
            self.endpoint.close()

    # -- reports -----------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await self._send_report()
            await asyncio.sleep(self.report_interval)

    async def _send_report(self) -> None:
        if self.endpoint is None:
            return
        target = await self._resolve_coordinator()
        if target is None:
            return
        _, port = self.endpoint.address
        report = self.state.report(
            time.monotonic(), self.advertise_host, port, timestamp=time.time()
        )
        self.endpoint.send(report, target)

    async def _resolve_coordinator(self) -> Address | None:
        host, port = self.coordinator
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
        except OSError as error:
            now = time.monotonic()
            if now - self._unresolved_logged_at >= UNRESOLVED_LOG_PERIOD_S:
                self._unresolved_logged_at = now
                log_event(
                    log, logging.WARNING, "coordinator_unresolved", host=host, error=str(error)
                )
            return None
        address = infos[0][4]
        return str(address[0]), int(address[1])

    # -- requests ----------------------------------------------------------------------

    def _on_message(self, message: Message, sender: Address) -> None:
        if not isinstance(message, InferenceRequest):
            log_event(log, logging.DEBUG, "unexpected_message", type=message.TYPE)
            return
        self._requesters[message.request_id] = sender
        self._carry_out(self.state.submit(message, time.monotonic()))

    def _carry_out(self, actions: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        for action in actions:
            if isinstance(action, Finished):
                self._send_result(action)
            elif isinstance(action, Evict):
                log_event(
                    log,
                    logging.DEBUG,
                    "model_evicted",
                    model=action.model,
                    source=action.source.name,
                    destination=action.destination.name,
                )
            for timer in self.engine.timers(action):
                loop.call_later(timer.delay_s, self._fire, timer)
        self._schedule_keep_alive()

    def _fire(self, timer: Timer) -> None:
        self._carry_out(fire(self.state, timer, time.monotonic()))

    def _schedule_keep_alive(self) -> None:
        deadline = self.state.next_deadline()
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            self._keep_alive = None
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._keep_alive = asyncio.get_running_loop().call_later(delay, self._expire_idle)

    def _expire_idle(self) -> None:
        self._keep_alive = None
        self._carry_out(self.state.tick(time.monotonic()))

    def _send_result(self, finished: Finished) -> None:
        requester = self._requesters.pop(finished.request_id, None)
        if requester is None or self.endpoint is None:
            return
        result = InferenceResult(
            request_id=finished.request_id,
            worker_id=self.state.worker_id,
            ok=finished.ok,
            reason=finished.reason,
            cold_start=finished.cold_start,
            queue_s=finished.queue_s,
            ttft_s=finished.ttft_s,
            e2e_s=finished.e2e_s,
        )
        self.endpoint.send(result, requester)

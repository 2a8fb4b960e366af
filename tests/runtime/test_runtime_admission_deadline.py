"""The live coordinator's admission deadline and held queue: real UDP on 127.0.0.1,
hand-written reports."""

from __future__ import annotations

import asyncio
import socket
import time

from prometheus_client import CollectorRegistry

from sllm.catalog import served_catalog
from sllm.core.coordinator import HOLD, OVER_DEADLINE
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.metrics import CoordinatorCollector
from sllm.wire import Codec, Message, ScheduleRequest, ScheduleResponse, WorkerReport

SECRET = b"runtime-tests-admission-deadline1"
CATALOG = served_catalog()
MODEL = next(iter(CATALOG))
WAIT_S = 5.0


def busy_report(queue_depth: int = 60, seq: int = 1) -> WorkerReport:
    """One slot, the model warm, `queue_depth` requests ahead (60: minutes of waiting)."""
    return WorkerReport(
        node_id="busy",
        host="127.0.0.1",
        port=9,
        http_port=0,
        models={MODEL: int(Tier.GPU)},
        models_omitted=0,
        queue_depth=queue_depth,
        queue_capacity=64,
        running=1,
        slots=1,
        gpu_utilization=1.0,
        memory_used=10**9,
        memory_total=141 * 10**9,
        load_backlog_s=0.0,
        ready=True,
        seq=seq,
        timestamp=time.time(),
    )


def coordinator(deadline_s: float | None, hold_s: float | None = None) -> CoordinatorServer:
    return CoordinatorServer(
        "127.0.0.1",
        0,
        Codec(SECRET),
        "startup-aware",
        CATALOG,
        CostModel(),
        60.0,
        seed=1,
        http_port=0 if hold_s is not None else None,
        admission_deadline_s=deadline_s,
        admission_hold_s=hold_s,
    )


class Asker:
    """A client socket on 127.0.0.1 that signs what it sends."""

    def __init__(self, server: CoordinatorServer) -> None:
        self.server = server
        self.codec = Codec(SECRET)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.nonce = 0

    def send(self, message: Message) -> None:
        self.nonce += 1
        self.sock.sendto(self.codec.encode(message, time.time(), self.nonce), self.server.address)

    async def answer(self, within_s: float = WAIT_S) -> ScheduleResponse:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), within_s)
        answer = self.codec.decode(data, time.time())
        assert isinstance(answer, ScheduleResponse)
        return answer

    async def first_decision(self, ask: ScheduleRequest) -> ScheduleResponse:
        """The first answer once the busy report is in the view."""
        deadline = time.monotonic() + WAIT_S
        while True:
            self.send(ask)
            answer = await self.answer()
            if answer.reason != "no_workers" or time.monotonic() > deadline:
                return answer


def ask(request_id: str = "r1") -> ScheduleRequest:
    return ScheduleRequest(
        request_id=request_id, model=MODEL, priority=0, prompt_tokens=512, output_tokens=512
    )


async def decide(deadline_s: float | None) -> ScheduleResponse:
    server = coordinator(deadline_s)
    await server.start()
    asker = Asker(server)
    try:
        asker.send(busy_report())
        return await asker.first_decision(ask())
    finally:
        asker.sock.close()
        await server.stop()


async def test_a_request_over_the_deadline_is_refused_at_once() -> None:
    answer = await decide(30.0)
    assert (answer.action, answer.reason) == ("reject", OVER_DEADLINE)
    assert answer.estimated_wait_s > 30.0


async def test_without_a_deadline_the_same_request_is_placed() -> None:
    answer = await decide(None)
    assert answer.action == "serve" and answer.worker_id == "busy"


async def test_a_held_request_is_answered_hold_then_placed_once_the_queue_drains() -> None:
    """With ADMISSION_HOLD the same request is held; once the worker reports a short
    queue, the coordinator sends the decision to the asker's address."""
    server = coordinator(30.0, hold_s=30.0)
    await server.start()
    asker = Asker(server)
    try:
        asker.send(busy_report())
        held = await asker.first_decision(ask())
        assert (held.action, held.reason) == (HOLD, "held")
        assert 0 < held.estimated_wait_s <= 30.0
        metrics = CollectorRegistry()
        metrics.register(CoordinatorCollector(server.core))
        assert metrics.get_sample_value("sllm_held_queue_length") == 1
        asker.send(busy_report(queue_depth=1, seq=2))
        decision = await asker.answer()
        assert (decision.request_id, decision.action, decision.worker_id) == ("r1", "serve", "busy")
        assert metrics.get_sample_value("sllm_held_queue_length") == 0
        assert metrics.get_sample_value("sllm_held_requests_total") == 1
    finally:
        asker.sock.close()
        await server.stop()


async def test_the_front_door_waits_for_a_held_requests_decision() -> None:
    """The coordinator's own front door (in process) holds the same way: its placement
    returns the decision, under the caller's request id, once the queue drains."""
    server = coordinator(30.0, hold_s=30.0)
    await server.start()
    asker = Asker(server)
    try:
        asker.send(busy_report())
        await asker.first_decision(ask("probe"))  # the report is in; "probe" is held too
        assert server.front_door is not None
        placing = asyncio.ensure_future(server.front_door.place(ask("same-id-as-a-client")))
        deadline = time.monotonic() + WAIT_S
        while len(server.core.held) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not placing.done()
        asker.send(busy_report(queue_depth=1, seq=2))
        decision = await asyncio.wait_for(placing, WAIT_S)
        assert (decision.request_id, decision.action) == ("same-id-as-a-client", "serve")
        assert len(server.held_here) == 0  # the front door's key is closed
    finally:
        asker.sock.close()
        await server.stop()

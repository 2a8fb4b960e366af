"""The live coordinator's admission deadline: real UDP on 127.0.0.1, a hand-written report."""

from __future__ import annotations

import asyncio
import socket
import time

from sllm.catalog import served_catalog
from sllm.core.coordinator import OVER_DEADLINE
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.runtime.coordinator import CoordinatorServer
from sllm.wire import Codec, ScheduleRequest, ScheduleResponse, WorkerReport

SECRET = b"runtime-tests-admission-deadline1"
CATALOG = served_catalog()
MODEL = next(iter(CATALOG))
WAIT_S = 5.0


def busy_report() -> WorkerReport:
    """One slot, the model warm, 60 requests ahead: minutes of waiting."""
    return WorkerReport(
        node_id="busy",
        host="127.0.0.1",
        port=9,
        http_port=0,
        models={MODEL: int(Tier.GPU)},
        models_omitted=0,
        queue_depth=60,
        queue_capacity=64,
        running=1,
        slots=1,
        gpu_utilization=1.0,
        memory_used=10**9,
        memory_total=141 * 10**9,
        load_backlog_s=0.0,
        ready=True,
        seq=1,
        timestamp=time.time(),
    )


async def decide(deadline_s: float | None) -> ScheduleResponse:
    server = CoordinatorServer(
        "127.0.0.1",
        0,
        Codec(SECRET),
        "startup-aware",
        CATALOG,
        CostModel(),
        60.0,
        seed=1,
        admission_deadline_s=deadline_s,
    )
    await server.start()
    codec = Codec(SECRET)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        sock.sendto(codec.encode(busy_report(), time.time(), 1), server.address)
        ask = ScheduleRequest(
            request_id="r1", model=MODEL, priority=0, prompt_tokens=512, output_tokens=512
        )
        deadline = time.monotonic() + WAIT_S
        nonce = 2
        while True:  # until the report has been applied and a decision names a worker
            sock.sendto(codec.encode(ask, time.time(), nonce), server.address)
            nonce += 1
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), WAIT_S)
            answer = codec.decode(data, time.time())
            assert isinstance(answer, ScheduleResponse)
            if answer.reason != "no_workers" or time.monotonic() > deadline:
                return answer
    finally:
        sock.close()
        await server.stop()


async def test_a_request_over_the_deadline_is_refused_at_once() -> None:
    answer = await decide(30.0)
    assert (answer.action, answer.reason) == ("reject", OVER_DEADLINE)
    assert answer.estimated_wait_s > 30.0


async def test_without_a_deadline_the_same_request_is_placed() -> None:
    answer = await decide(None)
    assert answer.action == "serve" and answer.worker_id == "busy"

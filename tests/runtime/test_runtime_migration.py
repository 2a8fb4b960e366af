"""A live worker migrates a running datagram request off to make room for a load.

A real `WorkerServer` on 127.0.0.1 (port 0) with a 20 GB GPU and two slots; a raw socket
plays the client, signing its datagrams with the cluster secret. Two long requests hold
both models the GPU has room for, and two more wait for a third model's load. Once they
have lost as much time as moving costs, the worker moves a request off: the running
one in the load's way that is the cheaper to move, answered ``migrated`` with the tokens it
produced, while the load starts and the waiting ones run.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from typing import Any

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import MIGRATED, WorkerResources
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec, InferenceRequest, InferenceResult, Message

SECRET = b"runtime-tests-cluster-secret-0003"
CATALOG = served_catalog()
GB = 10**9
RUNNING = ("llama-2-7b", "llama-3.2-3b")  # 13.5 GB and 6.4 GB: a 20 GB GPU holds no third
WAITING = "llama-3.2-1b"
LONG = 100_000  # output tokens: far more than the test lasts
WAIT_S = 10.0


async def test_a_running_request_migrates_and_the_waiting_ones_run(eventually: Any) -> None:
    # Every load (and what a move is worth, a load elsewhere) takes a fraction of a
    # second; each decode step 10 ms.
    fast = {"engine_start_s": 0.05, "remote_bandwidth_Bps": 100 * GB, "decode_overhead_s": 0.01}
    cost = CostModel().with_overrides(fast)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    reports = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # nobody reads them
    reports.bind(("127.0.0.1", 0))
    worker = WorkerServer(
        "w1",
        "127.0.0.1",
        0,
        reports.getsockname(),
        Codec(SECRET),
        CATALOG,
        cost,
        WorkerResources(gpu_bytes=20 * GB, slots=2, migrate=True),
        60.0,
        prestage=Tier.HOST,
    )
    codec = Codec(SECRET)
    received: list[Message] = []
    loop = asyncio.get_running_loop()

    async def listen() -> None:
        while True:
            data = await loop.sock_recv(client, 65536)
            received.append(codec.decode(data, time.time()))

    def send(request_id: str, model: str, output_tokens: int) -> None:
        request = InferenceRequest(
            request_id=request_id, model=model, prompt_tokens=64, output_tokens=output_tokens
        )
        datagram = codec.encode(request, time.time(), secrets.randbits(64))
        client.sendto(datagram, worker.address)

    def results() -> dict[str, InferenceResult]:
        return {m.request_id: m for m in received if isinstance(m, InferenceResult)}

    await worker.start()
    listener = asyncio.create_task(listen())
    try:
        for started, model in enumerate(RUNNING, start=1):
            send(f"long-{started - 1}", model, LONG)
            await eventually(lambda n=started: worker.state.running == n, WAIT_S, "running")
        send("short-0", WAITING, 4)
        send("short-1", WAITING, 4)
        await eventually(lambda: {"short-0", "short-1"} <= results().keys(), WAIT_S, "served")
        answers = results()
        assert answers["short-0"].ok and answers["short-1"].ok
        moved = answers["long-1"]  # the smaller model: the cheaper to load elsewhere
        assert (moved.ok, moved.reason) == (False, MIGRATED)
        assert 0 < moved.generated_tokens < LONG
        assert "long-0" not in answers  # still running here
        assert worker.state.migrated_total == 1
    finally:
        listener.cancel()
        await worker.stop()
        client.close()
        reports.close()

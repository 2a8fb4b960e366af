"""A live worker's reports say when the load under way ends.

A real `WorkerServer` on 127.0.0.1 (port 0), its checkpoints only in the store, whose
bandwidth makes a load of `MODEL` take about half a minute. A raw socket sends one
request and plays the coordinator: the next report lists the model as on the GPU (its
requests should come here) and says when its load ends, counting down.
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
from sllm.core.worker import WorkerResources
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec, InferenceRequest, WorkerReport

SECRET = b"runtime-tests-cluster-secret-0004"
CATALOG = served_catalog()
GB = 10**9
MODEL = "llama-2-7b"  # 13.5 GB: about 27 s at 0.5 GB/s
WAIT_S = 10.0


async def test_a_report_says_when_the_load_under_way_ends(eventually: Any) -> None:
    cost = CostModel().with_overrides({"remote_bandwidth_Bps": 0.5 * GB})
    load_s = cost.load_time(CATALOG[MODEL].size_bytes, Tier.REMOTE)
    assert 25.0 < load_s < 40.0
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    coordinator = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    coordinator.bind(("127.0.0.1", 0))
    coordinator.setblocking(False)
    worker = WorkerServer(
        "w1",
        "127.0.0.1",
        0,
        coordinator.getsockname(),
        Codec(SECRET),
        CATALOG,
        cost,
        WorkerResources(gpu_bytes=20 * GB, slots=2),
        0.05,
        prestage=None,
    )
    codec = Codec(SECRET)
    reports: list[WorkerReport] = []
    loop = asyncio.get_running_loop()

    async def listen() -> None:
        while True:
            message = codec.decode(await loop.sock_recv(coordinator, 65536), time.time())
            if isinstance(message, WorkerReport):
                reports.append(message)

    await worker.start()
    listener = asyncio.create_task(listen())
    try:
        await eventually(lambda: bool(reports), WAIT_S, "a first report")
        assert reports[-1].loads == ()  # nothing loading yet
        request = InferenceRequest(request_id="r1", model=MODEL, prompt_tokens=64, output_tokens=4)
        sent = time.monotonic()
        client.sendto(codec.encode(request, time.time(), secrets.randbits(64)), worker.address)
        await eventually(lambda: len([r for r in reports if r.loads]) >= 2, WAIT_S, "loading")
        first, later = [report for report in reports if report.loads][:2]
        assert first.models[MODEL] == int(Tier.GPU)  # on its way: its requests come here
        assert [load.model for load in first.loads] == [MODEL]
        elapsed = time.monotonic() - sent
        assert load_s - elapsed - 1.0 <= first.loads[0].ready_in_s <= load_s
        assert later.loads[0].ready_in_s <= first.loads[0].ready_in_s
    finally:
        listener.cancel()
        await worker.stop()
        client.close()
        coordinator.close()

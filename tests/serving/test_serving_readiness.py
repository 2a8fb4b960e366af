"""Readiness and the front door's status codes tell the truth when no worker is ready.

A coordinator and workers (or one decentralized node) run in this event loop on 127.0.0.1
with UDP and HTTP ports 0; the official `openai` client and httpx talk to them. Workers
that stop gracefully send a last report with ``ready = false`` and stay in the view until
WORKER_TIMEOUT, which is long here (30 s) so that "at once" cannot be the timeout: the
coordinator's ``/readyz`` must say 503 and a completion must get 503 ("no ready worker"),
not 429, within a few report intervals. (Real saturation still gets 429:
``test_serving_overload.py``.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.node import NodeConfig
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.node import NodeServer
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec

CATALOG = served_catalog()
MODEL = "llama-3.2-1b"  # prestaged in host memory: a ~0.6 s cold start
REPORT_INTERVAL_S = 0.1
# Long, so that readiness going at once is told apart from workers timing out.
WORKER_TIMEOUT_S = 30.0
# "At once": a stopping worker's last report arrives within milliseconds; a few report
# intervals of slack for two busy cores, and still a tenth of the timeout.
AT_ONCE_S = 3.0
JOIN_TIMEOUT_S = 10.0


def _port(server: CoordinatorServer | WorkerServer) -> int:
    assert server.http is not None
    return server.http.port


@contextlib.asynccontextmanager
async def _cluster(workers: int) -> AsyncIterator[tuple[CoordinatorServer, list[WorkerServer]]]:
    cost = CostModel()
    coordinator = CoordinatorServer(
        "127.0.0.1", 0, Codec(), "least-loaded", CATALOG, cost, WORKER_TIMEOUT_S, http_port=0
    )
    await coordinator.start()
    started: list[WorkerServer] = []
    try:
        for index in range(workers):
            worker = WorkerServer(
                f"w{index + 1}",
                "127.0.0.1",
                0,
                coordinator.address,
                Codec(),
                CATALOG,
                cost,
                WorkerResources(),
                REPORT_INTERVAL_S,
                prestage=Tier.HOST,
                http_port=0,
            )
            await worker.start()
            started.append(worker)
        yield coordinator, started
    finally:
        for worker in started:
            await worker.stop()
        await coordinator.stop()


def _openai(port: int) -> openai.AsyncOpenAI:
    # No retries: the test reads the first answer's status.
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=10.0
    )


async def _complete(client: openai.AsyncOpenAI) -> str:
    answer = await client.completions.create(model=MODEL, prompt="hello", max_tokens=2)
    return answer.choices[0].text


async def test_the_coordinator_is_not_ready_at_once_when_every_worker_stops(eventually) -> None:
    async with _cluster(2) as (coordinator, workers), httpx.AsyncClient(timeout=5.0) as http:
        readyz = f"http://127.0.0.1:{_port(coordinator)}/readyz"

        async def ready() -> bool:
            return (await http.get(readyz)).status_code == 200

        await eventually(ready, JOIN_TIMEOUT_S, "coordinator ready")
        client = _openai(_port(coordinator))
        assert isinstance(await _complete(client), str)

        for worker in workers:
            await worker.stop()  # graceful: a last report with ready = false
        stopped_at = time.monotonic()

        async def not_ready() -> httpx.Response | None:
            answer = await http.get(readyz)
            return answer if answer.status_code == 503 else None

        answer = await eventually(not_ready, AT_ONCE_S, "coordinator not ready")
        assert answer.json()["reason"] == "no ready workers"
        # Both workers are still live in the view: readiness went with their reports.
        assert len(coordinator.core.view) == 2

        with pytest.raises(openai.APIStatusError) as refused:
            await _complete(client)
        assert refused.value.status_code == 503
        assert "no ready worker" in str(refused.value.message)
        assert time.monotonic() - stopped_at < WORKER_TIMEOUT_S / 2


async def test_a_node_whose_worker_is_stopping_refuses_with_503(eventually) -> None:
    """A decentralized node alone: while its own worker is not ready, its ``/readyz`` is
    503 and its front door answers 503 "no ready worker", not 429."""
    node = NodeServer(
        "n1",
        "127.0.0.1",
        0,
        Codec(),
        CATALOG,
        CostModel(),
        WorkerResources(),
        NodeConfig(report_interval_s=REPORT_INTERVAL_S),
        prestage=Tier.HOST,
        seed=1,
        http_port=0,
    )
    await node.start()
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            port = _port(node)
            client = _openai(port)
            assert isinstance(await _complete(client), str)
            assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200

            node.state.ready = False  # as when the node starts stopping

            answer = await http.get(f"http://127.0.0.1:{port}/readyz")
            assert answer.status_code == 503

            async def refused_with_503() -> bool:
                try:
                    await _complete(client)
                except openai.APIStatusError as error:
                    return error.status_code == 503 and "no ready worker" in error.message
                return False

            await eventually(refused_with_503, AT_ONCE_S, "503 from the node's front door")
    finally:
        await node.stop()

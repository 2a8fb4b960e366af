"""A model on several GPUs is placed only on a worker that reports that many.

A coordinator and workers run in this event loop on 127.0.0.1 with ports 0; the official
`openai` client talks to the front door. The model is a sim model whose
``tensor_parallel_size`` is 2: while the only worker has one GPU, the request is refused
with 503 ``not_enough_gpus`` (not left waiting); once a two-GPU worker reports, it serves.
"""

from __future__ import annotations

import asyncio

import openai
import pytest

from sllm.catalog import CatalogModel, served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec

WIDE = CatalogModel("wide-2gpu", 1.0, 2 * 10**9, options={"tensor_parallel_size": 2})
CATALOG = {**served_catalog(2), WIDE.name: WIDE}
REPORT_INTERVAL_S = 0.1


def _worker(name: str, coordinator: CoordinatorServer, gpus: int) -> WorkerServer:
    return WorkerServer(
        name, "127.0.0.1", 0, coordinator.address, Codec(), CATALOG, CostModel(),
        WorkerResources(gpus=gpus), REPORT_INTERVAL_S, prestage=Tier.HOST, http_port=0,
    )  # fmt: skip


async def _until(check, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def test_a_two_gpu_model_waits_for_a_two_gpu_worker() -> None:
    coordinator = CoordinatorServer(
        "127.0.0.1", 0, Codec(), "startup-aware", CATALOG, CostModel(), 30.0, http_port=0
    )
    await coordinator.start()
    workers: list[WorkerServer] = []
    try:
        assert coordinator.http is not None
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{coordinator.http.port}/v1",
            api_key="unused",
            max_retries=0,
        )
        workers.append(_worker("one-gpu", coordinator, gpus=1))
        await workers[-1].start()
        await _until(lambda: "one-gpu" in coordinator.core.view, "the one-GPU worker joined")
        with pytest.raises(openai.APIStatusError) as refused:
            await client.completions.create(model=WIDE.name, prompt="hi", max_tokens=2)
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "not_enough_gpus"
        assert refused.value.response.headers["retry-after"]

        workers.append(_worker("two-gpus", coordinator, gpus=2))
        await workers[-1].start()
        await _until(lambda: "two-gpus" in coordinator.core.view, "the two-GPU worker joined")
        answer = await client.completions.create(model=WIDE.name, prompt="hi", max_tokens=2)
        assert answer.usage.completion_tokens == 2
        assert workers[1].state.completed_total == 1 and workers[0].state.completed_total == 0
    finally:
        for worker in workers:
            await worker.stop()
        await coordinator.stop()

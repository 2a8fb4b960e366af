"""A live worker's HTTP side of a request that ends before it starts.

A hand-back: the request waiting for a load that found no room is answered 429, which the
front door retries on another worker (`sllm.api.gateway`, ``worker_busy``). A failed load:
503 with the code ``load_failed`` and what went wrong."""

from __future__ import annotations

import asyncio
import time

import pytest

from sllm.api.errors import ApiError
from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import (
    HANDED_BACK,
    Action,
    Finished,
    StartRequest,
    WorkerResources,
    WorkerState,
)
from sllm.engines.base import GenerationParams
from sllm.runtime.generation import HttpRequests
from sllm.wire import InferenceRequest

GB = 10**9
BUSY = ("llama-2-7b", "llama-3.2-3b")  # 13.5 GB and 6.4 GB: a 20 GB GPU holds no third
WAITING = "llama-3.2-1b"


def http_requests(state: WorkerState) -> HttpRequests:
    """`state`'s HTTP side, told of the requests that start and end (no engine runs)."""

    def carry_out(actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartRequest):
                requests.on_start(action)
            elif isinstance(action, Finished):
                requests.on_finished(action)

    requests = HttpRequests(state, state.catalog, engines={}, carry_out=carry_out)
    return requests


async def test_a_request_handed_back_is_answered_429() -> None:
    state = WorkerState(
        "w",
        WorkerResources(gpu_bytes=20 * GB, slots=2, hand_back=True),
        served_catalog(),
        CostModel(),
        preloaded={model: Tier.GPU for model in BUSY},
        now=time.monotonic(),
    )
    requests = http_requests(state)
    for index, model in enumerate(BUSY):  # both run: neither can be evicted
        busy = InferenceRequest(
            request_id=f"busy-{index}", model=model, prompt_tokens=16, output_tokens=16
        )
        state.submit(busy, time.monotonic())
    waiting = asyncio.create_task(
        requests.start("c", WAITING, "hello", GenerationParams(max_tokens=4))
    )
    await asyncio.sleep(0)  # the task runs until it waits, queued behind the blocked load
    assert requests.owns("c") and state.queue_depth == 1
    due = state.next_deadline()
    assert due is not None
    requests.carry_out(state.tick(due))
    with pytest.raises(ApiError) as raised:
        await waiting
    assert (raised.value.status, raised.value.code) == (429, HANDED_BACK)


async def test_a_request_whose_model_fails_to_load_is_answered_503_saying_why() -> None:
    state = WorkerState(
        "w", WorkerResources(gpu_bytes=20 * GB), served_catalog(), CostModel(), now=0.0
    )
    requests = http_requests(state)
    waiting = asyncio.create_task(
        requests.start("c", WAITING, "hello", GenerationParams(max_tokens=4))
    )
    await asyncio.sleep(0)  # the task runs until it waits for the load
    assert requests.owns("c") and state.queue_depth == 1
    failed = state.load_failed(WAITING, time.monotonic(), "out of memory")
    assert failed, "no load of the model was under way"
    requests.carry_out(failed)
    with pytest.raises(ApiError) as raised:
        await waiting
    assert (raised.value.status, raised.value.code) == (503, "load_failed")
    assert raised.value.message == "the model failed to load on this worker: out of memory"

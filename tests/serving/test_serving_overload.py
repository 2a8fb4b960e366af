"""Bounded queues answer 429 with Retry-After, and a client that leaves cancels its work.

The sim engine is slowed by a cost-model override (0.1 s a token) so that requests are
still queued or running when the test looks; what the worker is doing is read from its
own ``/metrics`` (``sllm_worker_running_requests``, ``sllm_worker_queued_requests``).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

pytestmark = pytest.mark.integration

MODEL = "llama-3.2-1b"
STEP_S = 0.1  # seconds a decode step takes under the override


@pytest.fixture
def slow_decode(tmp_path) -> str:
    path = tmp_path / "slow-decode.json"
    path.write_text(json.dumps({"decode_overhead_s": STEP_S}), encoding="utf-8")
    return str(path)


def _body(max_tokens: int, stream: bool = False) -> dict:
    return {"model": MODEL, "prompt": "hello", "max_tokens": max_tokens, "stream": stream}


async def _worker_gauges(http: httpx.AsyncClient, worker_url: str) -> tuple[float, float]:
    """(running, queued) on the worker, from its /metrics."""
    text = (await http.get(worker_url + "/metrics")).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("sllm_worker_running_requests", "sllm_worker_queued_requests"):
            values[name] = float(value)
    return values["sllm_worker_running_requests"], values["sllm_worker_queued_requests"]


async def test_a_burst_beyond_the_queues_gets_429_with_retry_after(
    serving_cluster, slow_decode
) -> None:
    # Two workers, each running one request and queueing one: room for four at a time.
    async with (
        serving_cluster(
            ("w1", "w2"), WORKER_SLOTS="1", QUEUE_CAPACITY="1", COST_MODEL=slow_decode
        ) as cluster,
        httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http,
    ):
        burst = [http.post("/v1/completions", json=_body(10)) for _ in range(10)]
        responses = await asyncio.gather(*burst)
        statuses = sorted(response.status_code for response in responses)
        # At most four fit; during the cold start each worker's one queue place holds the
        # request waiting for the load, so at least two do.
        assert statuses.count(200) >= 2, statuses
        assert statuses.count(429) >= 6, statuses
        assert set(statuses) == {200, 429}, statuses
        for response in responses:
            if response.status_code == 429:
                assert response.headers["retry-after"] == "1"
                error = response.json()["error"]
                assert error["type"] == "rate_limit_error"
                assert error["code"] == "overloaded"
            else:
                assert response.json()["usage"]["completion_tokens"] == 10


async def test_a_client_that_disconnects_cancels_its_work_on_the_worker(
    serving_cluster, slow_decode, eventually
) -> None:
    async with (
        serving_cluster(("w1",), WORKER_SLOTS="1", COST_MODEL=slow_decode) as cluster,
        httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http,
    ):
        worker = cluster.worker_url("w1")
        idle = (0.0, 0.0)
        long_request = _body(300, stream=True)  # 30 s if nobody cancelled it

        # Streaming: read the first event, then go away.
        started = time.monotonic()
        headers = {"x-request-id": "streamed"}
        async with http.stream("POST", "/v1/completions", json=long_request, headers=headers) as r:
            lines = r.aiter_lines()  # kept: dropping the iterator would close the response
            assert (await anext(lines)).startswith("data: {")
            assert await _worker_gauges(http, worker) == (1.0, 0.0)
        await eventually(lambda: _is(http, worker, idle), 5, "the worker dropped the stream")

        # Waiting in the queue behind a running request, then gone: the queue empties at
        # once, while the running one goes on.
        running = asyncio.ensure_future(
            http.post("/v1/completions", json=_body(40), headers={"x-request-id": "running"})
        )
        await eventually(lambda: _is(http, worker, (1.0, 0.0)), 5, "the first one runs")
        queued = asyncio.ensure_future(
            http.post("/v1/completions", json=long_request, headers={"x-request-id": "queued"})
        )
        await eventually(lambda: _is(http, worker, (1.0, 1.0)), 5, "the second one queued")
        queued.cancel()  # closes its connection to the front door
        await eventually(lambda: _is(http, worker, (1.0, 0.0)), 5, "the queued one dropped")

        # Not streamed, running: gone, and the worker stops it.
        running.cancel()
        await eventually(lambda: _is(http, worker, idle), 5, "the running one dropped")
        assert time.monotonic() - started < 15  # far less than one long request

        for request_id in ("streamed", "queued", "running"):
            finished = await cluster.logged("request_finished", request_id)
            assert [event["status"] for event in finished] == [499], request_id


async def _is(http: httpx.AsyncClient, worker: str, gauges: tuple[float, float]) -> bool:
    return await _worker_gauges(http, worker) == gauges

"""Workers that stop answering without closing their sockets: frozen with SIGSTOP.

A frozen worker (like a host that lost power or its network) resets nothing, so the data
plane alone would wait `FIRST_BYTE_TIMEOUT_S` (300 s) for a first byte, or
`READ_TIMEOUT_S` (120 s) of silence mid-stream. Its reports stop too, so the coordinator
declares it lost after WORKER_TIMEOUT, and the front door acts on that at once:

- a request waiting for the frozen worker's first byte is placed on another worker and
  answered 200, and ``sllm_frontdoor_retries_total{reason="worker_lost"}`` counts it;
- a stream relaying from the frozen worker ends with an error event saying the worker
  was lost, and ``sllm_frontdoor_requests_failed_total{reason="worker_lost"}`` counts it;
  a non-streamed request gets a 502 with code ``worker_lost``.

Every wait here is bounded by a client deadline far below those data-plane timeouts, so
the code before this behaviour fails fast rather than hanging. Frozen processes are
resumed in a ``finally`` before the cluster kills them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

MODEL = "llama-3.2-1b"
# The coordinator notices a frozen worker WORKER_TIMEOUT after its last report (the expiry
# timer runs four times per timeout); a few seconds more cover a busy test machine.
# (conftest's WORKER_TIMEOUT_S is 2 s.)
NOTICED_WITHIN_S = 2.0 + 4.0
# What a client waits at most: far below the data plane's 120 s and 300 s, so that
# without the scheduler's word the test fails in seconds instead of hanging.
CLIENT_DEADLINE_S = 15.0


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """`pid` stopped (SIGSTOP) inside the block, resumed (SIGCONT) however it ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def _on_gpu(cluster, worker: str) -> bool:
    state = await cluster.state()
    if state is None:
        return False
    return any(w["id"] == worker and w["models"].get(MODEL) == "gpu" for w in state["workers"])


async def _counter(cluster, name: str, reason: str) -> float:
    """The value of the front door's counter `name` with `reason`, from its /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(cluster.base_url + "/metrics")).text
    series = f'{name}{{reason="{reason}"}} '
    found = [line for line in text.splitlines() if line.startswith(series)]
    assert found, f"{series.strip()} is not exported"
    return float(found[0].split()[-1])


async def test_a_request_waiting_on_a_frozen_worker_is_placed_again_at_once(
    serving_cluster, eventually, tmp_path
) -> None:
    slow_loads = tmp_path / "slow-loads.json"
    slow_loads.write_text(json.dumps({"engine_start_s": 120}), encoding="utf-8")
    workers = {
        # w1 looks faster to the coordinator (host memory against disk), but its loads hang.
        "w1": {"PRESTAGE_TIER": "host", "COST_MODEL": str(slow_loads)},
        "w2": {"PRESTAGE_TIER": "disk"},
    }
    async with serving_cluster(workers, policy="startup-aware") as cluster:
        client = openai.AsyncOpenAI(
            base_url=cluster.api_url, api_key="x", max_retries=0, timeout=CLIENT_DEADLINE_S
        )
        assert await _counter(cluster, "sllm_frontdoor_retries_total", "worker_lost") == 0
        request = asyncio.ensure_future(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=4,
                temperature=0,  # the sim's fixed words
                extra_headers={"x-request-id": "waiting"},
            )
        )
        try:
            # w1 took the request and is loading the model for it (loads report as "gpu").
            await eventually(lambda: _on_gpu(cluster, "w1"), 10, "w1 loading the model")
            assert not request.done()
            with frozen(cluster.workers["w1"].process.pid):
                frozen_at = time.monotonic()
                completion = await request
                answered_s = time.monotonic() - frozen_at
        finally:
            request.cancel()
        assert completion.choices[0].message.content.split() == ["lorem", "ipsum", "dolor", "sit"]
        assert answered_s < NOTICED_WITHIN_S
        assert [e["worker"] for e in cluster.coordinator_events("worker_lost")] == ["w1"]
        failed = await cluster.logged("upstream_failed", "waiting")
        assert [(e["worker"], e["attempt"]) for e in failed] == [("w1", 1)]
        assert "lost" in failed[0]["error"]
        routed = await cluster.logged("request_routed", "waiting")
        assert [(e["worker"], e["attempt"]) for e in routed] == [("w2", 2)]
        assert await _counter(cluster, "sllm_frontdoor_retries_total", "worker_lost") == 1
        assert await _counter(cluster, "sllm_frontdoor_retries_total", "worker_failed") == 0


async def test_a_stream_from_a_frozen_worker_ends_with_an_error_at_once(
    serving_cluster, eventually, tmp_path
) -> None:
    slow_decode = tmp_path / "slow-decode.json"
    slow_decode.write_text(json.dumps({"decode_overhead_s": 0.1}), encoding="utf-8")
    async with serving_cluster(("w1", "w2"), COST_MODEL=str(slow_decode)) as cluster:
        client = openai.AsyncOpenAI(
            base_url=cluster.api_url, api_key="x", max_retries=0, timeout=CLIENT_DEADLINE_S
        )
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a long answer"}],
            max_tokens=100,  # 10 s at 0.1 s a token
            stream=True,
            extra_headers={"x-request-id": "streaming"},
        )
        received = []
        worker = ""
        frozen_at = time.monotonic()
        with contextlib.ExitStack() as resumed:
            with pytest.raises(openai.APIError) as raised:
                async for chunk in stream:
                    received.append(chunk)
                    if len(received) == 3:
                        worker = (await cluster.logged("request_routed", "streaming"))[0]["worker"]
                        resumed.enter_context(frozen(cluster.workers[worker].process.pid))
                        frozen_at = time.monotonic()
            ended_s = time.monotonic() - frozen_at
        # The worker's own words, not the client's timeout.
        assert not isinstance(raised.value, openai.APITimeoutError)
        assert f"worker {worker} was lost" in raised.value.message
        assert ended_s < NOTICED_WITHIN_S
        assert 3 <= len(received) < 100
        finished = await cluster.logged("request_finished", "streaming")
        assert [event["status"] for event in finished] == [502]
        broken = await cluster.logged("stream_broken", "streaming")
        assert broken[0]["cause"] == "worker_lost"
        assert await _counter(cluster, "sllm_frontdoor_requests_failed_total", "worker_lost") == 1

        # Not streamed: the survivor freezes while the front door folds its stream: a 502.
        survivor = ({"w1", "w2"} - {worker}).pop()
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=CLIENT_DEADLINE_S) as http:
            pending = asyncio.ensure_future(
                http.post(
                    "/v1/completions",
                    json={"model": MODEL, "prompt": "x", "max_tokens": 100},
                    headers={"x-request-id": "folded"},
                )
            )
            try:
                routed = await cluster.logged("request_routed", "folded", timeout=10)
                assert routed[0]["worker"] == survivor
                with frozen(cluster.workers[survivor].process.pid):
                    response = await pending
            finally:
                pending.cancel()
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["code"] == "worker_lost"
        assert f"worker {survivor} was lost" in error["message"]
        assert await _counter(cluster, "sllm_frontdoor_requests_failed_total", "worker_lost") == 2

"""Workers that die under a request: retried before the first byte, an error after it.

Each test kills a worker process with SIGKILL at a moment it chooses by watching the
cluster (the coordinator's view over UDP, its log events), never by sleeping:

- a dead worker the coordinator still believes warm: the connection is refused, the
  front door forgets the worker and places the request again, and the client never knows;
- a worker that dies while the request waits in it for a slow model load: the connection
  breaks before any byte, and the request is retried elsewhere; with no worker left, the
  client's 503 says what happened to the one tried;
- a worker that dies mid-stream: the stream ends with an explicit error event, which the
  `openai` client raises as `APIError`, and a non-streamed request gets a 502; never a
  truncated success.

The slow parts come from a cost-model override (COST_MODEL), as an operator would set it.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

MODEL = "llama-3.2-1b"
# The coordinator keeps a silent worker this long: the dead one stays in its view, so only
# the data plane can find out.
LONG_WORKER_TIMEOUT = "30"


async def _tier(cluster, worker: str) -> str | None:
    state = await cluster.state()
    if state is None:
        return None
    found = [w["models"].get(MODEL) for w in state["workers"] if w["id"] == worker]
    return found[0] if found else None


async def _on_gpu(cluster, worker: str) -> bool:
    """The coordinator sees `MODEL` on `worker`'s GPU (a load under way counts)."""
    return await _tier(cluster, worker) == "gpu"


async def _known(cluster) -> set[str]:
    state = await cluster.state()
    return {w["id"] for w in state["workers"]} if state else set()


async def test_a_dead_warm_worker_is_forgotten_and_the_request_served_elsewhere(
    serving_cluster, eventually
) -> None:
    async with serving_cluster(
        ("w1", "w2"), policy="startup-aware", WORKER_TIMEOUT=LONG_WORKER_TIMEOUT
    ) as cluster:
        client = openai.AsyncOpenAI(base_url=cluster.api_url, api_key="x", max_retries=0)
        await client.completions.create(
            model=MODEL, prompt="warm", max_tokens=1, extra_headers={"x-request-id": "warm"}
        )
        warm = (await cluster.logged("request_routed", "warm"))[0]["worker"]
        other = ({"w1", "w2"} - {warm}).pop()
        # The model is on `warm`'s GPU, not on `other`'s: startup-aware prefers `warm`.
        await eventually(lambda: _on_gpu(cluster, warm), 5, "the warm worker reported it")
        assert not await _on_gpu(cluster, other)

        await cluster.workers[warm].kill()  # SIGKILL; the coordinator has not noticed
        assert await _known(cluster) == {"w1", "w2"}

        response = await client.completions.create(
            model=MODEL, prompt="after", max_tokens=3, extra_headers={"x-request-id": "after"}
        )
        assert response.usage.completion_tokens == 3

        failed = await cluster.logged("upstream_failed", "after")
        assert [(e["worker"], e["attempt"], e["forgotten"]) for e in failed] == [(warm, 1, True)]
        routed = await cluster.logged("request_routed", "after")
        assert [(e["worker"], e["attempt"]) for e in routed] == [(other, 2)]
        assert await _known(cluster) == {other}  # forgotten at once, not after 30 s


async def test_a_worker_dying_before_the_first_byte_is_retried_elsewhere(
    serving_cluster, eventually, tmp_path
) -> None:
    slow_loads = tmp_path / "slow-loads.json"
    slow_loads.write_text(json.dumps({"engine_start_s": 120}), encoding="utf-8")
    workers = {
        # w1 looks faster to the coordinator (host memory against disk), but its loads hang.
        "w1": {"PRESTAGE_TIER": "host", "COST_MODEL": str(slow_loads)},
        "w2": {"PRESTAGE_TIER": "disk"},
    }
    async with serving_cluster(
        workers, policy="startup-aware", WORKER_TIMEOUT=LONG_WORKER_TIMEOUT
    ) as cluster:
        client = openai.AsyncOpenAI(base_url=cluster.api_url, api_key="x", max_retries=0)
        request = asyncio.ensure_future(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=4,
                temperature=0,  # the sim's fixed words
                stream=True,
                extra_headers={"x-request-id": "waiting"},
            )
        )
        # w1 took the request and is loading the model for it (loads report as "gpu").
        await eventually(lambda: _on_gpu(cluster, "w1"), 10, "w1 loading the model")
        assert not request.done()
        await cluster.workers["w1"].kill()

        stream = await asyncio.wait_for(request, 20)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks).split() == [
            "lorem",
            "ipsum",
            "dolor",
            "sit",
        ]
        failed = await cluster.logged("upstream_failed", "waiting")
        assert [(e["worker"], e["attempt"]) for e in failed] == [("w1", 1)]
        routed = await cluster.logged("request_routed", "waiting")
        assert [(e["worker"], e["attempt"]) for e in routed] == [("w2", 2)]


async def test_the_last_worker_dying_before_the_first_byte_is_the_error_the_client_reads(
    serving_cluster, eventually, tmp_path
) -> None:
    """With no worker left to retry on, the client learns what happened to the one tried,
    not that none has joined."""
    slow_loads = tmp_path / "slow-loads.json"
    slow_loads.write_text(json.dumps({"engine_start_s": 120}), encoding="utf-8")
    workers = {"w1": {"PRESTAGE_TIER": "host", "COST_MODEL": str(slow_loads)}}
    async with serving_cluster(
        workers, policy="startup-aware", WORKER_TIMEOUT=LONG_WORKER_TIMEOUT
    ) as cluster:
        client = openai.AsyncOpenAI(base_url=cluster.api_url, api_key="x", max_retries=0)
        request = asyncio.ensure_future(
            client.completions.create(model=MODEL, prompt="hello", max_tokens=4)
        )
        await eventually(lambda: _on_gpu(cluster, "w1"), 10, "w1 loading the model")
        await cluster.workers["w1"].kill()

        with pytest.raises(openai.InternalServerError) as refused:
            await asyncio.wait_for(request, 20)
        assert refused.value.status_code == 503
        message = refused.value.body["message"]
        assert message.startswith("no worker could serve the request ("), message


async def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error(
    serving_cluster, eventually, tmp_path
) -> None:
    slow_decode = tmp_path / "slow-decode.json"
    slow_decode.write_text(json.dumps({"decode_overhead_s": 0.1}), encoding="utf-8")
    async with serving_cluster(("w1", "w2"), COST_MODEL=str(slow_decode)) as cluster:
        client = openai.AsyncOpenAI(base_url=cluster.api_url, api_key="x", max_retries=0)
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a long answer"}],
            max_tokens=100,  # 10 s at 0.1 s a token
            stream=True,
            extra_headers={"x-request-id": "streaming"},
        )
        received = []
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                received.append(chunk)
                if len(received) == 3:
                    worker = (await cluster.logged("request_routed", "streaming"))[0]
                    await cluster.workers[worker["worker"]].kill()
        assert "mid-stream" in raised.value.message
        assert 3 <= len(received) < 100
        assert all(chunk.choices[0].finish_reason is None for chunk in received)
        finished = await cluster.logged("request_finished", "streaming")
        assert [event["status"] for event in finished] == [502]
        assert await cluster.logged("stream_broken", "streaming")

        # Not streamed: the survivor dies while the front door folds its stream: a 502.
        survivor = ({"w1", "w2"} - {worker["worker"]}).pop()
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
            pending = asyncio.ensure_future(
                http.post(
                    "/v1/completions",
                    json={"model": MODEL, "prompt": "x", "max_tokens": 100},
                    headers={"x-request-id": "folded"},
                )
            )
            await cluster.logged("request_routed", "folded", timeout=10)
            await cluster.workers[survivor].kill()
            response = await pending
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "worker_failed"

"""A decentralized node's HTTP side: the front door on /v1, its worker routes, health and
gossip metrics, with two real node processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re

import httpx
import openai
import pytest

from sllm.experiments.launcher import ServiceProcess

pytestmark = pytest.mark.integration

ENV = {
    "REPORT_INTERVAL": "0.1",
    "PRESTAGE_TIER": "host",
    "LOG_LEVEL": "INFO",
}
GOSSIP_FLAGS = ["--probe-interval", "0.2", "--probe-timeout", "0.1", "--gossip-interval", "0.05"]
MODEL = "llama-3.2-1b"
JOIN_TIMEOUT_S = 15.0


async def _start_node(name: str, seeds: str = "") -> ServiceProcess:
    args = ["node", "--node-id", name, "--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
    if seeds:
        args += ["--seed-nodes", seeds]
    return await ServiceProcess.start(name, [*args, *GOSSIP_FLAGS], ENV)


def _http_port(node: ServiceProcess) -> int:
    return int(node.events("http_listening")[0]["port"])


async def test_a_node_serves_the_front_door_and_gossip_metrics(eventually) -> None:
    first = await _start_node("n0")
    second = await _start_node("n1", f"127.0.0.1:{first.port}")
    nodes = [first, second]
    try:
        base = f"http://127.0.0.1:{_http_port(first)}"
        async with httpx.AsyncClient(timeout=5) as http:

            async def both_known() -> bool:
                ready = await http.get(f"{base}/readyz")
                metrics = (await http.get(f"{base}/metrics")).text
                return (
                    ready.status_code == 200 and 'sllm_gossip_members{state="alive"} 2.0' in metrics
                )

            await eventually(both_known, JOIN_TIMEOUT_S, "node n0 to see n1 alive")

            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
            served_by: set[str] = set()
            for _ in range(6):  # least-loaded spreads them; any node's worker may serve
                reply = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
                )
                completion = reply.parse()
                assert completion.usage is not None and completion.usage.completion_tokens == 3
                assert reply.headers["x-request-id"]
                served_by.add(reply.headers["x-request-id"])
            assert len(served_by) == 6
            # They were placed as a client's requests are: after asking the candidates (the
            # other node is one) for their load. (Not necessarily all six: a decision while
            # the other node is suspected or not accepting has no one to ask.)
            metrics = (await http.get(f"{base}/metrics")).text
            [probed] = re.findall(r"^sllm_node_probed_decisions_total (\S+)$", metrics, re.M)
            assert 1 <= float(probed) <= 6

            # Each node's own worker answers under /worker, not on the front door's path.
            direct = await http.post(
                f"http://127.0.0.1:{_http_port(second)}/worker/v1/completions",
                json={"model": MODEL, "prompt": "x", "max_tokens": 2},
            )
            assert direct.status_code == 200
            assert direct.text.rstrip().endswith("data: [DONE]")
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))
    routed = first.events("request_routed")
    assert len(routed) == 6
    assert {e["worker"] for e in routed} <= {"n0", "n1"}

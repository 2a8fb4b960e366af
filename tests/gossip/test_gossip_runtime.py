"""Runtime tier: decentralized nodes in the test's event loop, over real UDP on 127.0.0.1.

Covers the live node end to end: joining through a seed, placing a request from any node
and running it where it was placed, `status --node` (the coordinator's keys plus a
``gossip`` section), rejected datagrams counted, and a graceful leave seen at once.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.membership import GossipConfig, MemberState
from sllm.core.node import NodeConfig
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.runtime.client import get_node_state
from sllm.runtime.node import NodeServer
from sllm.runtime.udp import Endpoint
from sllm.wire import Codec, InferenceRequest, InferenceResult, ScheduleRequest, ScheduleResponse

CATALOG = served_catalog()
MODEL = "llama-3.2-1b"
GOSSIP = GossipConfig(
    probe_interval_s=0.2, probe_timeout_s=0.1, gossip_interval_s=0.05, sync_interval_s=1.0
)
CONFIG = NodeConfig(
    policy="least-loaded",
    report_interval_s=0.1,
    report_refresh_s=1.0,
    report_stale_s=6.0,
    gossip=GOSSIP,
)


@contextlib.asynccontextmanager
async def local_nodes(count: int) -> AsyncIterator[list[NodeServer]]:
    nodes: list[NodeServer] = []
    try:
        for index in range(count):
            seeds = [nodes[0].address] if nodes else []
            node = NodeServer(
                f"n{index}",
                "127.0.0.1",
                0,
                Codec(),
                CATALOG,
                CostModel(),
                WorkerResources(),
                CONFIG,
                seeds=seeds,
                prestage=Tier.HOST,
                seed=index,
            )
            await node.start()
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


def converged(nodes: list[NodeServer]) -> bool:
    expected = {node.state.worker_id for node in nodes}
    for node in nodes:
        assert node.core is not None
        live = {m.node_id for m in node.core.membership.live_members()}
        in_view = {entry.worker_id for entry in node.core.scheduler.view.entries()}
        if live != expected or in_view != expected:
            return False
    return True


async def test_nodes_join_place_and_run_a_request(eventually) -> None:
    async with local_nodes(3) as nodes:
        await eventually(lambda: converged(nodes), 5.0, "all three see all three")
        client = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        try:
            decision = await client.request(
                ScheduleRequest(
                    request_id="r-1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
                ),
                nodes[2].address,
                ScheduleResponse,
                2.0,
            )
            assert decision.action in ("serve", "cold_start")
            chosen = next(n for n in nodes if n.state.worker_id == decision.worker_id)
            assert (decision.host, decision.port) == chosen.address
            result = await client.request(
                InferenceRequest(request_id="r-1", model=MODEL, prompt_tokens=64, output_tokens=8),
                (decision.host, decision.port),
                InferenceResult,
                10.0,
            )
        finally:
            client.close()
    assert result.ok, result.reason
    assert result.worker_id == decision.worker_id


async def test_status_of_a_node_has_the_coordinator_keys_and_a_gossip_section(
    eventually, check_status
) -> None:
    async with local_nodes(3) as nodes:
        await eventually(lambda: converged(nodes), 5.0, "converged")
        client = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            raw.sendto(b"not a datagram we speak", nodes[0].address)
            await eventually(
                lambda: (
                    nodes[0].core is not None
                    and nodes[0].core.traffic.rejected_datagrams >= 1
                    and nodes[0].core.traffic.bytes_sent_per_s > 0
                ),
                5.0,
                "the reject and the traffic reach the status",
            )
            state = await get_node_state(client, nodes[0].address)
        finally:
            raw.close()
            client.close()
    check_status(state, ["n0", "n1", "n2"])
    gossip = state["gossip"]
    assert gossip["node_id"] == "n0"
    assert gossip["members"] == {"alive": 3, "suspect": 0, "dead": 0, "left": 0}
    assert gossip["rejected_datagrams"] >= 1
    assert gossip["bytes_sent_per_s"] > 0 and gossip["bytes_received_per_s"] > 0
    assert gossip["false_suspicions"] == 0
    assert [m["id"] for m in gossip["member_list"]] == ["n0", "n1", "n2"]
    for member in gossip["member_list"]:
        assert member["state"] == "alive"
        assert member["info_age_s"] >= 0.0
        assert member["report_age_s"] is not None and member["report_age_s"] < 5.0


async def test_a_stopping_node_announces_its_leave(eventually) -> None:
    async with local_nodes(4) as nodes:
        await eventually(lambda: converged(nodes), 5.0, "converged")
        leaver = nodes.pop()
        await leaver.stop()

        def everyone_knows() -> bool:
            for node in nodes:
                assert node.core is not None
                member = node.core.membership.get(leaver.state.worker_id)
                if member is None or member.state is not MemberState.LEFT:
                    return False
                if leaver.state.worker_id in node.core.scheduler.view:
                    return False
            return True

        # Far sooner than a suspicion could time out (alpha * T = 0.8 s at the least).
        await eventually(everyone_knows, 0.5, "the leave reached every node")

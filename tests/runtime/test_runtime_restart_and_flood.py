"""Runtime tier: a flood of valid but unexpected messages, and a replay after a restart.

Both come from a raw socket on 127.0.0.1, signed with the cluster secret, as a peer that
holds the secret (or replays what it captured) would send them:

- A valid message of a type the service does not handle is dropped, counted by type in
  `Endpoint.unexpected`, and logged at most once per type every `LOG_INTERVAL_S` with the
  number suppressed since: the coordinator, a worker and a node alike.
- A worker report captured on its way to a coordinator and replayed to the coordinator
  that replaced it is refused as ``before_boot``, while a fresh report is accepted. A
  client (an endpoint without a handler) keeps accepting replies from a server whose
  clock runs behind its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.node import NodeConfig
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.metrics import register_coordinator
from sllm.runtime.node import NodeServer
from sllm.runtime.udp import Address, Endpoint
from sllm.runtime.worker import WorkerServer
from sllm.wire import (
    ClusterStateRequest,
    ClusterStateResponse,
    Codec,
    Message,
    ScheduleResponse,
    WorkerReport,
)
from sllm.wire.codec import BOOT_SLACK_S

SECRET = b"runtime-tests-cluster-secret-0002"
CATALOG = served_catalog()
# Sent between two waits for the receiver to catch up: well under what a default socket
# receive buffer (about 200 KB, some 700 bytes of it per small datagram) holds, so the
# kernel drops none while the receiver, in this same event loop, is not reading.
BATCH = 100
WAIT_S = 10.0


@contextlib.contextmanager
def raw_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def stray_response(index: int) -> ScheduleResponse:
    """A well-formed answer nobody asked for: no service but a client expects one."""
    return ScheduleResponse(
        request_id=f"stray-{index}",
        worker_id="w9",
        host="127.0.0.1",
        port=9,
        http_port=10,
        action="serve",
        estimated_wait_s=0.5,
        reason="",
    )


def unexpected_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == logger and record.getMessage() == "unexpected_message"
    ]


async def flood(endpoint: Endpoint, address: Address, count: int, eventually: object) -> None:
    """Send `count` signed stray responses to `address`, each batch counted before the next."""
    assert callable(eventually)
    codec = Codec(SECRET)
    before = endpoint.unexpected.counts.get("schedule_response", 0)
    with raw_socket() as sock:
        for start in range(0, count, BATCH):
            end = min(count, start + BATCH)
            for index in range(start, end):
                nonce = secrets.randbits(64)
                sock.sendto(codec.encode(stray_response(index), time.time(), nonce), address)
            await eventually(
                lambda end=end: endpoint.unexpected.counts.get("schedule_response") == before + end,
                WAIT_S,
                f"{end} unexpected messages counted",
            )


async def check_flood_is_rate_limited(
    endpoint: Endpoint,
    address: Address,
    count: int,
    logger: str,
    caplog: pytest.LogCaptureFixture,
    eventually: object,
) -> None:
    await flood(endpoint, address, count, eventually)
    assert endpoint.unexpected.counts == {"schedule_response": count}
    assert endpoint.rejects.total == 0  # valid datagrams: dropped as unexpected, not rejected
    # All sent within one LOG_INTERVAL_S: the first one is logged, the rest suppressed.
    lines = unexpected_lines(caplog, logger)
    assert len(lines) == 1
    fields = lines[0].__dict__["fields"]
    assert fields["type"] == "schedule_response"
    assert fields["suppressed"] == 0
    assert fields["sender"].startswith("127.0.0.1:")
    # Once the interval has passed, the next line says how many went unlogged.
    endpoint.unexpected.log_interval_s = 0.0
    await flood(endpoint, address, 1, eventually)
    lines = unexpected_lines(caplog, logger)
    assert len(lines) == 2
    assert lines[1].__dict__["fields"]["suppressed"] == count - 1


async def test_unexpected_messages_at_the_coordinator_are_counted_and_rate_limited(
    local_cluster, eventually, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sllm.coordinator")
    async with local_cluster(workers=0, secret=SECRET) as cluster:
        endpoint = cluster.coordinator.endpoint
        assert endpoint is not None
        await check_flood_is_rate_limited(
            endpoint, cluster.address, 10_000, "sllm.coordinator", caplog, eventually
        )
        registry = CollectorRegistry()
        register_coordinator(registry, cluster.coordinator)
        sample = registry.get_sample_value(
            "sllm_messages_unexpected_total", {"type": "schedule_response"}
        )
        assert sample == 10_000 + 1  # the flood and the one after the interval


async def test_unexpected_messages_at_a_worker_are_counted_and_rate_limited(
    local_cluster, eventually, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sllm.worker")  # the worker logs them at DEBUG
    async with local_cluster(workers=1, secret=SECRET) as cluster:
        worker = cluster.workers[0]
        assert worker.endpoint is not None
        await check_flood_is_rate_limited(
            worker.endpoint, worker.address, 2_000, "sllm.worker", caplog, eventually
        )


@contextlib.asynccontextmanager
async def lone_node() -> AsyncIterator[NodeServer]:
    node = NodeServer(
        "n0",
        "127.0.0.1",
        0,
        Codec(SECRET),
        CATALOG,
        CostModel(),
        WorkerResources(),
        NodeConfig(policy="least-loaded", report_interval_s=0.1),
        prestage=Tier.HOST,
        seed=1,
    )
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_unexpected_messages_at_a_node_are_counted_and_rate_limited(
    eventually, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sllm.node")  # the node logs them at DEBUG
    async with lone_node() as node:
        assert node.endpoint is not None
        await check_flood_is_rate_limited(
            node.endpoint, node.address, 2_000, "sllm.node", caplog, eventually
        )


# -- replay after a restart ---------------------------------------------------------------


def coordinator(port: int) -> CoordinatorServer:
    return CoordinatorServer(
        "127.0.0.1", port, Codec(SECRET), "least-loaded", CATALOG, CostModel(), 60.0, seed=1
    )


async def test_a_report_captured_before_a_restart_is_refused_by_the_new_coordinator(
    eventually,
) -> None:
    first = coordinator(0)
    await first.start()
    port = first.address[1]
    with raw_socket() as tap:
        # The worker reports to a tap that records each datagram and passes it on.
        worker = WorkerServer(
            "w1",
            "127.0.0.1",
            0,
            tap.getsockname(),
            Codec(SECRET),
            CATALOG,
            CostModel(),
            WorkerResources(),
            60.0,  # one report at start, then none while the test runs
            prestage=Tier.HOST,
        )
        try:
            await worker.start()
            loop = asyncio.get_running_loop()
            captured = await asyncio.wait_for(loop.sock_recv(tap, 65536), WAIT_S)
            captured_at = time.time()
        finally:
            await worker.stop()
        tap.sendto(captured, first.address)
        await eventually(lambda: "w1" in first.core.view, WAIT_S, "the real report accepted")
        await first.stop()

        # A restart takes longer than BOOT_SLACK_S; wait for the clock, not for a guess.
        await eventually(lambda: time.time() > captured_at + BOOT_SLACK_S, WAIT_S, "slack over")
        second = coordinator(port)
        await second.start()
        try:
            endpoint = second.endpoint
            assert endpoint is not None
            tap.sendto(captured, second.address)
            await eventually(
                lambda: endpoint.rejects.total + second.core.counters.reports == 1,
                WAIT_S,
                "the replay accepted or refused",
            )
            assert "w1" not in second.core.view
            assert second.core.counters.reports == 0
            assert endpoint.rejects.counts.get("before_boot") == 1

            # A report signed now, by anyone holding the secret, is accepted as before.
            report = WorkerReport(
                node_id="w2",
                host="127.0.0.1",
                port=9,
                http_port=0,
                models={},
                models_omitted=0,
                queue_depth=0,
                queue_capacity=64,
                running=0,
                slots=8,
                gpu_utilization=0.0,
                memory_used=0,
                memory_total=1,
                load_backlog_s=0.0,
                ready=True,
                seq=1,
                timestamp=time.time(),
            )
            fresh = Codec(SECRET).encode(report, time.time(), secrets.randbits(64))
            tap.sendto(fresh, second.address)
            await eventually(lambda: "w2" in second.core.view, WAIT_S, "a fresh report joins")
            assert "w1" not in second.core.view
            assert endpoint.rejects.total == 1
        finally:
            await second.stop()


def page(request_id: str) -> ClusterStateResponse:
    return ClusterStateResponse(
        request_id=request_id,
        policy="least-loaded",
        active_workers=0,
        total_requests=1,
        cache_hits=2,
        cold_starts=3,
        rejected=4,
        queue_depth_mean=0.5,
        queue_depth_max=5,
        gpu_utilization_mean=0.25,
        uptime_s=6.0,
        offset=0,
        workers=(),
        max_workers=7,
        refused_workers=8,
    )


async def test_only_servers_refuse_datagrams_stamped_before_they_started(eventually) -> None:
    behind_s = 1.0  # a peer whose clock runs a second behind ours: well over BOOT_SLACK_S
    received: list[Message] = []
    server = await Endpoint.bind(
        Codec(SECRET), "127.0.0.1", 0, lambda message, _: received.append(message)
    )
    client = await Endpoint.bind(Codec(SECRET), "127.0.0.1", 0)
    codec = Codec(SECRET)
    try:
        with raw_socket() as peer:
            peer.sendto(codec.encode(page("late"), time.time() - behind_s, 1), server.address)
            await eventually(
                lambda: server.rejects.counts["before_boot"] == 1, WAIT_S, "server refused it"
            )
            assert received == []

            question = ClusterStateRequest(request_id="q-1", offset=0, limit=1)
            asking = asyncio.create_task(
                client.request(question, peer.getsockname(), ClusterStateResponse, WAIT_S)
            )
            loop = asyncio.get_running_loop()
            datagram = await asyncio.wait_for(loop.sock_recv(peer, 65536), WAIT_S)
            request = codec.decode(datagram, time.time())
            assert isinstance(request, ClusterStateRequest)
            peer.sendto(codec.encode(page("q-1"), time.time() - behind_s, 2), client.address)
            reply = await asking  # request() has its own deadline
            assert reply.request_id == "q-1"
            assert client.rejects.total == 0
    finally:
        client.close()
        server.close()

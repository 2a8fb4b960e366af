"""Runtime tier: what the live endpoints do with hostile, unsigned, replayed and oversized input.

Bad datagrams come from a raw socket, as an attacker's would. Each one must be dropped,
counted under its reason in `Endpoint.rejects`, and leave the receiver serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import pickle
import random
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sllm.runtime.udp import Endpoint
from sllm.wire import (
    MAX_DATAGRAM_BYTES,
    ClusterStateRequest,
    ClusterStateResponse,
    Codec,
    EncodeError,
    Message,
    ScheduleRequest,
    ScheduleResponse,
    WorkerReport,
    WorkerSummary,
)
from sllm.wire.fit import shrink
from sllm.wire.messages import MODEL_NAME_MAX_LEN, REPORT_MAX_MODELS, STATE_PAGE_MAX_WORKERS

SECRET = b"runtime-tests-cluster-secret-0001"
MODEL = "llama-3.2-1b"
REPLY_TIMEOUT_S = 2.0


class TouchOnUnpickle:
    """Unpickling this creates `path`: proof that someone ran pickle.loads on our bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (self.path,))


@contextmanager
def raw_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def receive(sock: socket.socket, timeout: float = REPLY_TIMEOUT_S) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), timeout)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {reason: count for reason, count in counts.items() if count}


async def test_malformed_datagrams_are_dropped_and_counted(
    local_cluster, eventually, tmp_path
) -> None:
    marker = tmp_path / "unpickled-on-the-coordinator"
    payload = pickle.dumps(TouchOnUnpickle(marker))
    # The payload is live: unpickling it here does create its file.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(TouchOnUnpickle(control)))
    assert control.exists()

    noise = bytes([0xFF]) + random.Random(7).randbytes(200)  # 0xFF never starts UTF-8
    hostile = [
        noise,
        b"{" * (MAX_DATAGRAM_BYTES + 1),
        payload,
        json.dumps({"v": 1, "t": "launch_missiles", "b": {}}).encode(),
    ]
    async with local_cluster(workers=0) as cluster:
        rejects = cluster.coordinator.endpoint.rejects
        with raw_socket() as sock:
            for datagram in hostile:
                sock.sendto(datagram, cluster.address)
            await eventually(lambda: rejects.total == len(hostile), 2.0, "all four counted")

        assert nonzero(rejects.counts) == {"bad_encoding": 2, "oversized": 1, "unknown_type": 1}
        assert not marker.exists()
        # Still serving.
        page = await cluster.client.request(
            ClusterStateRequest(request_id="after", offset=0, limit=STATE_PAGE_MAX_WORKERS),
            cluster.address,
            ClusterStateResponse,
            2.0,
        )
        assert page.active_workers == 0
        assert rejects.total == len(hostile)


async def test_a_signed_cluster_works_and_rejects_unsigned_and_replayed(
    local_cluster, eventually
) -> None:
    async with local_cluster(workers=2, secret=SECRET) as cluster:
        await eventually(lambda: cluster.known() == {"w1", "w2"}, 3.0, "signed workers joined")
        decision = await cluster.client.request(
            ScheduleRequest(
                request_id="signed-1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
            ),
            cluster.address,
            ScheduleResponse,
            REPLY_TIMEOUT_S,
        )
        assert decision.worker_id in {"w1", "w2"}

        rejects = cluster.coordinator.endpoint.rejects
        request = ClusterStateRequest(request_id="captured", offset=0, limit=STATE_PAGE_MAX_WORKERS)
        with raw_socket() as sock:
            sock.sendto(Codec().encode(request, time.time(), 1), cluster.address)
            await eventually(lambda: rejects.counts["unsigned"] == 1, 2.0, "unsigned counted")

            # A datagram captured on the wire: the first copy is answered, a replay is not.
            captured = Codec(SECRET).encode(request, time.time(), secrets.randbits(64))
            sock.sendto(captured, cluster.address)
            reply = Codec(SECRET).decode(await receive(sock), time.time())
            assert isinstance(reply, ClusterStateResponse)
            assert reply.active_workers == 2
            sock.sendto(captured, cluster.address)
            await eventually(lambda: rejects.counts["replayed"] == 1, 2.0, "replay counted")

            tampered = bytearray(Codec(SECRET).encode(request, time.time(), 2))
            tampered[-2] ^= 0x01
            sock.sendto(bytes(tampered), cluster.address)
            await eventually(lambda: rejects.counts["bad_signature"] == 1, 2.0, "tamper counted")

        assert nonzero(rejects.counts) == {"unsigned": 1, "replayed": 1, "bad_signature": 1}
        # Workers and client kept working alongside.
        assert cluster.client.rejects.total == 0
        assert all(worker.endpoint.rejects.total == 0 for worker in cluster.workers)


def long_model_names(count: int) -> dict[str, int]:
    return {f"{i:02d}/" + "x" * (MODEL_NAME_MAX_LEN - 3): i % 4 for i in range(count)}


def big_report() -> WorkerReport:
    return WorkerReport(
        node_id="big-worker",
        host="127.0.0.1",
        port=1,
        http_port=0,
        models=long_model_names(REPORT_MAX_MODELS),
        models_omitted=3,
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


def big_page() -> ClusterStateResponse:
    workers = tuple(
        WorkerSummary(
            worker_id=f"{i}-" + "w" * 120,
            host="127.0.0.1",
            port=8000,
            models=long_model_names(4),
            queue_depth=i,
            running=0,
            gpu_utilization=0.5,
            last_report_age_s=0.1,
            ready=True,
        )
        for i in range(STATE_PAGE_MAX_WORKERS)
    )
    return ClusterStateResponse(
        request_id="page",
        policy="least-loaded",
        active_workers=9,
        total_requests=0,
        cache_hits=0,
        cold_starts=0,
        rejected=0,
        queue_depth_mean=0.0,
        queue_depth_max=0,
        gpu_utilization_mean=0.0,
        uptime_s=1.0,
        offset=5,
        workers=workers,
        max_workers=12_000,
        refused_workers=0,
    )


async def test_oversized_messages_shrink_until_they_fit(eventually) -> None:
    report, page = big_report(), big_page()
    # Both are over the cap as they stand.
    for message in (report, page):
        with pytest.raises(EncodeError) as error:
            Codec(SECRET).encode(message, time.time(), 0)
        assert error.value.reason == "oversized"

    received: list[Message] = []
    receiver = await Endpoint.bind(
        Codec(SECRET), "127.0.0.1", 0, lambda message, _: received.append(message)
    )
    sender = await Endpoint.bind(Codec(SECRET), "127.0.0.1", 0)
    try:
        assert sender.send(report, receiver.address)
        assert sender.send(page, receiver.address)
        await eventually(lambda: len(received) == 2, 2.0, "both shrunk messages arrived")
    finally:
        sender.close()
        receiver.close()

    got_report, got_page = sorted(received, key=lambda m: m.TYPE != "worker_report")
    assert isinstance(got_report, WorkerReport)
    assert isinstance(got_page, ClusterStateResponse)
    # The report kept its fastest-tier (first) models and counted the rest: nothing lost.
    kept = list(got_report.models)
    assert 0 < len(kept) < REPORT_MAX_MODELS
    assert kept == list(report.models)[: len(kept)]
    assert got_report.models_omitted == report.models_omitted + REPORT_MAX_MODELS - len(kept)
    # The page carries fewer workers, the first ones, and the same totals and offset.
    assert 0 < len(got_page.workers) < len(page.workers)
    assert got_page.workers == page.workers[: len(got_page.workers)]
    assert (got_page.offset, got_page.active_workers) == (page.offset, page.active_workers)
    assert sender.rejects.total == receiver.rejects.total == 0


def test_shrink_stops_when_nothing_is_left_to_drop() -> None:
    report = big_report()
    smaller = shrink(report)
    assert isinstance(smaller, WorkerReport)
    assert len(smaller.models) == REPORT_MAX_MODELS // 2
    assert shrink(dataclasses.replace(report, models={})) is None
    page = big_page()
    assert shrink(dataclasses.replace(page, workers=page.workers[:1])) is None
    assert shrink(ClusterStateRequest(request_id="x", offset=0, limit=1)) is None

"""`sllm status` against thousands of workers: complete, or plainly incomplete.

A real coordinator on 127.0.0.1 port 0 learns 3,000 fake workers from real UDP reports
(every fake worker's address is on loopback), and `sllm status` runs as its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace as dataclass_replace
from typing import Any

from sllm.core.admission import MAX_WORKERS_DEFAULT, Admission
from sllm.core.coordinator import NOTHING
from sllm.core.cost import CostModel
from sllm.experiments.launcher import child_environment
from sllm.runtime.client import get_cluster_state
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.udp import Endpoint
from sllm.wire import ClusterStateRequest, Codec, WorkerReport
from sllm.wire.messages import STATE_PAGE_MAX_WORKERS

FAKE_WORKERS = 3_000
STATUS_TIMEOUT_S = 90.0  # 1,000 pages on a shared 2-core machine, with room to spare
# Reports are resent until the coordinator knows every fake worker, for at most this long
# (UDP drops some of a burst on a busy machine).
REGISTER_TIMEOUT_S = 30.0
# Pages the coordinator answers before it goes quiet, in the truncation test.
ANSWERED_PAGES = 10
ANSWERED_WORKERS = STATE_PAGE_MAX_WORKERS * ANSWERED_PAGES


def fake_report(index: int) -> WorkerReport:
    return WorkerReport(
        node_id=f"fake-{index:05d}",
        host="127.0.0.1",
        port=20_000 + index % 10_000,
        http_port=0,
        models={},
        models_omitted=0,
        queue_depth=index % 7,
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


@contextlib.asynccontextmanager
async def crowded() -> AsyncIterator[CoordinatorServer]:
    """A coordinator that learned FAKE_WORKERS workers over UDP from one loopback socket."""
    admission = Admission(capacity=MAX_WORKERS_DEFAULT, per_source_burst=2 * FAKE_WORKERS)
    server = CoordinatorServer(
        "127.0.0.1", 0, Codec(), "least-loaded", {}, CostModel(), 600.0, admission=admission
    )
    await server.start()
    codec = Codec()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        reports = [codec.encode(fake_report(i), time.time(), i) for i in range(FAKE_WORKERS)]

        async def all_known() -> bool:
            # UDP may drop some under a burst: send again what the view still lacks.
            for index, data in enumerate(reports):
                if f"fake-{index:05d}" not in server.core.view:
                    sender.sendto(data, server.address)
                    if index % 64 == 0:
                        await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            return len(server.core.view) == FAKE_WORKERS

        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while not await all_known() and time.monotonic() < deadline:
            pass
        assert len(server.core.view) == FAKE_WORKERS
        yield server
    finally:
        sender.close()
        await server.stop()


async def run_status(port: int, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sllm",
        "status",
        "--coordinator",
        f"127.0.0.1:{port}",
        *args,
        env=child_environment({"LOG_FORMAT": "text", "CLUSTER_SECRET": ""}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), STATUS_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_lists_every_one_of_thousands_of_workers() -> None:
    async with crowded() as server:
        await _test_status_lists_every_one_of_thousands_of_workers(server)


async def _test_status_lists_every_one_of_thousands_of_workers(crowded: CoordinatorServer) -> None:
    code, out, err = await run_status(crowded.address[1], "--json")
    assert code == 0, err
    state = json.loads(out)
    assert state["complete"] is True and state["incomplete"] is None
    assert state["active_workers"] == state["listed"] == FAKE_WORKERS
    ids = [worker["id"] for worker in state["workers"]]
    assert ids == [f"fake-{i:05d}" for i in range(FAKE_WORKERS)]


async def test_status_says_when_pages_go_unanswered_and_exits_non_zero() -> None:
    async with crowded() as server:
        await _test_status_says_when_pages_go_unanswered_and_exits_non_zero(server)


async def _test_status_says_when_pages_go_unanswered_and_exits_non_zero(
    crowded: CoordinatorServer,
) -> None:
    handle = crowded.core.handle

    def goes_quiet(message: Any, now: float, source: str = "", reply_to: Any = None) -> Any:
        if isinstance(message, ClusterStateRequest) and message.offset >= ANSWERED_WORKERS:
            return NOTHING
        return handle(message, now, source, reply_to)

    crowded.core.handle = goes_quiet  # type: ignore[method-assign]
    code, out, err = await run_status(crowded.address[1], "--timeout", "0.3")
    assert code == 3
    assert f"INCOMPLETE: listed {ANSWERED_WORKERS} of {FAKE_WORKERS} workers" in out
    listed = f"listed {ANSWERED_WORKERS} of {FAKE_WORKERS} workers: no answer"
    assert f"sllm status: incomplete: {listed}" in err
    assert len([line for line in out.splitlines() if line.startswith("fake-")]) == ANSWERED_WORKERS


async def test_a_cluster_that_changes_between_pages_is_reported_incomplete() -> None:
    """A worker that joins mid-walk shifts every later page by one: a duplicate appears."""
    async with crowded() as server:
        await _test_a_cluster_that_changes_between_pages_is_reported_incomplete(server)


async def _test_a_cluster_that_changes_between_pages_is_reported_incomplete(
    crowded: CoordinatorServer,
) -> None:
    client = await Endpoint.bind(Codec(), "127.0.0.1", 0)
    request = client.request
    pages = 0

    async def joined_after_the_first_page(*args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        reply = await request(*args, **kwargs)
        pages += 1
        if pages == 1:  # "fake-0" sorts before every other worker
            joining = dataclass_replace(fake_report(0), node_id="fake-0")
            crowded.core.handle(joining, time.monotonic())
        return reply

    client.request = joined_after_the_first_page  # type: ignore[method-assign]
    try:
        state = await get_cluster_state(client, crowded.address, 2.0)
    finally:
        client.close()
    assert state["complete"] is False
    assert state["incomplete"] == (
        f"listed {FAKE_WORKERS} of {FAKE_WORKERS + 1} workers: the workers changed while "
        f"paging (counted {FAKE_WORKERS}, then {FAKE_WORKERS + 1})"
    )


async def test_a_walk_cut_short_by_the_page_cap_is_reported_incomplete() -> None:
    async with crowded() as server:
        await _test_a_walk_cut_short_by_the_page_cap_is_reported_incomplete(server)


async def _test_a_walk_cut_short_by_the_page_cap_is_reported_incomplete(
    crowded: CoordinatorServer,
) -> None:
    client = await Endpoint.bind(Codec(), "127.0.0.1", 0)
    try:
        state = await get_cluster_state(client, crowded.address, 2.0, pages=3)
    finally:
        client.close()
    assert state["complete"] is False
    listed = f"listed {3 * STATE_PAGE_MAX_WORKERS} of {FAKE_WORKERS} workers"
    assert state["incomplete"] == f"{listed}: stopped after 3 pages"

"""Shared helpers for every test tier: async tests, waiting on conditions, and live clusters.

- ``async def test_...`` functions run in a fresh event loop (``asyncio.run``) with a
  deadline, through the `pytest_pyfunc_call` hook below; no pytest-asyncio needed.
- `eventually` waits for a condition with a deadline, polling every ~20 ms. Tests never
  sleep to let something happen: they wait until it has.
- `local_cluster` builds a coordinator and workers in the test's own event loop, on real
  UDP sockets bound to 127.0.0.1 port 0 (the runtime tier).
- `live_cluster` starts the same services as child processes with
  `sllm.experiments.launcher.ServiceProcess` (the integration tier), and stops every one of
  them when the test leaves its ``async with``.

Helpers are handed out as fixtures (the factory-as-fixture pattern) because test modules
cannot import a conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

# A Hugging Face hub on 127.0.0.1 (`fakehub.FakeHub`), for any test that names a hub model.
from fakehub import fake_hub  # noqa: F401  (a fixture)
from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.experiments.launcher import ServiceProcess, isolated_environment
from sllm.runtime.client import get_cluster_state
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.udp import Address, Endpoint
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec

ROOT = Path(__file__).resolve().parent.parent
# An async test that runs longer than this is stuck; failing inside the loop (rather than
# by pytest-timeout's alarm) lets its `async with` blocks stop the processes it started.
ASYNC_TEST_TIMEOUT_S = 45.0
POLL_INTERVAL_S = 0.02
# Short enough that liveness tests finish in about a second, long enough that a report
# is never late on two busy cores (WORKER_TIMEOUT is six report intervals).
REPORT_INTERVAL_S = 0.1
WORKER_TIMEOUT_S = 0.6
# The process-wide marker variable: every child a live test starts carries it, so a test
# can find its children (and their children) in /proc without psutil.
MARKER_VARIABLE = "SLLM_TEST_MARKER"

Predicate = Callable[[], object]
Eventually = Callable[..., Awaitable[Any]]


# -- async tests -------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests with ``asyncio.run``, under `ASYNC_TEST_TIMEOUT_S`."""
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    parameters = inspect.signature(function).parameters
    arguments = {name: pyfuncitem.funcargs[name] for name in parameters}

    async def bounded() -> None:
        try:
            await asyncio.wait_for(function(**arguments), ASYNC_TEST_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"test did not finish within {ASYNC_TEST_TIMEOUT_S} s")

    asyncio.run(bounded())
    return True


async def _eventually(
    predicate: Predicate, timeout: float, what: str = "", interval: float = POLL_INTERVAL_S
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; return that.

    Fails the test with `what` (or the predicate's name) and the last value seen when
    `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            pytest.fail(f"not true within {timeout:g} s: {name} (last value {value!r})")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(predicate, timeout, what="...")``: see `_eventually`."""
    return _eventually


# -- the status format -------------------------------------------------------------------


def _check_status(state: dict[str, Any], worker_ids: Iterable[str]) -> None:
    """`state` has the `status --json` shape and lists exactly `worker_ids`."""
    ids = sorted(worker_ids)
    assert isinstance(state["active_workers"], int)
    assert state["active_workers"] == len(ids)
    assert isinstance(state["total_requests"], int)
    assert state["total_requests"] >= 0
    # The placement figures, under their names and the seed's (`sllm.core.measures`).
    assert isinstance(state["warm_placement_rate"], float)
    assert 0.0 <= state["warm_placement_rate"] <= 1.0
    assert state["cache_hit_rate"] == state["warm_placement_rate"]
    assert state["cache_hits"] == state["warm_placements"]
    placements = state["warm_placements"] + state["cold_placements"]
    assert state["warm_placement_rate"] == (
        state["warm_placements"] / placements if placements else 0.0
    )
    assert "cold_starts" not in state  # the run report's name, for requests that waited
    queue = state["queue_depth"]
    assert sorted(queue["per_worker"]) == ids
    assert all(isinstance(depth, int) and depth >= 0 for depth in queue["per_worker"].values())
    assert isinstance(queue["max"], int)
    assert 0 <= queue["mean"] <= queue["max"]
    gpu = state["gpu_utilization"]
    assert sorted(gpu["per_worker"]) == ids
    assert all(0.0 <= value <= 1.0 for value in gpu["per_worker"].values())
    assert 0.0 <= gpu["mean"] <= 1.0
    workers = state["workers"]
    assert isinstance(workers, list)
    assert [worker["id"] for worker in workers] == ids  # sorted by id, each once
    for worker in workers:
        host, _, port = worker["address"].rpartition(":")
        assert host
        assert 0 < int(port) < 65536
        assert isinstance(worker["models"], dict)
        assert isinstance(worker["queue_depth"], int)
        assert worker["last_report_age_s"] >= 0.0
        assert isinstance(worker["ready"], bool)


@pytest.fixture
def check_status() -> Callable[[dict[str, Any], Iterable[str]], None]:
    """``check_status(state, worker_ids)``: asserts the `status --json` shape."""
    return _check_status


# -- the runtime tier: services in the test's event loop ----------------------------------

CATALOG = served_catalog()
# Prestaged in host memory, llama-3.2-1b (2.5 GB) cold-starts in about 0.6 s.
SMALL_MODEL = "llama-3.2-1b"


@dataclass
class LocalCluster:
    """A coordinator, its workers and a client endpoint, all in this event loop."""

    coordinator: CoordinatorServer
    workers: list[WorkerServer]
    client: Endpoint

    @property
    def address(self) -> Address:
        return self.coordinator.address

    def known(self) -> set[str]:
        """The worker ids in the coordinator's view, read straight from the core."""
        return {entry.worker_id for entry in self.coordinator.core.view.entries()}


@contextlib.asynccontextmanager
async def _local_cluster(
    workers: int = 2,
    policy: str = "least-loaded",
    secret: bytes | None = None,
    worker_timeout: float = WORKER_TIMEOUT_S,
    report_interval: float = REPORT_INTERVAL_S,
) -> AsyncIterator[LocalCluster]:
    """Start a coordinator and `workers` workers on 127.0.0.1 port 0; stop them on exit.

    Each socket gets its own codec (the replay cache is per socket), all with `secret`.
    """
    cost = CostModel()
    coordinator = CoordinatorServer(
        "127.0.0.1", 0, Codec(secret), policy, CATALOG, cost, worker_timeout, seed=1
    )
    await coordinator.start()
    started: list[WorkerServer] = []
    client: Endpoint | None = None
    try:
        for index in range(workers):
            worker = WorkerServer(
                f"w{index + 1}",
                "127.0.0.1",
                0,
                coordinator.address,
                Codec(secret),
                CATALOG,
                cost,
                WorkerResources(),
                report_interval,
                prestage=Tier.HOST,
            )
            await worker.start()
            started.append(worker)
        client = await Endpoint.bind(Codec(secret), "127.0.0.1", 0)
        yield LocalCluster(coordinator, started, client)
    finally:
        if client is not None:
            client.close()
        for worker in started:
            await worker.stop()
        await coordinator.stop()


@pytest.fixture
def local_cluster() -> Callable[..., contextlib.AbstractAsyncContextManager[LocalCluster]]:
    """``async with local_cluster(workers=2, policy=..., secret=...) as cluster:``."""
    return _local_cluster


# -- the integration tier: services as child processes -----------------------------------


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``SLLM_TEST_MARKER=marker``.

    Scans /proc (psutil is not a dependency); processes of other users, and processes that
    exit during the scan, are skipped. Zombies have an empty environment and do not count.
    """
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def find_marked() -> Callable[[str], list[int]]:
    """``find_marked(marker)``: see `marked_processes`."""
    return marked_processes


@pytest.fixture
def live_env() -> dict[str, str]:
    """Environment for child services: fast reports, a short timeout, a fresh marker.

    Everything a service reads from the environment is set here, so the developer's own
    variables (a CLUSTER_SECRET, a COORDINATOR_PORT) cannot leak into a test.
    """
    return isolated_environment(
        {
            "LOG_FORMAT": "json",
            "REPORT_INTERVAL": str(REPORT_INTERVAL_S),
            "WORKER_TIMEOUT": str(WORKER_TIMEOUT_S),
            "BIND_HOST": "127.0.0.1",
            "COORDINATOR_HOST": "127.0.0.1",
            MARKER_VARIABLE: uuid.uuid4().hex,
        }
    )


@dataclass
class LiveCluster:
    """Child-process services for one test; use as ``async with``, which stops them all.

    On the way out after a failure the services' last log lines go to stderr, where pytest
    shows them with the failure.
    """

    env: dict[str, str]
    services: list[ServiceProcess] = field(default_factory=list)
    coordinator_port: int = 0
    client: Endpoint | None = None

    async def __aenter__(self) -> LiveCluster:
        self.client = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.client is not None:
            self.client.close()
        await asyncio.gather(*(service.kill() for service in self.services))
        if error is not None:
            for service in self.services:
                tail = "\n".join(list(service.lines)[-20:])
                print(
                    f"--- {service.name} (exit {service.process.returncode}) ---\n{tail}",
                    file=sys.stderr,
                )

    async def start(self, name: str, args: list[str]) -> ServiceProcess:
        service = await ServiceProcess.start(name, args, self.env)
        self.services.append(service)
        return service

    async def start_coordinator(
        self, policy: str = "least-loaded", port: int = 0
    ) -> ServiceProcess:
        args = ["coordinator", "--host", "127.0.0.1", "--port", str(port), "--policy", policy]
        service = await self.start("coordinator", args)
        self.coordinator_port = service.port
        return service

    async def start_workers(self, *node_ids: str) -> list[ServiceProcess]:
        assert self.coordinator_port, "start the coordinator first"
        return list(
            await asyncio.gather(
                *(
                    self.start(
                        node_id,
                        [
                            "worker",
                            "--node-id",
                            node_id,
                            "--host",
                            "127.0.0.1",
                            "--port",
                            "0",
                            "--coordinator-host",
                            "127.0.0.1",
                            "--coordinator-port",
                            str(self.coordinator_port),
                        ],
                    )
                    for node_id in node_ids
                )
            )
        )

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.coordinator_port)

    async def state(self, timeout: float = 0.5) -> dict[str, Any] | None:
        """The coordinator's cluster state, or None when it does not answer in time."""
        assert self.client is not None
        try:
            return await get_cluster_state(self.client, self.address, timeout)
        except TimeoutError:
            return None

    async def worker_ids(self) -> set[str] | None:
        state = await self.state()
        return None if state is None else {worker["id"] for worker in state["workers"]}


@pytest.fixture
def live_cluster(live_env: dict[str, str]) -> LiveCluster:
    """An unstarted `LiveCluster`; enter it with ``async with live_cluster:``."""
    return LiveCluster(live_env)

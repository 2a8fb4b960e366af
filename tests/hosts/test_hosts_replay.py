"""Live versus simulated, decision by decision: a live run's inputs, replayed through the
simulator's coordinator host, give the same decisions in the same order.

The live run is real: a `CoordinatorServer` and three `WorkerServer`s (sim engine) on
127.0.0.1 port 0, driven by the load generator's `Driver` (the shared request client on
the asyncio driver). Every call the live coordinator host makes to its core is recorded
with the time and source the core got. The replay feeds those messages, at those times,
through `sllm.hosts.coordinator.CoordinatorHost` on the simulator's kernel driver and
network, and collects the ScheduleResponses the network delivers.

The worker timeout is long, so the live expiry timer never drops a worker: what decides
is then only the messages (a ScheduleRequest expires silent workers itself before
placing). The replay with another seed or policy must differ, or the test proves nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sllm.catalog import served_catalog
from sllm.core.coordinator import Coordinator, Outcome
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.experiments.centralized import Driver
from sllm.hosts.coordinator import CoordinatorHost
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.udp import Endpoint
from sllm.runtime.worker import WorkerServer
from sllm.sim.hosts import COORDINATOR, KernelDriver
from sllm.sim.kernel import Kernel
from sllm.sim.network import LinkModel, Network
from sllm.wire import Codec, Message, ScheduleResponse
from sllm.workload import Arrival

CATALOG = served_catalog()
MODELS = list(CATALOG)[:4]
WORKERS = 3
REQUESTS = 40
REPORT_INTERVAL_S = 0.05
# Long enough that no worker is expired during the run (see the module docstring).
WORKER_TIMEOUT_S = 30.0
ARRIVALS_OVER_S = 1.5

Decision = tuple[str, str, str]  # (request id, action, worker id)


@dataclass(frozen=True)
class Input:
    """One call of the live core's `handle`: what it got, as it got it."""

    now: float
    message: Message
    source: str
    port: int


@dataclass
class Recording:
    inputs: list[Input]
    decisions: list[Decision]
    started_at: float


class Recorder:
    """Wraps the live host's `receive` (for the sender's port) and its core's `handle`
    (for the time and source the core got, and the decisions it made)."""

    def __init__(
        self,
        handle: Callable[[Message, float, str, object], Outcome],
        receive: Callable[[Message, tuple[str, int]], None],
    ) -> None:
        self._handle = handle
        self._receive = receive
        self._port = 0
        self.inputs: list[Input] = []
        self.decisions: list[Decision] = []

    def receive(self, message: Message, sender: tuple[str, int]) -> None:
        self._port = sender[1]
        self._receive(message, sender)

    def handle(
        self, message: Message, now: float, source: str = "", reply_to: object = None
    ) -> Outcome:
        outcome = self._handle(message, now, source, reply_to)
        self.inputs.append(Input(now, message, source, self._port))
        replies = outcome.replies
        self.decisions.extend(_decision(r) for r in replies if type(r) is ScheduleResponse)
        return outcome


def _decision(message: ScheduleResponse) -> Decision:
    return (message.request_id, message.action, message.worker_id)


def _arrivals(seed: int) -> list[Arrival]:
    draw = random.Random(seed)
    times = sorted(draw.uniform(0.0, ARRIVALS_OVER_S) for _ in range(REQUESTS))
    return [
        Arrival(time_s, draw.choice(MODELS), draw.randint(16, 256), draw.randint(4, 32))
        for time_s in times
    ]


async def _record_live_run(policy: str, seed: int, eventually: Any) -> Recording:
    cost = CostModel()
    coordinator = CoordinatorServer(
        "127.0.0.1", 0, Codec(), policy, CATALOG, cost, WORKER_TIMEOUT_S, seed=seed
    )
    core = coordinator.core
    recorder = Recorder(core.handle, coordinator.hosting.receive)
    core.handle = recorder.handle  # type: ignore[method-assign]
    coordinator.hosting.receive = recorder.receive  # type: ignore[method-assign]
    await coordinator.start()
    workers: list[WorkerServer] = []
    client: Endpoint | None = None
    try:
        for index in range(WORKERS):
            worker = WorkerServer(
                f"w{index + 1}",
                "127.0.0.1",
                0,
                coordinator.address,
                Codec(),
                CATALOG,
                cost,
                WorkerResources(),
                REPORT_INTERVAL_S,
                prestage=Tier.HOST,
            )
            await worker.start()
            workers.append(worker)
        await eventually(lambda: len(core.view) == WORKERS, 10.0, what="every worker known")
        client = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        driver = Driver(client, coordinator.address)
        await driver.replay(_arrivals(seed), asyncio.Event())
        await eventually(
            lambda: len(recorder.decisions) >= REQUESTS, 10.0, what="every request decided"
        )
        for task in list(driver.in_flight):
            task.cancel()
        await asyncio.gather(*driver.in_flight, return_exceptions=True)
    finally:
        if client is not None:
            client.close()
        for worker in workers:
            await worker.stop()
        await coordinator.stop()
    return Recording(recorder.inputs, recorder.decisions, core.started_at)


def _replay(recording: Recording, policy: str, seed: int) -> list[Decision]:
    """The recorded inputs, at their times, through the simulator's coordinator host."""
    kernel = Kernel(start=recording.started_at)
    # No jitter: datagrams arrive in the order they were sent.
    network = Network(kernel, random.Random(0), LinkModel(jitter_s=0.0))
    host = CoordinatorHost(
        KernelDriver(kernel, network, COORDINATOR),
        worker_timeout_s=WORKER_TIMEOUT_S,
        source_of=lambda name: name.rpartition(":")[0],
    )
    network.attach(COORDINATOR, host.receive)
    host.start(
        Coordinator(policy, CATALOG, CostModel(), WORKER_TIMEOUT_S, random.Random(seed), kernel.now)
    )
    decided: list[Decision] = []

    def collect(message: Message, source: str) -> None:
        if type(message) is ScheduleResponse:
            decided.append(_decision(message))

    def deliver(item: Input) -> None:
        network.send(f"{item.source}:{item.port}", COORDINATOR, item.message, transit=False)

    for item in recording.inputs:
        name = f"{item.source}:{item.port}"
        if name not in {node.name for node in network.nodes()}:
            network.attach(name, collect)
        kernel.at(item.now, deliver, item)
    kernel.run(recording.inputs[-1].now + 1.0)
    return decided


async def test_a_replayed_live_run_makes_the_same_decisions_in_the_same_order(
    eventually: Any,
) -> None:
    recording = await _record_live_run("startup-aware", 7, eventually)
    assert len(recording.decisions) >= REQUESTS
    assert "reject" not in {action for _, action, _ in recording.decisions}
    assert len({worker for _, _, worker in recording.decisions}) > 1  # a real choice

    assert _replay(recording, "startup-aware", 7) == recording.decisions
    # The comparison can fail: another policy decides otherwise on the same inputs.
    assert _replay(recording, "round-robin", 7) != recording.decisions


async def test_a_replay_of_a_randomized_policy_needs_the_live_seed(eventually: Any) -> None:
    """power-of-two draws two workers per request from the coordinator's seeded generator:
    the live seed replays the run exactly, another seed does not."""
    recording = await _record_live_run("power-of-two", 3, eventually)
    assert _replay(recording, "power-of-two", 3) == recording.decisions
    assert _replay(recording, "power-of-two", 4) != recording.decisions

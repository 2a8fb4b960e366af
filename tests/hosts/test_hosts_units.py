"""The hosts on the simulator's kernel driver, one property at a time.

Each test drives one host (`sllm.hosts`) through the real kernel and network with no
jitter, so every time below is exact: a crashed process's timers, the one keep-alive
timer, and the request client's timings, timeouts and retries.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from sllm.catalog import served_catalog
from sllm.core.coordinator import HOLD, OVER_DEADLINE, refusal
from sllm.core.cost import CostModel
from sllm.core.outstanding import RequestOutcome
from sllm.core.tiers import Tier
from sllm.core.worker import MIGRATED, WorkerResources, WorkerState, prestaged
from sllm.engines.sim import SimEngine
from sllm.hosts.client import RequestClient
from sllm.hosts.driver import Callback
from sllm.hosts.worker import WorkerHost
from sllm.sim.hosts import KernelDriver
from sllm.sim.kernel import Kernel
from sllm.sim.network import LinkModel, Network
from sllm.wire import (
    InferenceRequest,
    InferenceResult,
    InferenceStarted,
    Message,
    ScheduleRequest,
    ScheduleResponse,
)
from sllm.workload import Arrival

CATALOG = served_catalog()
MODEL = "llama-3.2-1b"
LATENCY_S = 0.001
KEEP_ALIVE_S = 5.0
REQUESTS = 20


class Inbox:
    """A node on the network that keeps what it receives, with the time."""

    def __init__(self, network: Network, name: str) -> None:
        self.network = network
        self.name = name
        self.messages: list[tuple[float, Message]] = []
        network.attach(name, self.receive)

    def receive(self, message: Message, source: str) -> None:
        self.messages.append((self.network.kernel.now, message))

    def of(self, kind: type[Message]) -> list[Message]:
        return [message for _, message in self.messages if type(message) is kind]


def _request(request_id: str) -> InferenceRequest:
    return InferenceRequest(request_id=request_id, model=MODEL, prompt_tokens=100, output_tokens=10)


def _world() -> tuple[Kernel, Network]:
    kernel = Kernel()
    return kernel, Network(kernel, random.Random(0), LinkModel(latency_s=LATENCY_S, jitter_s=0.0))


def _state(resources: WorkerResources, now: float = 0.0) -> WorkerState:
    preloaded = prestaged(CATALOG, resources, Tier.HOST)
    return WorkerState("w", resources, CATALOG, CostModel(), preloaded, now=now)


class CountingDriver(KernelDriver):
    """The kernel driver, keeping the time of every `call_at` (the keep-alive's)."""

    __slots__ = ("calls_at",)

    def __init__(self, kernel: Kernel, network: Network, name: str) -> None:
        super().__init__(kernel, network, name)
        self.calls_at: list[float] = []
        self.call_at = self._counted

    def _counted(self, when: float, callback: Callback, argument: Any) -> None:
        self.calls_at.append(when)
        self.kernel.at(when, callback, argument)


def _worker(kernel: Kernel, network: Network, resources: WorkerResources) -> WorkerHost[str]:
    driver = CountingDriver(kernel, network, "w")
    host = WorkerHost(driver, _state(resources), SimEngine(CATALOG, CostModel()))
    network.attach("w", host.receive)
    host.come_up()
    return host


def test_a_crashed_workers_timers_do_nothing_in_the_process_that_replaces_it() -> None:
    kernel, network = _world()
    client = Inbox(network, "client")
    host = _worker(kernel, network, WorkerResources())
    load_s = SimEngine(CATALOG, CostModel()).timing(MODEL).load_s[Tier.HOST]
    host.submit(_request("r1"), "client")  # a cold start: a load timer
    kernel.run(load_s / 10)
    host.kill()
    restart_at = load_s / 2
    kernel.run(restart_at)
    host.come_up(_state(WorkerResources(), now=kernel.now))
    host.submit(_request("r2"), "client")  # the same load, again
    kernel.run(10 * load_s)
    # The old process's load timer came due at `load_s` and did nothing: the new process's
    # own load, begun at the restart, is what started r2.
    started = [(at, m.request_id) for at, m in client.messages if type(m) is InferenceStarted]
    assert len(started) == 1
    at, request_id = started[0]
    assert request_id == "r2"
    assert at >= restart_at + load_s
    assert [m.request_id for m in client.of(InferenceResult)] == ["r2"]  # type: ignore[attr-defined]


def test_the_keep_alive_is_one_timer_kept_at_the_next_deadline() -> None:
    kernel, network = _world()
    client = Inbox(network, "client")
    host = _worker(kernel, network, WorkerResources(keep_alive_s=KEEP_ALIVE_S))

    def submit(index: int) -> None:
        host.submit(_request(f"r{index}"), "client")

    # Requests a second apart: each pushes the idle deadline later.
    for index in range(REQUESTS):
        kernel.at(float(index), submit, index)
    kernel.run(float(REQUESTS))  # every request done
    assert len(client.of(InferenceResult)) == REQUESTS
    last_done = client.messages[-1][0] - LATENCY_S
    expiry = last_done + KEEP_ALIVE_S
    kernel.run(expiry - 1e-6)
    assert host.state.tier_of(MODEL) is Tier.GPU
    kernel.run(expiry + 1e-6)
    assert host.state.tier_of(MODEL) is Tier.HOST  # idle for the keep-alive: off the GPU
    armed = host.driver.calls_at  # type: ignore[attr-defined]
    # A later deadline arms no timer: the pending one wakes early and re-arms, so there is
    # one per keep-alive period, not one per request.
    assert 1 <= len(armed) <= REQUESTS / KEEP_ALIVE_S + 2 < REQUESTS
    assert armed == sorted(armed)
    assert abs(armed[-1] - expiry) < 1e-9


def _client(
    kernel: Kernel, network: Network, refusal_retries: int = 0
) -> tuple[RequestClient[str], list[RequestOutcome]]:
    ended: list[RequestOutcome] = []
    client = RequestClient(
        KernelDriver(kernel, network, "client"),
        scheduler=lambda: "scheduler",
        worker_address=lambda decision: decision.host,
        schedule_timeout_s=2.0,
        result_timeout_s=60.0,
        refusal_retries=refusal_retries,
        ended=lambda outcome, arrival: ended.append(outcome),
    )
    network.attach("client", client.receive)
    return client, ended


def _placed(request_id: str, worker: str) -> ScheduleResponse:
    return ScheduleResponse(
        request_id=request_id,
        worker_id=worker,
        host=worker,
        port=8000,
        http_port=0,
        action="serve",
        estimated_wait_s=0.0,
        reason="",
    )


def _result(request_id: str, worker: str, ttft_s: float) -> InferenceResult:
    return InferenceResult(
        request_id=request_id,
        worker_id=worker,
        ok=True,
        reason="",
        cold_start=False,
        queue_s=0.05,
        ttft_s=ttft_s,
        e2e_s=0.4,
    )


def test_time_to_first_token_is_the_decision_wait_plus_the_workers_own() -> None:
    """And of a duplicated result, the first one counts."""
    kernel, network = _world()
    scheduler = Inbox(network, "scheduler")
    worker = Inbox(network, "w1")
    client, ended = _client(kernel, network)
    client.begin("r1", Arrival(0.0, MODEL, 100, 10))
    kernel.at(0.010, lambda _: network.send("scheduler", "client", _placed("r1", "w1")), None)
    kernel.run(0.1)
    assert [m.request_id for m in scheduler.of(ScheduleRequest)] == ["r1"]  # type: ignore[attr-defined]
    assert len(worker.of(InferenceRequest)) == 1
    result = _result("r1", "w1", ttft_s=0.2)
    kernel.at(0.5, lambda _: network.send("w1", "client", result), None)
    kernel.at(0.6, lambda _: network.send("w1", "client", result), None)  # a duplicate
    kernel.run(1.0)
    assert len(ended) == 1
    (outcome,) = ended
    decided_at = 0.010 + LATENCY_S
    assert outcome.ok and outcome.worker_id == "w1"
    assert abs(outcome.ttft_s - (decided_at + 0.2)) < 1e-9
    assert abs(outcome.e2e_s - (0.5 + LATENCY_S)) < 1e-9
    assert outcome.queue_s == 0.05


def test_no_decision_ends_a_request_at_the_schedule_timeout_and_a_late_one_is_dropped() -> None:
    kernel, network = _world()
    Inbox(network, "scheduler")
    worker = Inbox(network, "w1")
    client, ended = _client(kernel, network)
    client.begin("r1", Arrival(0.0, MODEL, 100, 10))
    kernel.run(1.999)
    assert ended == []
    kernel.run(2.0)
    assert [(o.request_id, o.ok, o.reason) for o in ended] == [("r1", False, "no_decision")]
    network.send("scheduler", "client", _placed("r1", "w1"))
    kernel.run(3.0)
    assert worker.of(InferenceRequest) == []  # the late decision sends nothing


def test_a_request_queued_on_a_lost_worker_is_placed_again_and_a_started_one_fails() -> None:
    kernel, network = _world()
    scheduler = Inbox(network, "scheduler")
    Inbox(network, "w1")
    client, ended = _client(kernel, network)
    client.begin("queued", Arrival(0.0, MODEL, 100, 10))
    client.begin("running", Arrival(0.0, MODEL, 100, 10))
    network.send("scheduler", "client", _placed("queued", "w1"))
    network.send("scheduler", "client", _placed("running", "w1"))
    network.send("w1", "client", InferenceStarted(request_id="running", worker_id="w1"))
    kernel.run(0.1)
    client.worker_lost("w1")
    kernel.run(0.2)
    asked = [m.request_id for m in scheduler.of(ScheduleRequest)]  # type: ignore[attr-defined]
    assert asked == ["queued", "running", "queued"]
    assert [(o.request_id, o.reason, o.worker_id) for o in ended] == [
        ("running", "worker_lost", "w1")
    ]


def test_a_migrated_request_is_placed_again_with_the_rest_and_keeps_its_first_token() -> None:
    """A worker moved the running request off after 7 of its 10 tokens: the client asks
    again for the other 3, with those 7 in the prompt (the next worker computes them
    again), and the first token keeps the time it came on the first worker."""
    kernel, network = _world()
    scheduler = Inbox(network, "scheduler")
    second = Inbox(network, "w2")
    Inbox(network, "w1")
    client, ended = _client(kernel, network)
    client.begin("r1", Arrival(0.0, MODEL, 100, 10))
    network.send("scheduler", "client", _placed("r1", "w1"))
    network.send("w1", "client", InferenceStarted(request_id="r1", worker_id="w1"))
    moved = dataclasses.replace(
        _result("r1", "w1", ttft_s=0.2), ok=False, reason=MIGRATED, generated_tokens=7
    )
    kernel.at(0.5, lambda _: network.send("w1", "client", moved), None)
    kernel.run(0.6)
    asks = scheduler.of(ScheduleRequest)
    assert [(m.prompt_tokens, m.output_tokens) for m in asks] == [(100, 10), (107, 3)]  # type: ignore[attr-defined]
    kernel.at(0.7, lambda _: network.send("scheduler", "client", _placed("r1", "w2")), None)
    kernel.run(0.8)
    (rest,) = second.of(InferenceRequest)
    assert (rest.prompt_tokens, rest.output_tokens) == (107, 3)  # type: ignore[attr-defined]
    kernel.at(1.0, lambda _: network.send("w2", "client", _result("r1", "w2", 0.1)), None)
    kernel.run(1.1)
    (outcome,) = ended
    assert outcome.ok and outcome.worker_id == "w2"
    assert abs(outcome.ttft_s - (LATENCY_S + 0.2)) < 1e-9  # decided at 1 ms, then 0.2 s
    assert client.outstanding.migrated_total == 1


def test_a_request_waiting_to_ask_again_is_not_timed_out_by_an_earlier_ask() -> None:
    """A scheduler that keeps naming a worker the client knows dead is asked again every
    STALE_PLACEMENT_DELAY_S; each ask gets its answer in time, so no ask times out, even
    when the wait crosses the first ask's decision deadline."""
    kernel, network = _world()
    worker = Inbox(network, "w2")
    client, ended = _client(kernel, network)
    asks: list[float] = []

    def schedule(message: Message, source: str) -> None:
        asks.append(kernel.now)
        stale = kernel.now < 3.0  # w1 until then, w2 after
        decision = _placed(message.request_id, "w1" if stale else "w2")  # type: ignore[attr-defined]
        network.send("scheduler", "client", decision)

    network.attach("scheduler", schedule)
    client.worker_lost("w1")
    client.begin("r1", Arrival(0.0, MODEL, 100, 10))
    kernel.run(5.0)
    assert len(asks) > 4  # asked again and again across the first ask's deadline (2 s)
    assert ended == []
    assert [m.request_id for m in worker.of(InferenceRequest)] == ["r1"]  # type: ignore[attr-defined]


def test_a_refusal_with_a_retry_after_is_asked_again_that_much_later() -> None:
    """With two retries, as the official openai client: over the deadline with an estimate
    of 12.2 s, asked again 13 s later, twice, then failed; full queues, asked again a
    second later and served, its wait counted in its time to first token; a model no
    worker fits, failed at once."""
    kernel, network = _world()
    Inbox(network, "w1")
    client, ended = _client(kernel, network, refusal_retries=2)
    asks: list[tuple[str, float]] = []

    def schedule(message: Message, source: str) -> None:
        request_id = message.request_id  # type: ignore[attr-defined]
        asks.append((request_id, round(kernel.now, 6)))
        if request_id == "late":
            decision = refusal(request_id, OVER_DEADLINE, estimated_wait_s=12.2)
        elif request_id == "huge":
            decision = refusal(request_id, "model_too_large")
        elif sum(asked == request_id for asked, _ in asks) == 1:
            decision = refusal(request_id, "queues_full")
        else:
            decision = _placed(request_id, "w1")
        network.send("scheduler", "client", decision)

    network.attach("scheduler", schedule)
    for request_id in ("late", "huge", "busy"):
        client.begin(request_id, Arrival(0.0, MODEL, 100, 10))
    kernel.at(1.5, lambda _: network.send("w1", "client", _result("busy", "w1", 0.2)), None)
    kernel.run(59.0)
    hop = 2 * LATENCY_S  # ask and answer
    at = LATENCY_S  # when the first ask reaches the scheduler
    assert asks == [
        ("late", at),
        ("huge", at),
        ("busy", at),
        ("busy", round(at + hop + 1.0, 6)),
        ("late", round(at + hop + 13.0, 6)),
        ("late", round(at + 2 * (hop + 13.0), 6)),
    ]
    outcomes = {o.request_id: o for o in ended}
    assert outcomes["huge"].reason == "rejected: model_too_large"
    assert outcomes["late"].reason == f"rejected: {OVER_DEADLINE}"
    busy = outcomes["busy"]
    assert busy.ok
    assert abs(busy.ttft_s - (2 * hop + 1.0 + 0.2)) < 1e-9  # placed after the retry
    assert list(outcomes) == ["huge", "busy", "late"]


def test_without_retries_a_refusal_ends_the_request_at_once() -> None:
    kernel, network = _world()
    client, ended = _client(kernel, network)
    network.attach(
        "scheduler",
        lambda message, source: network.send(
            "scheduler",
            "client",
            refusal(message.request_id, "queues_full"),  # type: ignore[attr-defined]
        ),
    )
    client.begin("r1", Arrival(0.0, MODEL, 100, 10))
    kernel.run(10.0)
    assert [(o.request_id, o.reason) for o in ended] == [("r1", "rejected: queues_full")]


def _hold(request_id: str, within_s: float) -> ScheduleResponse:
    return dataclasses.replace(refusal(request_id, "held"), action=HOLD, estimated_wait_s=within_s)


def test_a_held_request_waits_past_the_schedule_timeout_for_its_decision() -> None:
    """Held (the decision comes within 30 s), then placed 20 s later: the client waits
    for it past its 2 s decision timeout, and the wait counts in the time to first token."""
    kernel, network = _world()
    worker = Inbox(network, "w1")
    client, ended = _client(kernel, network)
    network.attach(
        "scheduler",
        lambda message, source: network.send("scheduler", "client", _hold("r1", 30.0)),
    )
    client.begin("r1", Arrival(0.0, MODEL, 100, 10))
    kernel.at(20.0, lambda _: network.send("scheduler", "client", _placed("r1", "w1")), None)
    kernel.run(19.9)
    assert ended == [] and worker.of(InferenceRequest) == []
    kernel.run(20.5)
    assert len(worker.of(InferenceRequest)) == 1
    kernel.at(21.0, lambda _: network.send("w1", "client", _result("r1", "w1", 0.2)), None)
    kernel.run(22.0)
    (outcome,) = ended
    assert outcome.ok
    assert abs(outcome.ttft_s - (20.0 + LATENCY_S + 0.2)) < 1e-9


def test_a_held_request_whose_decision_never_comes_ends_after_the_hold() -> None:
    kernel, network = _world()
    client, ended = _client(kernel, network)
    network.attach(
        "scheduler",
        lambda message, source: network.send("scheduler", "client", _hold("r1", 30.0)),
    )
    client.begin("r1", Arrival(0.0, MODEL, 100, 10))
    answered = 2 * LATENCY_S
    kernel.run(answered + 30.0 + 2.0 - 0.01)  # the hold, then the decision timeout
    assert ended == []
    kernel.run(answered + 30.0 + 2.0)
    assert [(o.request_id, o.reason) for o in ended] == [("r1", "no_decision")]

"""The virtual network: latency, loss, duplication, reordering, partitions, byte counts."""

from __future__ import annotations

import math
import random
from statistics import NormalDist, fmean
from typing import Any

import pytest

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources, WorkerState, prestaged
from sllm.runtime.udp import Endpoint
from sllm.sim.cluster import CentralizedCluster, ClusterConfig
from sllm.sim.kernel import Kernel
from sllm.sim.network import (
    CONTROL,
    DATA,
    JITTER_SIGMA,
    JITTER_STRATA,
    LinkModel,
    Network,
    Sizer,
    jitter_factors,
)
from sllm.wire import (
    Codec,
    EncodeError,
    GossipPush,
    InferenceRequest,
    MemberStateResponse,
    MemberSummary,
    MemberUpdate,
    Message,
    ScheduleRequest,
    WorkerReport,
)
from sllm.wire.messages import MEMBER_PAGE_MAX, MODEL_NAME_MAX_LEN, REPORT_MAX_MODELS
from sllm.workload.options import WorkloadOptions, make_workload

SENDS = 4000


def network(seed: int = 1, **link: float) -> tuple[Kernel, Network, list[tuple[float, Message]]]:
    kernel = Kernel()
    net = Network(kernel, random.Random(seed), LinkModel(**link))
    inbox: list[tuple[float, Message]] = []
    net.attach("a", lambda message, source: None)
    net.attach("b", lambda message, source: inbox.append((kernel.now, message)))
    return kernel, net, inbox


def request(index: int) -> ScheduleRequest:
    return ScheduleRequest(
        request_id=f"r{index}",
        model="llama-3.2-1b",
        priority=0,
        prompt_tokens=100,
        output_tokens=10,
    )


def test_latency_floor_and_jitter() -> None:
    kernel, net, inbox = network(latency_s=0.001, jitter_s=0.0005)
    for index in range(SENDS):
        net.send("a", "b", request(index))
    kernel.run(10.0)
    delays = sorted(when for when, _ in inbox)
    assert len(delays) == SENDS
    assert delays[0] > 0.001
    median = delays[len(delays) // 2] - 0.001
    assert 0.0004 < median < 0.0006  # the log-normal's median is jitter_s


def test_jitter_factors_follow_the_log_normal_law() -> None:
    factors = sorted(jitter_factors())
    law = NormalDist(0.0, JITTER_SIGMA)
    assert len(factors) == JITTER_STRATA
    assert fmean(factors) == pytest.approx(math.exp(JITTER_SIGMA**2 / 2), rel=1e-4)
    for quantile in (0.01, 0.5, 0.9, 0.99, 0.999):
        expected = math.exp(law.inv_cdf(quantile))
        assert factors[int(quantile * JITTER_STRATA)] == pytest.approx(expected, rel=2e-3)


def test_jitter_reorders_a_burst() -> None:
    kernel, net, inbox = network(latency_s=0.001, jitter_s=0.0005)
    for index in range(200):
        net.send("a", "b", request(index))
    kernel.run(1.0)
    order = [int(message.request_id[1:]) for _, message in inbox]  # type: ignore[attr-defined]
    assert sorted(order) == list(range(200))
    assert order != list(range(200))


def test_no_jitter_keeps_order() -> None:
    kernel, net, inbox = network(latency_s=0.001, jitter_s=0.0)
    for index in range(50):
        net.send("a", "b", request(index))
    kernel.run(1.0)
    assert [message.request_id for _, message in inbox] == [f"r{i}" for i in range(50)]  # type: ignore[attr-defined]


def test_loss_drops_about_the_given_share() -> None:
    kernel, net, inbox = network(loss=0.2)
    for index in range(SENDS):
        net.send("a", "b", request(index))
    kernel.run(1.0)
    assert net.lost + len(inbox) == SENDS
    assert 0.17 < net.lost / SENDS < 0.23


def test_duplication_delivers_second_copies() -> None:
    kernel, net, inbox = network(duplicate=0.1)
    for index in range(SENDS):
        net.send("a", "b", request(index))
    kernel.run(1.0)
    assert len(inbox) == SENDS + net.duplicated
    assert 0.08 < net.duplicated / SENDS < 0.12


def test_the_same_seed_gives_the_same_deliveries() -> None:
    runs = []
    for _ in range(2):
        kernel, net, inbox = network(seed=5, loss=0.1, duplicate=0.1, jitter_s=0.001)
        for index in range(500):
            net.send("a", "b", request(index))
        kernel.run(1.0)
        runs.append([(when, message) for when, message in inbox])
    assert runs[0] == runs[1]
    kernel, net, inbox = network(seed=6, loss=0.1, duplicate=0.1, jitter_s=0.001)
    for index in range(500):
        net.send("a", "b", request(index))
    kernel.run(1.0)
    assert inbox != runs[0]


def test_partition_cuts_between_groups_until_healed() -> None:
    kernel, net, inbox = network()
    seen_by_c: list[Message] = []
    net.attach("c", lambda message, source: seen_by_c.append(message))
    net.partition([{"b"}])
    net.send("a", "b", request(1))
    net.send("c", "b", request(2))
    net.send("a", "c", request(3))  # both outside the group: still connected
    kernel.run(1.0)
    assert inbox == []
    assert len(seen_by_c) == 1
    assert net.cut == 2
    assert not net.can_talk("a", "b") and net.can_talk("a", "c")
    net.heal()
    net.send("a", "b", request(4))
    kernel.run(2.0)
    assert [message.request_id for _, message in inbox] == ["r4"]  # type: ignore[attr-defined]


def test_a_down_node_loses_what_arrives() -> None:
    kernel, net, inbox = network()
    net.send("a", "b", request(1))
    net.set_up("b", False)  # dies while the datagram is in flight
    kernel.run(1.0)
    assert inbox == [] and net.to_down == 1
    net.set_up("b", True)
    net.send("a", "b", request(2))
    kernel.run(2.0)
    assert len(inbox) == 1


def test_loss_window_applies_only_inside() -> None:
    kernel, net, inbox = network()
    net.add_loss_window(1.0, 2.0, 1.0)
    net.send("a", "b", request(1))
    kernel.run(1.5)
    net.send("a", "b", request(2))  # inside the window: lost
    kernel.run(2.5)
    net.send("a", "b", request(3))
    kernel.run(3.0)
    assert [message.request_id for _, message in inbox] == ["r1", "r3"]  # type: ignore[attr-defined]
    assert net.lost == 1


def test_traffic_is_counted_per_node_and_plane() -> None:
    kernel, net, _ = network()
    codec = Codec()
    control, data = (
        request(1),
        InferenceRequest(
            request_id="r1", model="llama-3.2-1b", prompt_tokens=100, output_tokens=10
        ),
    )
    net.send("a", "b", control)
    net.send("a", "b", data)
    kernel.run(1.0)
    a, b = net.node("a"), net.node("b")
    assert a.sent_messages == [1, 1]
    assert a.sent_bytes[CONTROL] == len(codec.encode(control, 0.0, 0))
    assert a.sent_bytes[DATA] == len(codec.encode(data, 0.0, 0))
    assert b.received_bytes == a.sent_bytes
    signed = Sizer(signed=True).shape(control).last
    assert signed == len(Codec(secret=b"k").encode(control, 0.0, 0))


def test_sizer_samples_then_charges_the_mean() -> None:
    sizer = Sizer(samples=4)
    catalog = served_catalog()
    resources = WorkerResources()
    state = WorkerState(
        "worker-1", resources, catalog, CostModel(), prestaged(catalog, resources, Tier.DISK)
    )
    codec = Codec()
    reports = [state.report(t, "worker-1", 8000) for t in range(10)]
    exact = [len(codec.encode(report, 0.0, 0)) for report in reports]
    charged = [sizer.shape(report).last for report in reports]
    assert charged[:4] == exact[:4]
    assert charged[4:] == [round(sum(exact[:4]) / 4)] * 6


@pytest.mark.parametrize("workers", [3, 12])
def test_sampled_bytes_are_within_3_percent_of_exact(workers: int) -> None:
    """The estimate the speed target needs, against encoding every datagram of a run."""
    _, arrivals = make_workload(WorkloadOptions(duration_s=30.0, seed=3, rate_rps=8.0, models=6))
    totals = []
    for exact in (False, True):
        cluster = CentralizedCluster(ClusterConfig(workers=workers, seed=3, exact_bytes=exact))
        report = cluster.run(arrivals, 30.0).report
        totals.append(report.simulation.by_type)
    estimated, exact_totals = totals
    assert estimated.keys() == exact_totals.keys()
    for kind, row in exact_totals.items():
        assert estimated[kind]["messages"] == row["messages"], kind
        error = abs(estimated[kind]["bytes"] - row["bytes"]) / row["bytes"]
        assert error < 0.03, (kind, error)


# -- shrink-to-fit: the live endpoint's rule --------------------------------------------------

FIT_SECRET = b"fit-secret"


def oversized_messages() -> list[Message]:
    """A report, a gossip push and a member page, each over the cap as it stands."""
    names = {f"{i:02d}/" + "x" * (MODEL_NAME_MAX_LEN - 3): i % 4 for i in range(REPORT_MAX_MODELS)}
    report = WorkerReport(
        node_id="big-worker", host="127.0.0.1", port=1, http_port=0, models=names,
        models_omitted=3, queue_depth=0, queue_capacity=64, running=0, slots=8,
        gpu_utilization=0.0, memory_used=0, memory_total=1, load_backlog_s=0.0, ready=True,
        seq=1, timestamp=1.0e9,
    )  # fmt: skip
    updates = tuple(
        MemberUpdate(
            node_id=f"{'m' * 100}-{i}",
            host="127.0.0.9",
            port=7946,
            incarnation=i,
            state=1,
            origin="o" * 100,
        )
        for i in range(24)
    )
    push = GossipPush(source="gossiper", members=updates, reports=(report, report))
    members = tuple(
        MemberSummary(
            node_id=f"{'s' * 100}-{i}",
            host="127.0.0.9",
            port=7946,
            state=0,
            incarnation=1,
            info_age_s=0.5,
            reported=True,
            report_age_s=0.5,
        )
        for i in range(MEMBER_PAGE_MAX)
    )
    page = MemberStateResponse(
        request_id="page", node_id="node", incarnation=1, alive=30, suspect=0, dead=0, left=0,
        false_suspicions=0, refuted=0, local_health=0, bytes_sent_per_s=0.0,
        bytes_received_per_s=0.0, rejected_datagrams=0, offset=0, members=members,
        max_members=1000, refused_members=0,
    )  # fmt: skip
    for message in (report, push, page):
        with pytest.raises(EncodeError, match="oversized"):
            Codec(FIT_SECRET).encode(message, 0.0, 0)
    return [report, push, page]


async def test_the_network_shrinks_what_the_live_endpoint_shrinks(eventually) -> None:
    messages = oversized_messages()
    live: list[Message] = []
    receiver = await Endpoint.bind(
        Codec(FIT_SECRET), "127.0.0.1", 0, lambda message, _: live.append(message)
    )
    sender = await Endpoint.bind(Codec(FIT_SECRET), "127.0.0.1", 0)
    try:
        for sent, message in enumerate(messages, start=1):  # one at a time: in order
            assert sender.send(message, receiver.address)
            await eventually(lambda sent=sent: len(live) == sent, 2.0, message.TYPE)
    finally:
        sender.close()
        receiver.close()

    kernel = Kernel()
    net = Network(kernel, random.Random(1), LinkModel(), Sizer(signed=True))
    simulated: list[Message] = []
    net.attach("a", lambda message, source: None)
    net.attach("b", lambda message, source: simulated.append(message))
    for message in messages:
        net.send("a", "b", message)
    kernel.run(1.0)

    assert simulated == live  # the same shorter messages, in the same order
    assert all(got != sent for got, sent in zip(live, messages, strict=True))  # all shrunk
    assert net.sizer.oversized == len(messages)
    assert net.sizer.unsendable == 0
    # What is charged is the shrunk datagram, signed, byte for byte.
    charged = net.node("a").sent_bytes[CONTROL]
    assert charged == sum(len(Codec(FIT_SECRET).encode(m, 0.0, 0)) for m in live)


def test_counters_are_named_per_plane() -> None:
    kernel, net, _ = network()
    net.send("a", "b", request(1))
    net.send(
        "a",
        "b",
        InferenceRequest(
            request_id="r1", model="llama-3.2-1b", prompt_tokens=100, output_tokens=10
        ),
    )
    net.send(
        "a",
        "b",
        InferenceRequest(
            request_id="r2", model="llama-3.2-1b", prompt_tokens=100, output_tokens=10
        ),
    )
    kernel.run(1.0)
    control, data = net.node("a").planes
    assert (control.sent_messages, data.sent_messages) == (1, 2)
    received = net.node("b").planes
    assert [plane.received_messages for plane in received] == [1, 2]
    assert [plane.received_bytes for plane in received] == [control.sent_bytes, data.sent_bytes]


def test_datagrams_in_transit_go_through_the_kernels_soon() -> None:
    """The network schedules through the kernel's methods, never its queues."""

    class Watched(Kernel):
        def __init__(self) -> None:
            super().__init__()
            self.soon_calls = 0

        def soon(self, delay: float, callback: Any, argument: Any) -> None:
            self.soon_calls += 1
            super().soon(delay, callback, argument)

    kernel = Watched()
    net = Network(kernel, random.Random(1), LinkModel())
    inbox: list[Message] = []
    net.attach("a", lambda message, source: None)
    net.attach("b", lambda message, source: inbox.append(message))
    for index in range(5):
        net.send("a", "b", request(index))
    net.send("a", "b", request(5), transit=False)  # arrives inside the call
    assert len(inbox) == 1
    assert kernel.soon_calls == 5 == len(kernel)
    kernel.run(1.0)
    assert len(inbox) == 6

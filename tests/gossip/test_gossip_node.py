"""Pure decentralized-node tests: worker + gossip + local scheduler on the in-memory network.

Nodes run the sim engine on the virtual clock (`NodeHost`), so requests really occupy
slots and reports really change. Every datagram goes through a codec on its way.
"""

from __future__ import annotations

import random

import pytest

from sllm.catalog import served_catalog
from sllm.core.coordinator import Coordinator
from sllm.core.cost import CostModel
from sllm.core.membership import GossipConfig, MemberState, Send
from sllm.core.node import GOSSIP_REPORT_MAX_MODELS, Node, NodeConfig, ProbingConfig, trim_report
from sllm.core.testing import ClientHost, InMemoryNetwork, NodeHost, node_address, node_id
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources, prestaged
from sllm.engines.sim import SimEngine
from sllm.wire import (
    ClusterStateRequest,
    ClusterStateResponse,
    Codec,
    GossipPush,
    InferenceRequest,
    LoadProbe,
    LoadProbeReply,
    MemberStateRequest,
    MemberStateResponse,
    MemberUpdate,
    ScheduleRequest,
    ScheduleResponse,
)
from sllm.wire.messages import STATE_PAGE_MAX_WORKERS

CATALOG = served_catalog()
COST = CostModel()
MODEL = "llama-3.2-1b"
RESOURCES = WorkerResources(slots=2, queue_capacity=16)
CLIENT = ("127.0.0.200", 5000)


def make_cluster(
    count: int,
    seed: int = 1,
    probing: int = 0,
    policy: str = "least-loaded",
    loss: float = 0.0,
    gossip: GossipConfig | None = None,
) -> tuple[InMemoryNetwork, list[NodeHost]]:
    net = InMemoryNetwork(random.Random(seed), codec=Codec(b"node-tests"), loss=loss)
    config = NodeConfig(
        policy=policy,
        probing=ProbingConfig(candidates=probing),
        gossip=gossip or GossipConfig(),
    )
    hosts = []
    for i in range(count):
        node = Node(
            node_id(i),
            node_address(i),
            CATALOG,
            COST,
            random.Random(seed * 1000 + i),
            net.now,
            config,
            RESOURCES,
            seeds=[node_address(0)],
            preloaded=prestaged(CATALOG, RESOURCES, Tier.HOST),
        )
        host = NodeHost(node, SimEngine(CATALOG, COST))
        hosts.append(host)
        net.add(node.address, host)
    return net, hosts


def views_complete(hosts: list[NodeHost]) -> bool:
    expected = {host.node.node_id for host in hosts}
    return all(
        {entry.worker_id for entry in host.node.scheduler.view.entries()} == expected
        for host in hosts
    )


class Recorder:
    """A client host that only records what it receives."""

    def __init__(self) -> None:
        self.received: list[object] = []

    def handle(self, message: object, sender: object, now: float) -> list[Send]:
        self.received.append(message)
        return []

    def tick(self, now: float) -> list[Send]:
        return []

    def next_deadline(self) -> float | None:
        return None


def ask(net: InMemoryNetwork, host: NodeHost, message: object, recorder: Recorder) -> object:
    """Send `message` from the client to `host` and run until the reply is in."""
    before = len(recorder.received)
    net.send(CLIENT, [Send(to=host.node.address, message=message)])  # type: ignore[arg-type]
    assert net.run_until_true(lambda: len(recorder.received) > before, timeout=5.0, step=0.01)
    return recorder.received[-1]


def test_every_view_learns_every_worker_by_gossip() -> None:
    net, hosts = make_cluster(12)
    took = net.run_until_true(lambda: views_complete(hosts), timeout=30.0, step=0.2)
    assert took is not None and took < 10.0


def test_any_node_places_with_the_coordinators_policy_over_its_view() -> None:
    net, hosts = make_cluster(6, policy="startup-aware")
    recorder = Recorder()
    net.add(CLIENT, recorder)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    # Put load on one worker; its next reports gossip it.
    for i in range(4):
        busy = InferenceRequest(
            request_id=f"busy-{i}", model=MODEL, prompt_tokens=64, output_tokens=4000
        )
        net.send(CLIENT, [Send(to=hosts[1].node.address, message=busy)])
    net.run_for(3.0)
    scheduler = hosts[4].node
    # A coordinator fed the very reports this node holds must decide the same way.
    reference = Coordinator(
        "startup-aware", CATALOG, COST, 60.0, random.Random(0), started_at=net.now
    )
    for entry in scheduler.scheduler.view.entries():
        reference.view.apply_report(entry.report, net.now)
    expected = reference.place(
        ScheduleRequest(
            request_id="ref", model=MODEL, priority=0, prompt_tokens=128, output_tokens=16
        ),
        net.now,
    )
    decision = ask(
        net,
        hosts[4],
        ScheduleRequest(
            request_id="r1", model=MODEL, priority=0, prompt_tokens=128, output_tokens=16
        ),
        recorder,
    )
    assert isinstance(decision, ScheduleResponse)
    assert decision.action != "reject"
    assert decision.worker_id == expected.worker_id
    chosen = next(h for h in hosts if h.node.node_id == decision.worker_id)
    assert (decision.host, decision.port) == chosen.node.address


def test_requests_run_where_nodes_place_them() -> None:
    net, hosts = make_cluster(5)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    requests = [
        (
            net.now + 0.1 * i,
            InferenceRequest(request_id=f"q{i}", model=MODEL, prompt_tokens=128, output_tokens=32),
        )
        for i in range(40)
    ]
    client = ClientHost(random.Random(3), lambda: [h.node.address for h in hosts], requests)
    net.add(CLIENT, client)
    assert net.run_until_true(
        lambda: len(client.outcomes) == 40 and all(o.done for o in client.outcomes.values()),
        timeout=60.0,
        step=0.2,
    )
    assert all(o.ok for o in client.outcomes.values())
    assert len({o.worker_id for o in client.outcomes.values()}) >= 3  # spread out


def test_a_dead_member_leaves_every_view_when_membership_says_so() -> None:
    net, hosts = make_cluster(8)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    victim = hosts[3]
    net.crash(victim.node.address)
    others = [h for h in hosts if h is not victim]
    bound = others[0].node.config.gossip.detection_bound(8)

    def dead_everywhere() -> bool:
        for host in others:
            member = host.node.membership.get(victim.node.node_id)
            if member is None or member.state is not MemberState.DEAD:
                return False
        return True

    # A suspect is out of the views already (placement skips it); dead, it stays out.
    took = net.run_until_true(dead_everywhere, timeout=bound, step=0.1)
    assert took is not None
    assert all(victim.node.node_id not in h.node.scheduler.view for h in others)
    # Long before the view's own report timeout (a backstop of 60 s).
    assert took < others[0].node.config.report_stale_s
    for host in others:
        member = host.node.membership.get(victim.node.node_id)
        assert member is not None and member.state is MemberState.DEAD
    # And stale gossip about it does not put it back.
    net.run_for(20.0)
    assert all(victim.node.node_id not in h.node.scheduler.view for h in others)


def test_a_graceful_leave_empties_the_views_at_once() -> None:
    net, hosts = make_cluster(8)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    leaver = hosts[2]
    net.send(leaver.node.address, leaver.node.leave(net.now))
    assert leaver.node.next_deadline() is None
    others = [h for h in hosts if h is not leaver]
    took = net.run_until_true(
        lambda: all(leaver.node.node_id not in h.node.scheduler.view for h in others),
        timeout=5.0,
        step=0.05,
    )
    assert took is not None and took < 2.0


def test_a_leaving_node_places_nothing_on_itself_and_says_none_is_ready() -> None:
    """A node alone whose worker is stopping: its front door, still serving until the
    process stops, must not place on its own worker nor call that a full queue."""
    net, hosts = make_cluster(1)
    net.run_for(1.0)
    node = hosts[0].node
    placed = node.scheduler.place(
        ScheduleRequest(
            request_id="before", model=MODEL, priority=0, prompt_tokens=10, output_tokens=10
        ),
        net.now,
    )
    assert placed.worker_id == node.node_id
    node.leave(net.now)
    refused = node.scheduler.place(
        ScheduleRequest(
            request_id="after", model=MODEL, priority=0, prompt_tokens=10, output_tokens=10
        ),
        net.now,
    )
    assert (refused.action, refused.reason) == ("reject", "no_ready_workers")


def test_probing_asks_candidates_then_decides_with_fresh_reports() -> None:
    net, hosts = make_cluster(6, probing=2)
    recorder = Recorder()
    net.add(CLIENT, recorder)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    scheduler = hosts[0].node
    probes: list[tuple[object, object]] = []
    net.drop_hook = lambda source, to, message: (
        probes.append((to, message)) is None and False  # record, never drop
    )
    decision = ask(
        net,
        hosts[0],
        ScheduleRequest(
            request_id="p1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
        ),
        recorder,
    )
    assert isinstance(decision, ScheduleResponse) and decision.action != "reject"
    sent = [message for _, message in probes if isinstance(message, LoadProbe)]
    replies = [message for _, message in probes if isinstance(message, LoadProbeReply)]
    assert 1 <= len(sent) <= 2
    assert len(replies) == len(sent)
    assert scheduler.probing.decisions == 1
    assert scheduler.probing.timed_out == 0


def test_probing_decides_at_the_timeout_when_a_candidate_is_silent() -> None:
    net, hosts = make_cluster(6, probing=3)
    recorder = Recorder()
    net.add(CLIENT, recorder)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    net.drop_hook = lambda source, to, message: isinstance(message, LoadProbeReply)
    started = net.now
    decision = ask(
        net,
        hosts[0],
        ScheduleRequest(
            request_id="p2", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
        ),
        recorder,
    )
    assert isinstance(decision, ScheduleResponse) and decision.action != "reject"
    assert net.now - started >= ProbingConfig().timeout_s
    assert hosts[0].node.probing.timed_out == 1


def test_probing_reduces_queueing_when_views_are_stale() -> None:
    """A burst from many schedulers herds onto the same "least loaded" worker; probing
    spreads it. (The full measurement, with numbers, is `sllm bench gossip`.)"""
    results = {}
    for probing in (0, 2):
        net, hosts = make_cluster(10, seed=4, probing=probing)
        assert net.run_until_true(lambda hosts=hosts: views_complete(hosts), timeout=30.0)
        rng = random.Random(7)
        requests = []
        at = net.now
        for i in range(600):
            at += rng.expovariate(60.0)
            requests.append(
                (
                    at,
                    InferenceRequest(
                        request_id=f"s{i}", model=MODEL, prompt_tokens=256, output_tokens=64
                    ),
                )
            )
        client = ClientHost(
            random.Random(8), lambda hosts=hosts: [h.node.address for h in hosts], requests
        )
        net.add(CLIENT, client)
        net.run_for(40.0)
        done = [o for o in client.outcomes.values() if o.ok]
        assert len(done) >= 550
        results[probing] = sum(o.queue_s for o in done) / len(done)
    assert results[2] < results[0], results


def test_member_state_pages_and_counts() -> None:
    net, hosts = make_cluster(9)
    recorder = Recorder()
    net.add(CLIENT, recorder)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    net.crash(hosts[8].node.address)
    assert net.run_until_true(
        lambda: all(not h.node.membership.is_live(node_id(8)) for h in hosts[:8]), timeout=60.0
    )
    seen: list[str] = []
    first = None
    while True:
        page = ask(
            net,
            hosts[0],
            MemberStateRequest(request_id=f"m{len(seen)}", offset=len(seen), limit=6),
            recorder,
        )
        assert isinstance(page, MemberStateResponse)
        first = first or page
        seen.extend(member.node_id for member in page.members)
        if not page.members:
            break
    assert seen == sorted(node_id(i) for i in range(9))
    assert (first.alive, first.suspect, first.dead, first.left) == (8, 0, 1, 0)
    state = ask(
        net,
        hosts[0],
        ClusterStateRequest(request_id="c1", offset=0, limit=STATE_PAGE_MAX_WORKERS),
        recorder,
    )
    assert isinstance(state, ClusterStateResponse)
    assert state.active_workers == 8


def test_gossiped_reports_are_trimmed_to_fit() -> None:
    report = Node(
        "x", ("127.0.0.1", 1), CATALOG, COST, random.Random(0), 0.0,
        resources=RESOURCES, preloaded=prestaged(CATALOG, RESOURCES, Tier.DISK),
    )._own_report(0.0)  # fmt: skip
    trimmed = trim_report(report)
    assert len(trimmed.models) == GOSSIP_REPORT_MAX_MODELS
    assert trimmed.models_omitted == report.models_omitted + len(report.models) - 6
    assert list(trimmed.models) == list(report.models)[:6]


def test_node_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        NodeConfig(report_interval_s=5.0, report_refresh_s=1.0)
    with pytest.raises(ValueError):
        ProbingConfig(candidates=-1)
    with pytest.raises(ValueError):
        GossipConfig(gossip_interval_s=0.0)


def test_a_member_wrongly_declared_dead_is_back_in_every_view_with_its_refutation() -> None:
    # Anti-entropy would repair the views within a sync interval; make that too slow to help.
    net, hosts = make_cluster(8, gossip=GossipConfig(sync_interval_s=60.0))
    assert net.run_until_true(lambda: views_complete(hosts), timeout=180.0, step=1.0)
    victim = hosts[5].node
    others = [h for h in hosts if h.node is not victim]
    # Every other node declares it dead, as a long stall would make them: its report goes.
    member = others[0].node.membership.get(victim.node_id)
    assert member is not None
    victim_host, victim_port = victim.address
    verdict = MemberUpdate(
        node_id=victim.node_id,
        host=victim_host,
        port=victim_port,
        incarnation=member.incarnation,
        state=int(MemberState.DEAD),
        origin="n0000",
    )
    for host in others:
        host.node.membership.apply(verdict, net.now)
    assert net.run_until_true(
        lambda: all(victim.node_id not in h.node.scheduler.view for h in others),
        timeout=2.0,
        step=0.05,
    )
    # It refutes, and its unchanged report comes back with the refutation: no waiting for
    # the next refresh or sync.
    took = net.run_until_true(lambda: views_complete(hosts), timeout=30.0, step=0.1)
    assert victim.membership.counters.refuted >= 1
    assert took is not None and took < 2.0


def test_placement_skips_a_suspect_member_until_it_proves_alive() -> None:
    net, hosts = make_cluster(6, gossip=GossipConfig(sync_interval_s=60.0))
    recorder = Recorder()
    net.add(CLIENT, recorder)
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    scheduler, suspect = hosts[0].node, hosts[3].node
    member = scheduler.membership.get(suspect.node_id)
    assert member is not None
    rumour = MemberUpdate(
        node_id=suspect.node_id,
        host=suspect.address[0],
        port=suspect.address[1],
        incarnation=member.incarnation,
        state=int(MemberState.SUSPECT),
        origin="n0001",
    )
    scheduler.membership.apply(rumour, net.now)
    scheduler.tick(net.now)  # the notice reaches the view
    assert scheduler.membership.get(suspect.node_id).state is MemberState.SUSPECT  # type: ignore[union-attr]
    assert suspect.node_id not in scheduler.scheduler.view
    decisions = [
        ask(
            net,
            hosts[0],
            ScheduleRequest(
                request_id=f"s{i}", model=MODEL, priority=0, prompt_tokens=128, output_tokens=16
            ),
            recorder,
        )
        for i in range(12)
    ]
    chosen = {d.worker_id for d in decisions if isinstance(d, ScheduleResponse)}
    assert len(chosen) >= 2 and suspect.node_id not in chosen
    # The suspect refutes; its report goes back into the view with the refutation.
    took = net.run_until_true(
        lambda: suspect.node_id in scheduler.scheduler.view, timeout=10.0, step=0.05
    )
    assert took is not None
    assert scheduler.membership.get(suspect.node_id).state is MemberState.ALIVE  # type: ignore[union-attr]


def test_a_suspects_report_stays_out_of_the_view_though_it_had_no_entry() -> None:
    """A suspicion set aside only the entry the view held then; a report arriving later
    from the suspect (gossip still carries them) must not put it back before it refutes."""
    net, hosts = make_cluster(3, gossip=GossipConfig(sync_interval_s=60.0))
    assert net.run_until_true(lambda: views_complete(hosts), timeout=30.0)
    scheduler, suspect = hosts[0].node, hosts[2].node
    member = scheduler.membership.get(suspect.node_id)
    assert member is not None
    scheduler.scheduler.view.remove(suspect.node_id)  # no entry when the suspicion comes
    rumour = MemberUpdate(
        node_id=suspect.node_id,
        host=suspect.address[0],
        port=suspect.address[1],
        incarnation=member.incarnation,
        state=int(MemberState.SUSPECT),
        origin="n0001",
    )
    scheduler.membership.apply(rumour, net.now)
    scheduler.tick(net.now)
    report = suspect.worker.report(net.now, *suspect.address, timestamp=net.now)
    push = GossipPush(source=hosts[1].node.node_id, members=(), reports=(report,))
    scheduler.handle(push, hosts[1].node.address, net.now)
    assert scheduler.membership.get(suspect.node_id).state is MemberState.SUSPECT  # type: ignore[union-attr]
    assert suspect.node_id not in scheduler.scheduler.view

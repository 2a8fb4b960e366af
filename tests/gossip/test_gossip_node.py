"""Decentralized-node tests: worker + gossip + local scheduler in the decentralized simulator.

Each test builds a `DecentralizedCluster` and runs it (`run`); what a test does during the
run it schedules at workload times (`cluster.at`), as probes. Nodes run the sim engine on
the virtual clock, so requests really occupy slots and reports really change, and every
datagram is encoded by the real codec (`exact_bytes`): none may be over the cap.

The test's own client is a name on the cluster's network (`Probe`): nodes answer it like
any client. Node-level state is read through the cluster's `nodes` (each `.name` and
`.node`, the core `Node`) and its `network`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from sllm.catalog import served_catalog
from sllm.core.coordinator import HOLD, HOLD_MAX, Coordinator
from sllm.core.cost import CostModel
from sllm.core.membership import GossipConfig, MemberState
from sllm.core.node import GOSSIP_REPORT_MAX_MODELS, Node, NodeConfig, ProbingConfig, trim_report
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources, prestaged
from sllm.sim.cluster import ClusterConfig, SimResult, worker_name
from sllm.sim.decentralized import DecentralizedCluster
from sllm.sim.faults import KILL_WORKER, PARTITION, Fault
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
    Message,
    ScheduleRequest,
    ScheduleResponse,
    WorkerReport,
)
from sllm.wire.fit import encode_to_fit
from sllm.wire.messages import STATE_PAGE_MAX_WORKERS
from sllm.workload import Arrival

CATALOG = served_catalog()
COST = CostModel()
MODEL = "llama-3.2-1b"
RESOURCES = WorkerResources(slots=2, queue_capacity=16)
PROBE = "probe"  # the test's own client on the network
# Every view holds every node's report within this many seconds of the start (a report a
# node missed comes with the next anti-entropy sync, every 5 s).
READY_S = 30.0


def make_cluster(
    count: int,
    seed: int = 1,
    probing: int = 0,
    policy: str = "least-loaded",
    gossip: GossipConfig | None = None,
    admission_deadline_s: float | None = None,
    admission_hold_s: float | None = None,
) -> DecentralizedCluster:
    config = ClusterConfig(
        workers=count,
        seed=seed,
        policy=policy,
        resources=RESOURCES,
        prestage=Tier.HOST,
        exact_bytes=True,
    )
    node_config = NodeConfig(
        policy=policy,
        probing=ProbingConfig(candidates=probing),
        gossip=gossip or GossipConfig(),
        admission_deadline_s=admission_deadline_s,
        admission_hold_s=admission_hold_s,
    )
    return DecentralizedCluster(config, node_config)


def run(
    cluster: DecentralizedCluster,
    duration_s: float,
    faults: Sequence[Fault] = (),
    arrivals: Sequence[Arrival] = (),
) -> SimResult:
    """Run the cluster; every datagram it sent fitted the cap."""
    result = cluster.run(arrivals, duration_s, faults)
    assert result.report.simulation.datagrams["oversized"] == 0
    return result


def core(cluster: DecentralizedCluster, index: int) -> Node:
    node = cluster.nodes[index].node
    assert node is not None, "the node is down"
    return node


def live_cores(cluster: DecentralizedCluster) -> list[Node]:
    return [host.node for host in cluster.nodes if host.node is not None]


def views_complete(cluster: DecentralizedCluster, nodes: Sequence[Node] | None = None) -> bool:
    """Every node in `nodes` (default: every live one) holds a report from each of them."""
    nodes = live_cores(cluster) if nodes is None else nodes
    expected = {node.node_id for node in nodes}
    return all(
        {entry.worker_id for entry in node.scheduler.view.entries()} == expected for node in nodes
    )


def watch(
    cluster: DecentralizedCluster,
    predicate: Callable[[], bool],
    *,
    from_s: float,
    step_s: float = 0.05,
    then: Callable[[], None] | None = None,
) -> list[float]:
    """Check `predicate` every `step_s` from workload time `from_s` until it holds; the
    returned list gets the workload time it first held, and `then` runs at that moment."""
    seen: list[float] = []

    def look(_: None) -> None:
        if predicate():
            seen.append(cluster.now)
            if then is not None:
                then()
        else:
            cluster.at(cluster.now + step_s, look)

    cluster.at(from_s, look)
    return seen


def once_ready(
    cluster: DecentralizedCluster, then: Callable[[], None], timeout_s: float = READY_S
) -> list[float]:
    """Run `then` as soon as every view is complete (checked every 0.05 s from the start,
    for `timeout_s`); the returned list gets that workload time, if it came."""
    ready: list[float] = []

    def go() -> None:
        if views_complete(cluster):
            ready.append(cluster.now)
            then()

    watch(
        cluster,
        lambda: views_complete(cluster) or cluster.now + cluster.t0 > timeout_s,
        from_s=-cluster.t0,
        then=go,
    )
    return ready


def later(cluster: DecentralizedCluster, seconds: float, action: Callable[[], None]) -> None:
    """Run `action` `seconds` from now."""
    cluster.at(cluster.now + seconds, lambda _: action())


class Probe:
    """The test's client: sends from its own network name and records every answer;
    ``then`` callbacks continue a conversation when the reply to a request comes in."""

    def __init__(self, cluster: DecentralizedCluster) -> None:
        self.cluster = cluster
        self.received: list[tuple[float, Message]] = []
        self._then: dict[str, Callable[[Message], None]] = {}
        cluster.network.attach(PROBE, self._receive)

    def send(self, index: int, message: Message) -> None:
        self.cluster.network.send(PROBE, self.cluster.nodes[index].name, message)

    def ask(self, index: int, message: Message, then: Callable[[Message], None]) -> None:
        self._then[str(getattr(message, "request_id"))] = then  # noqa: B009
        self.send(index, message)

    def replies(self, kind: type[Message]) -> list[Message]:
        return [message for _, message in self.received if isinstance(message, kind)]

    def _receive(self, message: Message, source: str) -> None:
        self.received.append((self.cluster.now, message))
        then = self._then.pop(str(getattr(message, "request_id", "")), None)
        if then is not None:
            then(message)


def test_every_view_learns_every_worker_by_gossip() -> None:
    # Seed 2: on some seeds the first pushes miss one report at one node and the next
    # anti-entropy sync brings it at about 10.2 s (seeds 1-12: five before the reports
    # carried a disk bandwidth, three after, seed 1 among them now), just past this bound.
    cluster = make_cluster(12, seed=2)
    took = watch(cluster, lambda: views_complete(cluster), from_s=-cluster.t0, step_s=0.2)
    run(cluster, 10.0)
    assert took, "views never complete"
    assert took[0] + cluster.t0 < 10.0  # seconds since the nodes started


def test_any_node_places_with_the_coordinators_policy_over_its_view() -> None:
    cluster = make_cluster(6, policy="startup-aware")
    probe = Probe(cluster)
    expected: list[str] = []

    def load_one_worker() -> None:  # its next reports gossip the load
        for i in range(4):
            probe.send(
                1,
                InferenceRequest(
                    request_id=f"busy-{i}", model=MODEL, prompt_tokens=64, output_tokens=4000
                ),
            )
        later(cluster, 3.0, ask_node_four)

    def ask_node_four() -> None:
        # A coordinator fed the very reports this node holds must decide the same way.
        node = core(cluster, 4)
        now = cluster.kernel.now
        reference = Coordinator(
            "startup-aware", cluster.catalog, COST, 60.0, random.Random(0), started_at=now
        )
        for entry in node.scheduler.view.entries():
            reference.view.apply_report(entry.report, now)
        expected.append(
            reference.place(
                ScheduleRequest(
                    request_id="ref", model=MODEL, priority=0, prompt_tokens=128, output_tokens=16
                ),
                now,
            ).worker_id
        )
        probe.send(
            4,
            ScheduleRequest(
                request_id="r1", model=MODEL, priority=0, prompt_tokens=128, output_tokens=16
            ),
        )

    ready = once_ready(cluster, load_one_worker)
    run(cluster, READY_S + 5.0)
    assert ready
    [decision] = probe.replies(ScheduleResponse)
    assert isinstance(decision, ScheduleResponse)
    assert decision.action != "reject"
    assert [decision.worker_id] == expected
    chosen = next(host for host in cluster.nodes if host.name == decision.worker_id)
    assert (decision.host, decision.port) == chosen.address


def test_requests_run_where_nodes_place_them() -> None:
    cluster = make_cluster(5)
    ready = watch(cluster, lambda: views_complete(cluster), from_s=-cluster.t0)
    first = READY_S - cluster.t0  # the views are complete by the first request
    arrivals = [Arrival(first + 0.1 * i, MODEL, 128, 32) for i in range(40)]
    outcomes = run(cluster, first + 5.0, arrivals=arrivals).outcomes
    assert ready and ready[0] < first
    assert len(outcomes) == 40
    assert all(outcome.ok for outcome in outcomes)
    assert len({outcome.worker_id for outcome in outcomes}) >= 3  # spread out


def test_a_dead_member_leaves_every_view_when_membership_says_so() -> None:
    cluster = make_cluster(8)
    victim = cluster.nodes[3].name
    bound = cluster.detection_bound()
    killed: list[float] = []
    took: list[list[float]] = []
    out_of_views: list[bool] = []
    still_out: list[bool] = []

    def dead_everywhere() -> bool:
        for node in live_cores(cluster):
            member = node.membership.get(victim)
            if member is None or member.state is not MemberState.DEAD:
                return False
        return True

    def kill() -> None:
        killed.append(cluster.now)
        cluster.apply(Fault(max(0.0, cluster.now), KILL_WORKER, (victim,)))
        took.append(watch(cluster, dead_everywhere, from_s=cluster.now, step_s=0.1, then=dead))

    def dead() -> None:
        # A suspect is out of the views already (placement skips it); dead, it stays out.
        out_of_views.append(all(victim not in node.scheduler.view for node in live_cores(cluster)))
        later(cluster, 20.0, stays_out)

    def stays_out() -> None:  # stale gossip about it does not put it back
        still_out.append(all(victim not in node.scheduler.view for node in live_cores(cluster)))

    ready = once_ready(cluster, kill)
    run(cluster, READY_S + bound + 25.0)
    assert ready
    [[dead_at]] = took
    assert dead_at - killed[0] <= bound
    assert out_of_views == [True]
    # Long before the view's own report timeout (a backstop of 60 s).
    assert dead_at - killed[0] < cluster.node_config.report_stale_s
    assert still_out == [True]
    others = live_cores(cluster)
    assert len(others) == 7
    for node in others:
        member = node.membership.get(victim)
        assert member is not None and member.state is MemberState.DEAD


def test_a_graceful_leave_empties_the_views_at_once() -> None:
    cluster = make_cluster(8)
    leaver = cluster.nodes[2]
    quiet: list[bool] = []
    left: list[float] = []
    gone: list[list[float]] = []

    def leave() -> None:
        node = core(cluster, 2)
        left.append(cluster.now)
        for send in node.leave(cluster.kernel.now):
            cluster.network.send(leaver.name, send.to[0], send.message)
        quiet.append(node.next_deadline() is None)
        others = [core(cluster, i) for i in range(8) if i != 2]
        gone.append(
            watch(
                cluster,
                lambda: all(leaver.name not in node.scheduler.view for node in others),
                from_s=cluster.now,
            )
        )

    ready = once_ready(cluster, leave)
    run(cluster, READY_S + 5.0)
    assert ready and quiet == [True]
    [[gone_at]] = gone
    assert gone_at - left[0] < 2.0


def test_a_leaving_node_places_nothing_on_itself_and_says_none_is_ready() -> None:
    """A node alone whose worker is stopping: its front door, still serving until the
    process stops, must not place on its own worker nor call that a full queue."""
    cluster = make_cluster(1)
    checked: list[bool] = []

    def place_then_leave(_: None) -> None:
        node = core(cluster, 0)
        now = cluster.kernel.now
        placed = node.scheduler.place(
            ScheduleRequest(
                request_id="before", model=MODEL, priority=0, prompt_tokens=10, output_tokens=10
            ),
            now,
        )
        assert placed.worker_id == node.node_id
        node.leave(now)
        refused = node.scheduler.place(
            ScheduleRequest(
                request_id="after", model=MODEL, priority=0, prompt_tokens=10, output_tokens=10
            ),
            now,
        )
        assert (refused.action, refused.reason) == ("reject", "no_ready_workers")
        checked.append(True)

    cluster.at(1.0 - cluster.t0, place_then_leave)  # a second after the node started
    run(cluster, 0.0)
    assert checked == [True]


@pytest.mark.parametrize("probing", [0, 2])
def test_a_node_holds_a_request_over_its_deadline_and_answers_later(probing: int) -> None:
    """Both workers busy with long requests: the node answers ``hold`` at once, and the
    decision itself within the hold, to the asker's address. Each node holds its share
    of the cluster's bound. With probing, every release asks the candidates first."""
    hold_s = 30.0
    cluster = make_cluster(
        2,
        probing=probing,
        policy="startup-aware",
        admission_deadline_s=1.0,
        admission_hold_s=hold_s,
    )
    probe = Probe(cluster)
    asked: list[float] = []

    def load_both_then_ask() -> None:
        for index in (0, 1):
            for i in range(RESOURCES.slots + 2):
                probe.send(
                    index,
                    InferenceRequest(
                        request_id=f"busy-{index}-{i}",
                        model=MODEL,
                        prompt_tokens=64,
                        output_tokens=1000,
                    ),
                )

        def ask() -> None:
            asked.append(cluster.now)
            probe.send(
                0,
                ScheduleRequest(
                    request_id="r1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=2000
                ),
            )

        later(cluster, 2.0, ask)  # once both reports show the queues

    ready = once_ready(cluster, load_both_then_ask)
    run(cluster, READY_S + hold_s + 5.0)
    assert ready and asked
    answers = [
        (at, message)
        for at, message in probe.received
        if isinstance(message, ScheduleResponse) and message.request_id == "r1"
    ]
    (_, held), (decided_at, decision) = answers
    assert held.action == HOLD, answers
    assert decision.action in ("serve", "cold_start")
    assert decided_at - asked[0] <= hold_s + 0.5
    node = core(cluster, 0)
    assert node.scheduler.counters.held == 1
    # The held queue's bound is the cluster's: each of the two nodes holds half of it.
    assert node.scheduler.hold_max == HOLD_MAX // 2
    # With probing: one probe for the request itself (to the other node), then one for
    # each release pass while it was held, before the pass decides.
    if probing:
        assert node.probing.probes_sent > 1
    else:
        assert node.probing.probes_sent == 0


def test_probing_asks_candidates_then_decides_with_fresh_reports() -> None:
    cluster = make_cluster(6, probing=2)
    probe = Probe(cluster)
    ready = once_ready(
        cluster,
        lambda: probe.send(
            0,
            ScheduleRequest(
                request_id="p1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
            ),
        ),
    )
    result = run(cluster, READY_S)
    assert ready
    [decision] = probe.replies(ScheduleResponse)
    assert isinstance(decision, ScheduleResponse) and decision.action != "reject"
    # The run's only decision is the only reason to probe: count the datagrams.
    by_type = result.report.simulation.by_type
    sent = by_type[LoadProbe.TYPE]["messages"]
    assert 1 <= sent <= 2
    assert by_type[LoadProbeReply.TYPE]["messages"] == sent
    scheduler = core(cluster, 0)
    assert scheduler.probing.decisions == 1
    assert scheduler.probing.timed_out == 0


def test_probing_decides_at_the_timeout_when_a_candidate_is_silent() -> None:
    cluster = make_cluster(6, probing=3)
    probe = Probe(cluster)
    asked: list[float] = []

    def isolate_then_ask() -> None:
        # Node 0 and the client on one side: node 0's probes reach no candidate.
        cluster.apply(Fault(max(0.0, cluster.now), PARTITION, (cluster.nodes[0].name, PROBE)))
        asked.append(cluster.now)
        probe.send(
            0,
            ScheduleRequest(
                request_id="p2", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
            ),
        )

    ready = once_ready(cluster, isolate_then_ask)
    run(cluster, READY_S)
    assert ready
    [(answered_at, decision)] = [
        (at, message) for at, message in probe.received if isinstance(message, ScheduleResponse)
    ]
    assert isinstance(decision, ScheduleResponse) and decision.action != "reject"
    assert answered_at - asked[0] >= ProbingConfig().timeout_s
    assert core(cluster, 0).probing.timed_out == 1


def test_probing_reduces_queueing_when_views_are_stale() -> None:
    """A burst from many schedulers herds onto the same "least loaded" worker; probing
    spreads it. (The full measurement, with numbers, is `sllm bench gossip`.)"""
    rng = random.Random(7)
    arrivals = []
    at = 0.0
    for _ in range(600):
        at += rng.expovariate(60.0)
        arrivals.append(Arrival(at, MODEL, 256, 64))
    results = {}
    for probing in (0, 2):
        cluster = make_cluster(10, seed=4, probing=probing)
        outcomes = run(cluster, 40.0, arrivals=arrivals).outcomes
        done = [outcome for outcome in outcomes if outcome.ok]
        assert len(done) >= 550
        results[probing] = sum(outcome.queue_s for outcome in done) / len(done)
    assert results[2] < results[0], results


def test_member_state_pages_and_counts() -> None:
    cluster = make_cluster(9)
    probe = Probe(cluster)
    victim = cluster.nodes[8].name
    seen: list[str] = []
    pages: list[MemberStateResponse] = []
    states: list[Message] = []

    def page(reply: Message | None = None) -> None:
        if reply is not None:
            assert isinstance(reply, MemberStateResponse)
            pages.append(reply)
            seen.extend(member.node_id for member in reply.members)
            if not reply.members:
                state = ClusterStateRequest(request_id="c1", offset=0, limit=STATE_PAGE_MAX_WORKERS)
                probe.ask(0, state, states.append)
                return
        probe.ask(
            0, MemberStateRequest(request_id=f"m{len(seen)}", offset=len(seen), limit=6), page
        )

    def kill() -> None:
        cluster.apply(Fault(max(0.0, cluster.now), KILL_WORKER, (victim,)))
        watch(
            cluster,
            lambda: all(not core(cluster, i).membership.is_live(victim) for i in range(8)),
            from_s=cluster.now,
            then=page,
        )

    ready = once_ready(cluster, kill)
    run(cluster, READY_S + 60.0)
    assert ready
    assert seen == sorted(worker_name(i) for i in range(9))
    first = pages[0]
    assert (first.alive, first.suspect, first.dead, first.left) == (8, 0, 1, 0)
    [state] = states
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


def test_a_probe_is_answered_with_the_whole_report_that_fits_a_datagram() -> None:
    node = Node(
        "x", ("127.0.0.1", 1), CATALOG, COST, random.Random(0), 0.0,
        resources=RESOURCES, preloaded=prestaged(CATALOG, RESOURCES, Tier.DISK),
    )  # fmt: skip
    [answer] = node.handle(LoadProbe(request_id="p"), ("127.0.0.1", 2), 0.0)
    assert isinstance(answer.message, LoadProbeReply)
    [report] = answer.message.reports
    assert report.models == node._own_report(0.0).models
    assert len(report.models) > GOSSIP_REPORT_MAX_MODELS
    sent, _ = encode_to_fit(Codec(), answer.message, 0.0, 1)
    assert isinstance(sent, LoadProbeReply)
    assert len(sent.reports[0].models) > GOSSIP_REPORT_MAX_MODELS


def test_node_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        NodeConfig(report_interval_s=5.0, report_refresh_s=1.0)
    with pytest.raises(ValueError):
        ProbingConfig(candidates=-1)
    with pytest.raises(ValueError):
        GossipConfig(gossip_interval_s=0.0)


def test_a_member_wrongly_declared_dead_is_back_in_every_view_with_its_refutation() -> None:
    # Anti-entropy would repair the views within a sync interval; make that too slow to help.
    cluster = make_cluster(8, gossip=GossipConfig(sync_interval_s=60.0))
    victim = cluster.nodes[5].name
    others = [i for i in range(8) if i != 5]
    declared: list[float] = []
    out: list[list[float]] = []
    back: list[list[float]] = []

    def declare_dead() -> None:
        # Every other node declares it dead, as a long stall would make them: its report goes.
        member = core(cluster, 0).membership.get(victim)
        assert member is not None
        host, port = cluster.nodes[5].address
        verdict = MemberUpdate(
            node_id=victim,
            host=host,
            port=port,
            incarnation=member.incarnation,
            state=int(MemberState.DEAD),
            origin=worker_name(0),
        )
        for i in others:
            core(cluster, i).membership.apply(verdict, cluster.kernel.now)
        declared.append(cluster.now)
        out.append(
            watch(
                cluster,
                lambda: all(victim not in core(cluster, i).scheduler.view for i in others),
                from_s=cluster.now,
                then=time_the_return,
            )
        )

    def time_the_return() -> None:
        back.append(watch(cluster, lambda: views_complete(cluster), from_s=cluster.now, step_s=0.1))

    ready = once_ready(cluster, declare_dead, timeout_s=180.0)
    run(cluster, 180.0 + 35.0)
    assert ready
    [[out_at]] = out
    assert out_at - declared[0] <= 2.0
    # It refutes, and its unchanged report comes back with the refutation: no waiting for
    # the next refresh or sync.
    assert core(cluster, 5).membership.counters.refuted >= 1
    [[back_at]] = back
    assert back_at - out_at < 2.0


def test_placement_skips_a_suspect_member_until_it_proves_alive() -> None:
    cluster = make_cluster(6, gossip=GossipConfig(sync_interval_s=60.0))
    probe = Probe(cluster)
    suspect_name = cluster.nodes[3].name
    decisions: list[Message] = []
    back: list[list[float]] = []

    def suspect_then_ask() -> None:
        scheduler, suspect = core(cluster, 0), core(cluster, 3)
        member = scheduler.membership.get(suspect_name)
        assert member is not None
        host, port = suspect.address
        rumour = MemberUpdate(
            node_id=suspect_name,
            host=host,
            port=port,
            incarnation=member.incarnation,
            state=int(MemberState.SUSPECT),
            origin="worker-1",
        )
        scheduler.membership.apply(rumour, cluster.kernel.now)
        scheduler.tick(cluster.kernel.now)  # the notice reaches the view
        state = scheduler.membership.get(suspect_name)
        assert state is not None and state.state is MemberState.SUSPECT
        assert suspect_name not in scheduler.scheduler.view
        ask_next()

    def ask_next(reply: Message | None = None) -> None:
        if reply is not None:
            decisions.append(reply)
        if len(decisions) < 12:
            probe.ask(
                0,
                ScheduleRequest(
                    request_id=f"s{len(decisions)}",
                    model=MODEL,
                    priority=0,
                    prompt_tokens=128,
                    output_tokens=16,
                ),
                ask_next,
            )
            return
        # The suspect refutes; its report goes back into the view with the refutation.
        back.append(
            watch(
                cluster, lambda: suspect_name in core(cluster, 0).scheduler.view, from_s=cluster.now
            )
        )
        started.append(cluster.now)

    started: list[float] = []
    ready = once_ready(cluster, suspect_then_ask)
    run(cluster, READY_S + 15.0)
    assert ready
    chosen = {d.worker_id for d in decisions if isinstance(d, ScheduleResponse)}
    assert len(decisions) == 12
    assert len(chosen) >= 2 and suspect_name not in chosen
    [[back_at]] = back
    assert back_at - started[0] <= 10.0
    state = core(cluster, 0).membership.get(suspect_name)
    assert state is not None and state.state is MemberState.ALIVE


def test_a_suspects_report_stays_out_of_the_view_though_it_had_no_entry() -> None:
    """A suspicion set aside only the entry the view held then; a report arriving later
    from the suspect (gossip still carries them) must not put it back before it refutes."""
    cluster = make_cluster(3, gossip=GossipConfig(sync_interval_s=60.0))
    checked: list[bool] = []

    def rumour_then_report() -> None:
        scheduler, gossiper, suspect = core(cluster, 0), core(cluster, 1), core(cluster, 2)
        now = cluster.kernel.now
        member = scheduler.membership.get(suspect.node_id)
        assert member is not None
        scheduler.scheduler.view.remove(suspect.node_id)  # no entry when the suspicion comes
        host, port = suspect.address
        rumour = MemberUpdate(
            node_id=suspect.node_id,
            host=host,
            port=port,
            incarnation=member.incarnation,
            state=int(MemberState.SUSPECT),
            origin="worker-1",
        )
        scheduler.membership.apply(rumour, now)
        scheduler.tick(now)
        report = suspect.worker.report(now, host, port, timestamp=now)
        push = GossipPush(source=gossiper.node_id, members=(), reports=(report,))
        scheduler.handle(push, gossiper.address, now)
        state = scheduler.membership.get(suspect.node_id)
        assert state is not None and state.state is MemberState.SUSPECT
        assert suspect.node_id not in scheduler.scheduler.view
        checked.append(True)

    ready = once_ready(cluster, rumour_then_report)
    run(cluster, READY_S)
    assert ready and checked == [True]


def test_an_idle_node_does_not_regossip_its_unchanged_report_and_views_stay_full() -> None:
    # Reports go out on change only: an idle cluster costs its probes and syncs. The view
    # keeps an unchanged member while membership holds it alive, long past its backstop.
    node_config = NodeConfig(
        policy="least-loaded", report_refresh_s=5.0, report_stale_s=20.0, gossip=GossipConfig()
    )
    config = ClusterConfig(
        workers=8, seed=3, policy="least-loaded", resources=RESOURCES, prestage=Tier.HOST
    )
    cluster = DecentralizedCluster(config, node_config)
    published: list[tuple[float, str]] = []
    full: list[bool] = []

    def count_publishes(_: None) -> None:  # from here on, every report this node gossips
        for node in live_cores(cluster):
            publish = node.membership.publish_report

            def counted(report: WorkerReport, publish: Any = publish) -> None:
                published.append((cluster.now, report.node_id))
                publish(report)

            node.membership.publish_report = counted  # type: ignore[method-assign]

    cluster.at(15.0, count_publishes)

    def placement_reads(_: None) -> None:  # a decision first drops what timed out
        for node in live_cores(cluster):
            node.scheduler.view.expire(cluster.now)
        full.append(views_complete(cluster))

    cluster.at(99.0, placement_reads)
    run(cluster, 100.0)
    assert published == []  # old: every node re-gossiped it every report_refresh_s
    assert full == [True]  # 84 s idle, four times the view's 20-second backstop


def test_a_report_gossip_missed_is_asked_for_directly() -> None:
    # Reports are not re-sent on time, so a node that missed one asks its member for it.
    node_config = NodeConfig(policy="least-loaded", report_refresh_s=5.0, report_stale_s=20.0)
    config = ClusterConfig(
        workers=6, seed=4, policy="least-loaded", resources=RESOURCES, prestage=Tier.HOST
    )
    cluster = DecentralizedCluster(config, node_config)
    back: list[bool] = []

    def forget(_: None) -> None:  # as if every copy of worker-3's report had been lost
        core(cluster, 1).scheduler.view.remove(worker_name(3))

    def check(_: None) -> None:
        back.append(worker_name(3) in core(cluster, 1).scheduler.view)

    cluster.at(20.0, forget)
    cluster.at(26.0, check)  # within one report_refresh_s and a round trip
    run(cluster, 27.0)
    assert back == [True]
    assert core(cluster, 1).probing.fill_probes >= 1

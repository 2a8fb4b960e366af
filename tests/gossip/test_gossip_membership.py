"""Pure membership tests: SWIM + Lifeguard on the simulator's kernel and network.

Memberships are hosted by `sllm.sim.participants`. Every datagram is encoded by the real
codec with the signed envelope on its way (exact byte counts), and the network counts any
message over the 1,400-byte cap, so these tests also hold the protocol to the cap. No test
sleeps: the kernel runs virtual time until a condition holds or a deadline passes.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from sllm.core.admission import NOTICE_INTERVAL_S, Admission
from sllm.core.membership import (
    JOIN_PAGE_GAP_S,
    JOIN_PAGE_TOKENS_MAX,
    JOIN_PAGE_TOKENS_PER_S,
    JOIN_PAGES_PER_BURST,
    SYNC_MEMBERS_MAX,
    Broadcasts,
    GossipConfig,
    Membership,
    MemberState,
    encoded_size,
)
from sllm.sim.network import LinkModel
from sllm.sim.participants import Participants, member_address, member_id, membership_cluster
from sllm.wire import (
    Codec,
    GossipAck,
    GossipJoin,
    GossipJoinState,
    GossipPing,
    GossipPingReq,
    GossipPush,
    GossipSync,
    MemberUpdate,
    WorkerReport,
)
from sllm.wire.codec import MAX_DATAGRAM_BYTES

SECRET = b"gossip-tests-secret"
CONFIG = GossipConfig()  # T = 1 s, probe timeout 0.5 s, alpha 4, beta 6
# One-way delay 0.5 ms plus a log-normal queueing delay of median 0.7 ms (p99 about 2.7 ms).
LAN = LinkModel(latency_s=0.0005, jitter_s=0.0007)


def network(seed: int = 1, **link: Any) -> Participants:
    """Participants on a LAN link (`link` overrides its fields), signed, bytes exact."""
    fields = {"latency_s": LAN.latency_s, "jitter_s": LAN.jitter_s, **link}
    return Participants(seed=seed, link=LinkModel(**fields), signed=True)


def converged(nodes: list[Membership], count: int | None = None) -> bool:
    """Every node sees exactly the others as alive (and nothing suspect)."""
    expected = len(nodes) if count is None else count
    return all(
        node.counts()[MemberState.ALIVE] == expected and node.live_count == expected
        for node in nodes
    )


# -- formulas ----------------------------------------------------------------------------


def test_suspicion_timeout_scales_with_log_n() -> None:
    low, high = CONFIG.suspicion_timeouts(10)
    assert low == pytest.approx(4.0)  # alpha * log10(10) * T
    assert high == pytest.approx(24.0)  # beta * min
    low_1000, _ = CONFIG.suspicion_timeouts(1000)
    assert low_1000 == pytest.approx(12.0)
    assert CONFIG.suspicion_timeouts(3)[0] == pytest.approx(4.0)  # log10 floored at 1


def test_detection_bound_formula() -> None:
    # (5 + 1 + ceil(log2 N)) * T + beta * alpha * max(1, log10 N) * T
    assert CONFIG.detection_bound(16) == pytest.approx((6 + 4) * 1.0 + 6 * 4 * 1.2041, rel=1e-3)
    assert CONFIG.detection_bound(2) == pytest.approx(7.0 + 24.0)


def test_retransmit_limit_is_lambda_log_n() -> None:
    assert CONFIG.retransmit_limit(9) == 4  # 4 * ceil(log10(10))
    assert CONFIG.retransmit_limit(10) == 8
    assert CONFIG.retransmit_limit(1000) == 16
    assert CONFIG.retransmit_limit(1000, multiplier=2) == 8


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="shorter than"):
        GossipConfig(probe_interval_s=1.0, probe_timeout_s=1.0)
    with pytest.raises(ValueError, match="nack_ratio"):
        GossipConfig(nack_ratio=1.5)


def test_broadcast_queue_sends_least_sent_then_freshest_and_respects_the_limit() -> None:
    queue: Broadcasts[str] = Broadcasts()
    for key in "abc":
        queue.put(key, key, 10)
    taken, left = queue.take(budget=100, count=2, limit=2)
    assert taken == ["c", "b"]  # freshest first among the never sent
    assert left == 100 - 2 * 11
    taken, _ = queue.take(budget=100, count=3, limit=2)
    assert taken == ["a", "c", "b"]  # "a" was sent least
    taken, _ = queue.take(budget=100, count=3, limit=2)
    assert taken == ["a"]  # b and c reached the limit and left the queue
    assert len(queue) == 0


def test_broadcast_queue_replaces_and_skips_what_does_not_fit() -> None:
    queue: Broadcasts[str] = Broadcasts()
    queue.put("a", "a-old", 10)
    queue.put("big", "big", 500)
    queue.put("a", "a-new", 10)  # replaces a-old
    taken, _ = queue.take(budget=50, count=5, limit=3)
    assert taken == ["a-new"]  # "big" does not fit and waits
    taken, _ = queue.take(budget=600, count=5, limit=3)
    assert taken == ["big", "a-new"]


# -- incarnation rules ----------------------------------------------------------------


def lone(name: str = "me") -> Membership:
    return Membership(name, ("10.0.0.1", 1), random.Random(0), 0.0, CONFIG)


def update(node: str, incarnation: int, state: MemberState, origin: str = "") -> MemberUpdate:
    return MemberUpdate(
        node_id=node,
        host="10.0.0.9",
        port=9,
        incarnation=incarnation,
        state=int(state),
        origin=origin,
    )


def test_suspect_overrides_alive_and_only_a_higher_alive_clears_it() -> None:
    me = lone()
    me.apply(update("x", 3, MemberState.ALIVE), 0.0)
    me.apply(update("x", 3, MemberState.SUSPECT, "y"), 1.0)
    assert me.members["x"].state is MemberState.SUSPECT
    me.apply(update("x", 3, MemberState.ALIVE), 2.0)  # same incarnation: not a refutation
    assert me.members["x"].state is MemberState.SUSPECT
    me.apply(update("x", 4, MemberState.ALIVE), 3.0)
    assert me.members["x"].state is MemberState.ALIVE
    assert me.counters.false_suspicions == 1
    me.apply(update("x", 3, MemberState.SUSPECT, "y"), 4.0)  # stale
    assert me.members["x"].state is MemberState.ALIVE


def test_dead_is_final_until_a_higher_incarnation() -> None:
    me = lone()
    me.apply(update("x", 1, MemberState.ALIVE), 0.0)
    me.apply(update("x", 1, MemberState.DEAD, "y"), 1.0)
    assert me.members["x"].state is MemberState.DEAD
    assert not me.is_live("x")
    for stale in (update("x", 1, MemberState.ALIVE), update("x", 1, MemberState.SUSPECT, "z")):
        me.apply(stale, 2.0)  # stale gossip does not resurrect it
        assert me.members["x"].state is MemberState.DEAD
    me.apply(update("x", 2, MemberState.ALIVE), 3.0)
    assert me.members["x"].state is MemberState.ALIVE
    assert [n.event for n in me.take_notices()][-1] == "member_rejoined"


def test_a_node_refutes_a_suspicion_about_itself() -> None:
    me = lone()
    me.apply(update("me", 0, MemberState.SUSPECT, "y"), 1.0)
    assert me.incarnation == 1
    assert me.counters.refuted == 1
    assert me.awareness == 1  # Lifeguard: being suspected hints that we are slow
    me.apply(update("me", 0, MemberState.SUSPECT, "z"), 2.0)  # already refuted: stale
    assert me.incarnation == 1
    me.apply(update("me", 5, MemberState.DEAD, "z"), 3.0)
    assert me.incarnation == 6
    assert me.members["me"].state is MemberState.ALIVE


def test_suspicion_timer_shrinks_with_independent_confirmations() -> None:
    me = lone()
    peers = [f"p{i}" for i in range(20)]
    for peer in peers:
        me.apply(update(peer, 0, MemberState.ALIVE), 0.0)
    me.apply(update("p0", 0, MemberState.SUSPECT, "p1"), 10.0)
    low, high = CONFIG.suspicion_timeouts(me.live_count)
    assert me.next_deadline() is not None
    suspicion = me._suspicions["p0"]
    assert suspicion.deadline == pytest.approx(10.0 + high)
    me.apply(update("p0", 0, MemberState.SUSPECT, "p1"), 11.0)  # same origin: no change
    assert suspicion.deadline == pytest.approx(10.0 + high)
    me.apply(update("p0", 0, MemberState.SUSPECT, "p2"), 11.0)
    assert low < suspicion.deadline - 10.0 < high
    me.apply(update("p0", 0, MemberState.SUSPECT, "p3"), 12.0)  # K = 2 confirmations
    assert suspicion.deadline == pytest.approx(10.0 + low)
    me.tick(10.0 + low)
    assert me.members["p0"].state is MemberState.DEAD


# -- clusters on the in-memory network ----------------------------------------------------


def test_nodes_join_through_a_seed_under_loss_delay_and_duplication() -> None:
    net = network(latency_s=0.001, jitter_s=0.05, loss=0.1, duplicate=0.1)
    nodes = membership_cluster(net, 12, CONFIG, seed=2, bootstrap=False)
    took = net.run_until_true(lambda: converged(nodes), timeout=120.0, step=0.5)
    assert took is not None, [node.live_count for node in nodes]
    assert net.network.lost > 0
    assert net.network.duplicated > 0


def test_a_crashed_node_is_declared_dead_by_every_live_node_within_the_bound() -> None:
    net = network()
    nodes = membership_cluster(net, 16, CONFIG, seed=3)
    net.run_for(5.0)
    victim, others = nodes[5], [n for n in nodes if n is not nodes[5]]
    net.crash(victim.address)
    took = net.run_until_true(
        lambda: all(n.members[victim.node_id].state is MemberState.DEAD for n in others),
        timeout=120.0,
        step=0.1,
    )
    assert took is not None
    assert took <= CONFIG.detection_bound(16)
    assert sum(n.counters.false_suspicions for n in others) == 0
    assert all(n.counts()[MemberState.ALIVE] == 15 for n in others)


def test_detection_still_completes_under_heavy_loss() -> None:
    net = network(seed=4, loss=0.2, latency_s=0.001, jitter_s=0.012)
    nodes = membership_cluster(net, 12, CONFIG, seed=4)
    net.run_for(5.0)
    victim, others = nodes[0], nodes[1:]
    net.crash(victim.address)
    took = net.run_until_true(
        lambda: all(not n.is_live(victim.node_id) for n in others), timeout=120.0, step=0.2
    )
    assert took is not None
    # With 20% loss, live nodes are suspected now and then; they refute, and none dies.
    for _ in range(40):
        net.run_for(0.5)
        assert all(n.live_count == 11 for n in others)
    assert [n.counters.deaths for n in others] == [1] * 11  # the victim, once each
    assert sum(n.counters.false_suspicions for n in others) > 0


def test_a_slow_live_node_is_suspected_refutes_and_is_never_declared_dead() -> None:
    net = network(seed=5)
    nodes = membership_cluster(net, 10, CONFIG, seed=5)
    net.run_for(5.0)
    slow, others = nodes[2], [n for n in nodes if n is not nodes[2]]
    net.slow[slow.address] = 1.2  # answers arrive after the 1 s protocol period
    for _ in range(40):
        net.run_for(0.5)
        assert all(n.is_live(slow.node_id) for n in others), "declared dead"
    assert sum(n.counters.false_suspicions for n in others) >= 1
    assert slow.counters.refuted >= 1
    assert slow.incarnation >= 1
    del net.slow[slow.address]
    took = net.run_until_true(lambda: converged(nodes), timeout=60.0, step=0.5)
    assert took is not None


def test_lifeguard_local_health_rises_when_our_own_network_is_bad() -> None:
    net = network(seed=6)
    nodes = membership_cluster(net, 8, CONFIG, seed=6)
    net.run_for(3.0)
    deaf = nodes[0]
    # Everything to `deaf` is lost: its probes fail, its relays' nacks never come back.
    net.drop_hook = lambda source, to, message: to == deaf.address
    net.run_for(6.0)
    assert deaf.awareness >= 2
    assert all(n.awareness <= 1 for n in nodes[1:])
    net.drop_hook = None
    net.run_until_true(lambda: converged(nodes), timeout=120.0, step=0.5)
    # Each successful probe lowers it by one; at score h a probe takes (h + 1) periods,
    # so recovering from the ceiling takes about S * (S + 1) / 2 = 36 periods.
    net.run_for(60.0)
    assert deaf.awareness == 0


def test_a_healed_partition_reconverges() -> None:
    net = network(seed=7)
    nodes = membership_cluster(net, 8, CONFIG, seed=7)
    net.run_for(3.0)
    left, right = nodes[:4], nodes[4:]
    net.partition([n.address for n in left], [n.address for n in right])
    split = net.run_until_true(
        lambda: all(converged_side(side, other) for side, other in ((left, right), (right, left))),
        timeout=120.0,
        step=0.5,
    )
    assert split is not None
    net.heal()
    took = net.run_until_true(lambda: converged(nodes), timeout=120.0, step=0.5)
    assert took is not None
    # Each side refuted the other's verdict with a higher incarnation.
    assert all(n.incarnation >= 1 for n in nodes)


def converged_side(side: list[Membership], other: list[Membership]) -> bool:
    return all(
        all(node.members[o.node_id].state is MemberState.DEAD for o in other)
        and node.counts()[MemberState.ALIVE] == len(side)
        for node in side
    )


def test_a_restarted_node_rejoins_with_a_higher_incarnation() -> None:
    net = network(seed=8)
    nodes = membership_cluster(net, 8, CONFIG, seed=8)
    net.run_for(3.0)
    victim = nodes[6]
    net.crash(victim.address)
    others = [n for n in nodes if n is not victim]
    assert net.run_until_true(
        lambda: all(not n.is_live(victim.node_id) for n in others), timeout=120.0
    )
    dead_incarnation = others[0].members[victim.node_id].incarnation
    reborn = Membership(
        victim.node_id, victim.address, random.Random(99), net.now, CONFIG, seeds=[nodes[0].address]
    )
    assert reborn.incarnation == 0  # a fresh process remembers nothing
    net.add(reborn.address, reborn)
    took = net.run_until_true(lambda: converged([*others, reborn]), timeout=60.0, step=0.5)
    assert took is not None
    assert reborn.incarnation > dead_incarnation
    assert all(n.members[victim.node_id].incarnation == reborn.incarnation for n in others)


def test_a_restarted_node_at_a_new_port_is_found_there() -> None:
    net = network(seed=9)
    nodes = membership_cluster(net, 6, CONFIG, seed=9)
    net.run_for(3.0)
    victim = nodes[3]
    net.crash(victim.address)  # restarted before anyone noticed
    moved = (victim.address[0], 7000)
    reborn = Membership(
        victim.node_id, moved, random.Random(5), net.now, CONFIG, seeds=[nodes[0].address]
    )
    net.add(moved, reborn)
    others = [n for n in nodes if n is not victim]
    took = net.run_until_true(
        lambda: (
            converged([*others, reborn])
            and all(n.members[victim.node_id].address == moved for n in others)
        ),
        timeout=60.0,
        step=0.5,
    )
    assert took is not None


def test_a_graceful_leave_is_known_everywhere_long_before_a_suspicion_could_be() -> None:
    net = network(seed=10)
    nodes = membership_cluster(net, 12, CONFIG, seed=10)
    net.run_for(3.0)
    leaver, others = nodes[4], [n for n in nodes if n is not nodes[4]]
    net.send(leaver.address, leaver.leave(net.now))
    assert leaver.next_deadline() is None
    took = net.run_until_true(
        lambda: all(n.members[leaver.node_id].state is MemberState.LEFT for n in others),
        timeout=30.0,
        step=0.1,
    )
    low, _ = CONFIG.suspicion_timeouts(12)
    assert took is not None and took < low
    assert sum(n.counters.deaths for n in others) == 0


def test_dead_members_are_forgotten_after_the_retention() -> None:
    config = GossipConfig(dead_retention_s=30.0)
    net = network(seed=11)
    nodes = membership_cluster(net, 6, config, seed=11)
    net.run_for(3.0)
    net.crash(nodes[1].address)
    others = [n for n in nodes if n is not nodes[1]]
    assert net.run_until_true(lambda: all(not n.is_live(nodes[1].node_id) for n in others), 60.0)
    net.run_for(45.0)
    assert all(nodes[1].node_id not in n.members for n in others)
    assert any(n.event == "member_forgotten" for n in others[0].take_notices())


def test_the_same_seed_gives_the_same_run() -> None:
    def run() -> list[tuple[int, int, int]]:
        net = network(seed=12, loss=0.1, latency_s=0.001, jitter_s=0.025, duplicate=0.05)
        nodes = membership_cluster(net, 8, CONFIG, seed=12, bootstrap=False)
        net.run_for(20.0)
        net.crash(nodes[3].address)
        net.run_for(20.0)
        return [(n.incarnation, n.counters.probes, n.counters.messages_out) for n in nodes]

    assert run() == run()


# -- datagram size and bandwidth ------------------------------------------------------------


def test_every_message_fits_the_cap_with_long_ids_and_many_changes() -> None:
    net = network(seed=13)
    long_ids = [f"{'x' * 100}-{i:04d}" for i in range(30)]
    nodes = [
        Membership(
            name, member_address(i), random.Random(i), 0.0, CONFIG, seeds=[member_address(0)]
        )
        for i, name in enumerate(long_ids)
    ]
    for node in nodes:
        net.add(node.address, node)
    # The network encodes every datagram and counts any over MAX_DATAGRAM_BYTES.
    assert net.run_until_true(lambda: converged(nodes), timeout=300.0, step=1.0) is not None
    for victim in nodes[24:]:
        net.crash(victim.address)
    net.run_for(40.0)
    assert net.network.sizer.oversized == 0


def test_a_sync_is_one_datagram_whatever_the_cluster_size() -> None:
    me = lone("n0000")
    me.bootstrap(((member_id(i), member_address(i)) for i in range(1, 5000)), 0.0)
    sync = me._sync(("127.0.0.2", 1), member_id(7), reply=False)
    assert isinstance(sync.message, GossipSync)
    data = Codec(SECRET).encode(sync.message, 0.0, 1)
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert sync.message.members[0].node_id == member_id(7)  # the peer's entry leads
    assert len(sync.message.members) == SYNC_MEMBERS_MAX  # the same count, and cost, at any N
    assert encoded_size(sync.message.members[0]) < 100


def test_per_node_bandwidth_does_not_grow_with_the_cluster() -> None:
    rates = {}
    for count in (16, 96):
        net = network(seed=14)
        nodes = membership_cluster(net, count, CONFIG, seed=14)
        net.run_for(2.0)
        net.send(nodes[0].address, nodes[0].leave(net.now))  # something to gossip
        start = net.bytes_sent()
        net.run_for(20.0)
        sent = sum(sent - start[address] for address, sent in net.bytes_sent().items())
        rates[count] = sent / count / 20.0
    assert rates[96] < 2.0 * rates[16], rates


def test_pings_to_a_suspect_carry_the_suspicion_first() -> None:
    me = lone()
    for peer in ("a", "b", "c"):
        me.apply(update(peer, 0, MemberState.ALIVE), 0.0)
    me.apply(update("a", 0, MemberState.SUSPECT, "b"), 0.1)
    ping = me._ping(1, me.members["a"])
    assert isinstance(ping.message, GossipPing)
    first = ping.message.members[0]
    assert (first.node_id, first.state) == ("a", MemberState.SUSPECT)


# -- bounded state: ping-req relays, the member cap, new members per source ----------------
#
# Fake members and senders here are on loopback addresses, as everywhere in the tests.

RELAY_SENDER = ("127.0.0.2", 7946)


def ping_req(target: str, host: str = "127.0.0.77", port: int = 9) -> GossipPingReq:
    return GossipPingReq(
        seq=5,
        source="asker",
        target=target,
        target_host=host,
        target_port=port,
        members=(),
        reports=(),
    )


def test_a_ping_req_for_a_stranger_is_not_relayed() -> None:
    me = lone()
    sends = me.handle(ping_req("ghost"), RELAY_SENDER, 0.0)
    assert sends == []
    assert me.counters.relays_declined == 1
    assert "ghost" not in me.members
    assert all(send.to[0] != "127.0.0.77" for send in me.tick(5.0))


def test_a_ping_req_for_a_dead_member_is_not_relayed() -> None:
    me = lone()
    me.apply(
        MemberUpdate(
            node_id="gone",
            host="127.0.0.9",
            port=9,
            incarnation=1,
            state=int(MemberState.ALIVE),
            origin="",
        ),
        0.0,
    )
    me.apply(
        MemberUpdate(
            node_id="gone",
            host="127.0.0.9",
            port=9,
            incarnation=1,
            state=int(MemberState.DEAD),
            origin="y",
        ),
        0.5,
    )
    assert me.handle(ping_req("gone", "127.0.0.9"), RELAY_SENDER, 1.0) == []


@pytest.mark.parametrize("state", [MemberState.ALIVE, MemberState.SUSPECT])
def test_a_ping_req_is_relayed_to_a_live_member_at_the_address_known_here(
    state: MemberState,
) -> None:
    me = lone()
    me.apply(
        MemberUpdate(
            node_id="x",
            host="127.0.0.9",
            port=9,
            incarnation=0,
            state=int(MemberState.ALIVE),
            origin="",
        ),
        0.0,
    )
    if state is MemberState.SUSPECT:
        me.apply(
            MemberUpdate(
                node_id="x", host="127.0.0.9", port=9, incarnation=0, state=int(state), origin="y"
            ),
            0.1,
        )
    # The request names another address: the relay pings the one it knows.
    sends = me.handle(ping_req("x", "127.0.0.77", 7), RELAY_SENDER, 1.0)
    assert [(send.to, type(send.message)) for send in sends] == [(("127.0.0.9", 9), GossipPing)]
    # ... and relays the target's ack back to the requester.
    ping = sends[0].message
    assert isinstance(ping, GossipPing)
    back = me.handle(
        GossipAck(seq=ping.seq, source="x", members=(), reports=()), ("127.0.0.9", 9), 1.1
    )
    assert [send.to for send in back] == [RELAY_SENDER]


def strangers(count: int, first: int = 0) -> tuple[MemberUpdate, ...]:
    return tuple(
        MemberUpdate(
            node_id=f"fake-{i}",
            host=f"127.0.{i // 250}.{i % 250 + 1}",
            port=9,
            incarnation=0,
            state=0,
            origin="",
        )
        for i in range(first, first + count)
    )


def bounded(capacity: int, rate: float = 1.0, burst: int = 1000) -> Membership:
    admission = Admission(capacity=capacity, per_source_per_s=rate, per_source_burst=burst)
    return Membership("me", ("127.0.0.1", 1), random.Random(0), 0.0, CONFIG, admission=admission)


def test_the_member_list_stops_at_its_cap_and_known_members_still_change() -> None:
    me = bounded(capacity=10)
    for batch in range(5):  # 120 strangers from 5 senders
        push = GossipPush(source=f"peer-{batch}", members=strangers(24, 24 * batch), reports=())
        me.handle(push, (f"127.0.1.{batch + 1}", 7946), 0.0)
    assert len(me.members) == 10  # "me" and the first nine strangers
    assert me.admission.refused_full == 111
    notices = [notice for notice in me.take_notices() if notice.event == "identities_refused"]
    assert len(notices) == 1  # one notice for the whole flood (at its first refusal), not 111
    assert notices[0].fields["refused"] == 1
    me.apply(strangers(1, 500)[0], NOTICE_INTERVAL_S)  # the next one tells the rest
    later = [notice for notice in me.take_notices() if notice.event == "identities_refused"]
    assert [notice.fields["refused"] for notice in later] == [111]
    # A known member is never refused: its suspicion and refutation go through.
    me.apply(
        MemberUpdate(
            node_id="fake-0",
            host="127.0.0.1",
            port=9,
            incarnation=0,
            state=int(MemberState.SUSPECT),
            origin="y",
        ),
        1.0,
    )
    assert me.members["fake-0"].state is MemberState.SUSPECT
    me.apply(
        MemberUpdate(
            node_id="fake-0",
            host="127.0.0.1",
            port=9,
            incarnation=1,
            state=int(MemberState.ALIVE),
            origin="",
        ),
        2.0,
    )
    assert me.members["fake-0"].state is MemberState.ALIVE


def test_forgetting_the_dead_makes_room_for_new_members() -> None:
    me = bounded(capacity=3)
    for update in strangers(2):
        me.apply(update, 0.0)
    me.apply(strangers(1, 5)[0], 0.0)
    assert "fake-5" not in me.members  # full
    me.apply(
        MemberUpdate(
            node_id="fake-0",
            host="127.0.0.1",
            port=9,
            incarnation=0,
            state=int(MemberState.DEAD),
            origin="y",
        ),
        1.0,
    )
    me.tick(1.0 + CONFIG.dead_retention_s)  # the tombstone goes
    assert "fake-0" not in me.members
    me.apply(strangers(1, 5)[0], 2.0 + CONFIG.dead_retention_s)
    assert "fake-5" in me.members


def test_one_source_introduces_new_members_only_at_its_rate() -> None:
    me = bounded(capacity=1000, rate=2.0, burst=5)
    me.handle(
        GossipPush(source="peer-a", members=strangers(24), reports=()), ("127.0.1.1", 7946), 0.0
    )
    assert len(me.members) == 1 + 5  # the burst
    assert me.admission.refused_rate == 19
    # Another source has its own bucket.
    me.handle(
        GossipPush(source="peer-b", members=strangers(24, 100), reports=()),
        ("127.0.1.2", 7946),
        0.0,
    )
    assert len(me.members) == 1 + 10
    # Half a second later, source a may introduce one more (2 a second).
    me.handle(
        GossipPush(source="peer-a", members=strangers(24, 200), reports=()),
        ("127.0.1.1", 7946),
        0.5,
    )
    assert len(me.members) == 1 + 11


# -- Lifeguard local health: only an on-time direct ack lowers it --------------------------


def _probing_pair(awareness: int) -> tuple[Membership, GossipPing, float]:
    """A node that knows three peers, with local health `awareness`, that has just sent a
    probe; returns it, the ping and the time it was sent. Driven by hand: a fake clock."""
    prober = Membership("a", member_address(0), random.Random(3), 0.0, CONFIG)
    prober.bootstrap([(member_id(i), member_address(i)) for i in range(1, 4)], 0.0)
    prober.awareness = awareness
    now = 0.0
    while True:  # the first probe fires within one (scaled) period
        for send in prober.tick(now):
            if isinstance(send.message, GossipPing):
                return prober, send.message, now
        deadline = prober.next_deadline()
        assert deadline is not None
        now = deadline


def test_an_on_time_direct_ack_lowers_local_health() -> None:
    prober, ping, sent_at = _probing_pair(awareness=2)
    ack = GossipAck(seq=ping.seq, source=ping.target, members=(), reports=())
    prober.handle(ack, member_address(1), sent_at + 0.01)
    assert prober.awareness == 1


def test_a_relayed_ack_proves_the_target_alive_but_not_this_node_healthy() -> None:
    # memberlist lowers its awareness only on a direct ack within the probe timeout.
    prober, ping, sent_at = _probing_pair(awareness=2)
    timeout = CONFIG.probe_timeout_s * (prober.awareness + 1)
    sends = prober.tick(sent_at + timeout)  # no direct ack: indirect probes go out
    requests = [s for s in sends if isinstance(s.message, GossipPingReq)]
    assert requests
    relayed = GossipAck(seq=ping.seq, source=ping.target, members=(), reports=())
    prober.handle(relayed, requests[0].to, sent_at + timeout + 0.01)
    assert prober.awareness == 2
    target = prober.get(ping.target)
    assert target is not None and target.state is MemberState.ALIVE
    assert prober.counters.probes_failed == 0  # the probe succeeded: no suspicion


def test_a_late_direct_ack_leaves_local_health_alone() -> None:
    prober, ping, sent_at = _probing_pair(awareness=1)
    timeout = CONFIG.probe_timeout_s * (prober.awareness + 1)
    ack = GossipAck(seq=ping.seq, source=ping.target, members=(), reports=())
    prober.handle(ack, member_address(1), sent_at + timeout + 0.05)  # before any tick
    assert prober.awareness == 1


# -- joins: the full state in pages ---------------------------------------------------------


def _report_of(node: Membership, seq: int = 1) -> WorkerReport:
    """A gossip-sized report (six models) for `node`."""
    host, port = node.address
    models = {f"llama-3.1-8b-ft{i}": i % 3 for i in range(6)}
    return WorkerReport(
        node_id=node.node_id, host=host, port=port, http_port=0, models=models,
        models_omitted=18, queue_depth=seq % 7, queue_capacity=64, running=1, slots=8,
        gpu_utilization=0.125, memory_used=60 * 10**9, memory_total=141 * 10**9,
        load_backlog_s=0.0, ready=True, seq=seq, timestamp=0.0,
    )  # fmt: skip


def _cluster_with_reports(net: Participants, size: int) -> list[Membership]:
    nodes = membership_cluster(net, size, CONFIG, seed=4)
    for node in nodes:
        node.publish_report(_report_of(node))
    net.run_for(5.0)  # the reports spread
    return nodes


def test_a_joiner_learns_every_member_and_report_within_two_seconds() -> None:
    net = network(seed=5)
    size = 200
    nodes = _cluster_with_reports(net, size)
    joiner = Membership(
        "joiner", member_address(size), random.Random(9), net.now, CONFIG,
        seeds=[nodes[0].address],
    )  # fmt: skip
    net.add(joiner.address, joiner)
    held = set(nodes[0].reports)  # what the seed holds (gossip is still spreading the rest)
    assert len(held) > size // 2
    # Every member and every load report the seed holds.
    knows_all = lambda: joiner.live_count == size + 1 and set(joiner.reports) >= held  # noqa: E731
    took = net.run_until_true(knows_all, timeout=10.0, step=0.05)
    assert took is not None and took <= 2.0, (took, joiner.live_count, len(joiner.reports))
    assert net.network.sizer.oversized == 0  # every page fits a signed datagram
    assert nodes[0].counters.join_states == 1
    # What the pages brought is no news to the cluster: the joiner does not gossip it on.
    assert len(joiner._broadcasts) <= 1 and len(joiner._report_broadcasts) == 0
    # The cluster learns the joiner as usual.
    everyone = lambda: all(node.is_live("joiner") for node in nodes)  # noqa: E731
    assert net.run_until_true(everyone, timeout=10.0, step=0.1) is not None


def test_a_restarted_node_learns_its_old_incarnation_from_the_join_state_and_refutes() -> None:
    net = network(seed=6)
    nodes = membership_cluster(net, 20, CONFIG, seed=6)
    net.run_for(3.0)
    victim = nodes[7]
    victim.apply(update(victim.node_id, 0, MemberState.SUSPECT, "x"), net.now)  # incarnation 1
    net.run_for(5.0)
    assert all(node.members[victim.node_id].incarnation == 1 for node in nodes)
    net.crash(victim.address)
    again = Membership(
        victim.node_id, victim.address, random.Random(11), net.now, CONFIG,
        seeds=[nodes[0].address],
    )  # fmt: skip
    # It knows the others before its first probe would have found any of them.
    net.add(again.address, again)
    assert net.run_until_true(lambda: again.live_count == 20, timeout=2.0, step=0.05)
    assert again.incarnation == 2  # what the seed believed about it, plus one


def test_joins_beyond_the_page_tokens_get_a_sample() -> None:
    seed = Membership("seed", member_address(0), random.Random(1), 0.0, CONFIG)
    seed.bootstrap([(member_id(i), member_address(i)) for i in range(1, 200)], 0.0)
    full: list[int] = []
    for index in range(40):  # a burst of joins at one instant
        join = GossipJoin(
            source=f"joiner-{index}",
            members=(
                MemberUpdate(
                    node_id=f"joiner-{index}",
                    host="127.0.9.1",
                    port=7000 + index,
                    incarnation=0,
                    state=0,
                    origin="",
                ),
            ),
            reports=(),
        )
        sends = seed.handle(join, ("127.0.9.1", 7000 + index), 0.0)
        if any(isinstance(s.message, GossipJoinState) for s in sends):
            full.append(index)
        else:
            [reply] = sends
            assert isinstance(reply.message, GossipSync) and reply.message.reply
    pages_each = math.ceil(200 / 17)  # about 17 member updates a page
    assert 0 < len(full) <= JOIN_PAGE_TOKENS_MAX // pages_each + 1
    assert seed.counters.join_states_declined == 40 - len(full)
    # Tokens come back with time: one more full answer after a second's refill.
    join = GossipJoin(source="late", members=(), reports=())
    later = seed.handle(join, ("127.0.9.2", 7000), 1.0 + pages_each / JOIN_PAGE_TOKENS_PER_S)
    assert any(isinstance(s.message, GossipJoinState) for s in later)


def test_join_state_pages_are_paced_and_numbered() -> None:
    seed = Membership("seed", member_address(0), random.Random(1), 0.0, CONFIG)
    seed.bootstrap([(member_id(i), member_address(i)) for i in range(1, 1500)], 0.0)
    join = GossipJoin(source="joiner", members=(), reports=())
    first = [s.message for s in seed.handle(join, ("127.0.9.1", 7000), 0.0)]
    pages = [m for m in first if isinstance(m, GossipJoinState)]
    assert len(pages) == JOIN_PAGES_PER_BURST
    total = pages[0].pages
    assert total > JOIN_PAGES_PER_BURST
    assert seed.next_deadline() == pytest.approx(JOIN_PAGE_GAP_S)
    now = 0.0
    while len(pages) < total:
        now = seed.next_deadline() or now
        pages += [s.message for s in seed.tick(now) if isinstance(s.message, GossipJoinState)]
    assert [page.page for page in pages] == list(range(total))
    named = {update.node_id for page in pages for update in page.members}
    assert len(named) == 1500
    codec = Codec(SECRET)
    assert all(len(codec.encode(page, 1.0, 1)) <= MAX_DATAGRAM_BYTES for page in pages)


def test_a_sync_carries_the_senders_own_report_at_any_cluster_size() -> None:
    # Reports go out on change only: a sync repairs a copy a peer missed, and costs the same
    # at 10 members as at 1,000 (a member sample filled to the cap left no room for one).
    sizes = {}
    for count in (10, 1000):
        me = lone("n0000")
        me.bootstrap(((member_id(i), member_address(i)) for i in range(1, count)), 0.0)
        me.publish_report(_report_of(me))
        sync = me._sync(("127.0.0.2", 1), member_id(7), reply=False).message
        assert isinstance(sync, GossipSync)
        assert [report.node_id for report in sync.reports][:1] == ["n0000"]
        sizes[count] = len(Codec(SECRET).encode(sync, 0.0, 1))
    assert sizes[1000] <= 1.1 * sizes[10]

"""The model registry spreads by gossip (`sllm.core.registry_gossip`): every node converges.

50 decentralized nodes on the simulator's kernel and network (every datagram encoded by
the real codec: none may be over the cap). A deploy on one node reaches every node within
a bound computed from the gossip parameters; a delete too, and a node cut off by a
partition while it happened does not bring the model back; concurrent writes of one name
on two nodes end with the same winner everywhere; a restarted node (an empty replica)
gets the registry when it joins; under 10% loss, anti-entropy converges.
"""

from __future__ import annotations

import json
import math

from sllm.core.membership import GossipConfig
from sllm.core.node import Node, NodeConfig
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.sim.cluster import ClusterConfig, worker_name
from sllm.sim.decentralized import DecentralizedCluster
from sllm.sim.faults import HEAL, KILL_WORKER, PARTITION, RESTART_WORKER, Fault
from sllm.sim.network import LinkModel

NODES = 50
GOSSIP = GossipConfig()
# A rumor reaches everyone in O(log N) gossip rounds; three times ceil(log2 N) rounds of
# slack (a node's next tick may be a round away).
RUMOR_BOUND_S = 3 * math.ceil(math.log2(NODES)) * GOSSIP.gossip_interval_s
# Anti-entropy: each sync interval a node compares with one random member; a handful of
# intervals carry an entry to a node every rumor missed (or to a new one).
SYNC_BOUND_S = 4 * GOSSIP.sync_interval_s


def _spec(name: str, shards: int = 1, tag: str = "a") -> str:
    files = [
        {"path": f"model-{i:05d}-of-{shards:05d}.safetensors", "size": 4 << 30, "sha256": tag * 64}
        for i in range(shards)
    ]
    entry = {"name": name, "engine": "vllm", "source": f"hf://acme/{name}", "files": files}
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def _cluster(loss: float = 0.0, seed: int = 3) -> DecentralizedCluster:
    config = ClusterConfig(
        workers=NODES,
        seed=seed,
        policy="least-loaded",
        resources=WorkerResources(slots=2, queue_capacity=16),
        prestage=Tier.HOST,
        exact_bytes=True,
        link=LinkModel(loss=loss),
    )
    return DecentralizedCluster(config, NodeConfig(policy="least-loaded"))


def _nodes(cluster: DecentralizedCluster) -> list[Node]:
    return [host.node for host in cluster.nodes if host.node is not None]


def _everywhere(cluster, name: str, *, deleted: bool = False) -> bool:
    for node in _nodes(cluster):
        entry = node.registry.get(name)
        if entry is None or entry.deleted != deleted:
            return False
    return True


def _at(cluster: DecentralizedCluster, when: float, action) -> None:
    cluster.at(when, lambda _: action())


def _first_time(cluster, predicate, *, from_s: float, until_s: float) -> list[float]:
    """Workload times at which `predicate` first held, checked every 0.05 s."""
    seen: list[float] = []

    def look(_: None) -> None:
        if predicate():
            seen.append(cluster.now)
        elif cluster.now < until_s:
            cluster.at(cluster.now + 0.05, look)

    cluster.at(from_s, look)
    return seen


def _run(cluster: DecentralizedCluster, duration_s: float, faults=()) -> None:
    result = cluster.run([], duration_s, faults)
    assert result.report.simulation.datagrams["oversized"] == 0


def test_deploys_and_deletes_reach_every_node_and_concurrent_writes_agree() -> None:
    cluster = _cluster()
    deploy_at, contest_at, delete_at = 5.0, 10.0, 15.0
    _at(
        cluster,
        deploy_at,
        lambda: cluster.nodes[0].node.deploy("m1", _spec("m1"), cluster.kernel.now),
    )
    deployed = _first_time(
        cluster, lambda: _everywhere(cluster, "m1"), from_s=deploy_at, until_s=60
    )

    def contest() -> None:  # the same name, written on two nodes at one instant
        now = cluster.kernel.now
        cluster.nodes[3].node.deploy("m2", _spec("m2", tag="b"), now)
        cluster.nodes[7].node.deploy("m2", _spec("m2", tag="c"), now)

    _at(cluster, contest_at, contest)

    def agreed() -> bool:
        entries = [node.registry.get("m2") for node in _nodes(cluster)]
        return None not in entries and len({(e.version, e.writer, e.spec) for e in entries}) == 1

    contested = _first_time(cluster, agreed, from_s=contest_at, until_s=60)
    _at(cluster, delete_at, lambda: cluster.nodes[5].node.delete("m1", cluster.kernel.now))
    deleted = _first_time(
        cluster, lambda: _everywhere(cluster, "m1", deleted=True), from_s=delete_at, until_s=60
    )
    _run(cluster, 30.0)

    assert deployed and deployed[0] - deploy_at <= RUMOR_BOUND_S, deployed
    assert contested and contested[0] - contest_at <= RUMOR_BOUND_S, contested
    assert deleted and deleted[0] - delete_at <= RUMOR_BOUND_S, deleted
    winners = {node.registry.get("m2").writer for node in _nodes(cluster)}
    assert len(winners) == 1
    # the later (version, writer) won: the two writes had one version; writer breaks the tie
    assert winners == {max(worker_name(3), worker_name(7))}
    assert all("m1" not in node.registry.live() for node in _nodes(cluster))


def test_a_node_partitioned_during_a_delete_does_not_bring_the_model_back() -> None:
    cluster = _cluster()
    cut_off = worker_name(9)
    _at(cluster, 2.0, lambda: cluster.nodes[0].node.deploy("m1", _spec("m1"), cluster.kernel.now))
    _at(cluster, 8.0, lambda: cluster.nodes[1].node.delete("m1", cluster.kernel.now))
    faults = [Fault(at_s=5.0, kind=PARTITION, targets=(cut_off,)), Fault(at_s=20.0, kind=HEAL)]
    held_on = []
    _at(cluster, 19.0, lambda: held_on.append(cluster.nodes[9].node.registry.get("m1")))
    healed = _first_time(
        cluster, lambda: _everywhere(cluster, "m1", deleted=True), from_s=20.0, until_s=80
    )
    _run(cluster, 60.0, faults)

    assert held_on and held_on[0] is not None and not held_on[0].deleted  # it missed the delete
    assert healed and healed[0] - 20.0 <= SYNC_BOUND_S, healed
    assert all("m1" not in node.registry.live() for node in _nodes(cluster))


def test_a_restarted_node_gets_the_registry_when_it_joins() -> None:
    cluster = _cluster()
    restarted = worker_name(4)
    _at(cluster, 2.0, lambda: cluster.nodes[0].node.deploy("m1", _spec("m1"), cluster.kernel.now))
    faults = [
        Fault(at_s=6.0, kind=KILL_WORKER, targets=(restarted,)),
        Fault(at_s=8.0, kind=RESTART_WORKER, targets=(restarted,)),
    ]
    empty_at_restart = []
    _at(cluster, 8.01, lambda: empty_at_restart.append(cluster.nodes[4].node.registry.get("m1")))
    learned = _first_time(
        cluster,
        lambda: (
            cluster.nodes[4].node is not None
            and cluster.nodes[4].node.registry.get("m1") is not None
        ),
        from_s=8.0,
        until_s=60,
    )
    _run(cluster, 30.0, faults)

    assert empty_at_restart == [None]  # a fresh replica
    assert learned and learned[0] - 8.0 <= 2 * GOSSIP.sync_interval_s, learned


def test_a_spec_larger_than_a_datagram_spreads_whole() -> None:
    cluster = _cluster()
    large = _spec("big", shards=30)
    assert len(large) > 3 * 1400
    _at(cluster, 2.0, lambda: cluster.nodes[0].node.deploy("big", large, cluster.kernel.now))
    _run(cluster, 15.0)  # and no datagram was over the cap (`_run`)
    assert {node.registry.live().get("big") for node in _nodes(cluster)} == {large}


def test_under_ten_percent_loss_every_node_converges() -> None:
    cluster = _cluster(loss=0.1, seed=5)
    _at(cluster, 2.0, lambda: cluster.nodes[0].node.deploy("m1", _spec("m1"), cluster.kernel.now))
    _at(cluster, 4.0, lambda: cluster.nodes[1].node.delete("m1", cluster.kernel.now))
    converged = _first_time(
        cluster, lambda: _everywhere(cluster, "m1", deleted=True), from_s=4.0, until_s=60
    )
    _run(cluster, 40.0)
    assert converged and converged[0] - 4.0 <= SYNC_BOUND_S, converged

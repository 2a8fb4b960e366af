"""A simulated decentralized cluster: N gossiping nodes on the kernel's clock.

Why it exists: to run the deployment guide's decentralized architecture (no coordinator;
every node is a worker, a SWIM/Lifeguard gossip member and a scheduler over its own view)
at any size, with faults, next to the centralized one, and get the same report. Nothing
that decides or hosts is re-implemented: each node is a `sllm.core.node.Node` in the node
host the live `sllm.runtime.node.NodeServer` runs (`sllm.hosts.node.NodeHost`), here on
the kernel driver (`sllm.sim.hosts.SimulatedNode`):

- every datagram but an ``inference_request`` goes to ``Node.handle(message, sender,
  now)`` and the `Send`s it returns go out on the simulated network; one timer per node
  is kept at ``Node.next_deadline()`` and calls ``tick(now)``;
- an ``inference_request`` goes to the node's worker, the centralized simulator's
  `sllm.hosts.worker.WorkerHost` around the node's `WorkerState`, minus the reports to a
  coordinator (the node gossips its own);
- the client is the centralized simulator's; it sends each ScheduleRequest to a random
  live node (what `decentralized_simulation.py` does live) and the InferenceRequest to
  the node the decision names. Samples come from a random live node's view.

Addresses: a node's id is `worker_name(i)` (the same names the fault flags use) and its
gossip address is ``(id, GOSSIP_PORT)``; the simulated network routes by the host part.
Each node draws from its own generator, seeded with the run seed, its name and how many
times it started, so a seed gives one history.

Start and faults: the nodes start knowing each other (`Membership.bootstrap`: the live
driver also waits until every node holds all N alive) with the first `SEED_NODES` nodes as
seeds, and replay starts after `WARMUP_S`, by when every node's first load report has
spread. ``kill_worker`` kills a node (no goodbye: its datagrams stop, its queue is lost);
``restart_worker`` starts a fresh process, which rejoins through its seeds, learns that
it was declared dead and refutes with a higher incarnation. Partitions and loss windows
act on the network as in the centralized cluster. ``kill_coordinator`` and
``restart_coordinator`` have no meaning here: they are listed in the report's faults and
otherwise ignored.

Not handled yet: graceful leaves (a killed node never says goodbye), and seeds that change
address.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sllm.core.coordinator import Notice
from sllm.core.measures import Placements
from sllm.core.membership import MEMBER_EVENTS, GossipConfig
from sllm.core.node import NodeConfig, ProbingConfig
from sllm.sim.cluster import ClusterConfig, SimulatedCluster, child_rng, worker_name
from sllm.sim.hosts import GOSSIP_PORT, SimulatedNode

# How many of the first nodes are every node's seeds (a StatefulSet's first pods): one
# would do while it lives; three let a restarted node rejoin while one of them is down.
SEED_NODES = 3
# Replay starts this long after the nodes: each node's first report goes out at its first
# tick and spreads in gossip rounds of 0.2 s to 3 peers (log3 N rounds), well within it.
WARMUP_S = 3.0


def node_config_for(config: ClusterConfig) -> NodeConfig:
    """The node configuration a cluster configuration implies (live defaults otherwise)."""
    return NodeConfig(
        policy=config.policy,
        report_interval_s=config.report_interval_s,
        admission_deadline_s=config.admission_deadline_s,
        admission_hold_s=config.admission_hold_s,
        probing=ProbingConfig(candidates=config.probing_candidates),
    )


class DecentralizedCluster(SimulatedCluster):
    """N nodes (worker + gossip + scheduler each) and a client on one kernel and network."""

    mode = "decentralized"

    def __init__(self, config: ClusterConfig, node_config: NodeConfig | None = None) -> None:
        super().__init__(config)
        self.node_config = node_config or node_config_for(config)
        self.t0 = max(config.report_interval_s, WARMUP_S)
        names = [worker_name(i) for i in range(config.workers)]
        self.seed_addresses = [(name, GOSSIP_PORT) for name in names[:SEED_NODES]]
        self.nodes = [
            SimulatedNode(self, name, self.seed_addresses, index=index)
            for index, name in enumerate(names)
        ]
        self.workers = list(self.nodes)
        self.by_name = {node.name: node for node in self.nodes}
        self._client_rng = child_rng(config.seed, "client")
        self._sampler_rng = child_rng(config.seed, "sampler")

    @property
    def gossip(self) -> GossipConfig:
        return self.node_config.gossip

    def detection_bound(self) -> float:
        """Seconds within which every live node drops a crashed one (no loss)."""
        return self.gossip.detection_bound(self.config.workers)

    def start_hosts(self) -> None:
        peers = [(node.name, node.address) for node in self.nodes]
        for node in self.nodes:
            node.boot(peers, fresh=False)

    def scheduler(self) -> str:
        live = self.live_workers()
        return self._client_rng.choice(live or [node.name for node in self.nodes])

    def notice(self, notices: Sequence[Notice]) -> None:
        now = self.now
        for notice in notices:
            if notice.event in MEMBER_EVENTS:  # counted in the report
                member = str(notice.fields.get("member", ""))
                self.notices.append((now, notice.event, member))
                self.tell_client(notice.event, member)

    def known_members(self, name: str) -> list[str]:
        """The members node `name` holds alive or suspect, sorted (empty while it is down)."""
        node = self.by_name[name].node
        if node is None:
            return []
        return sorted(member.node_id for member in node.membership.live_members())

    def converged(self) -> bool:
        """Every live node holds exactly the live nodes as live members."""
        live = sorted(self.live_workers())  # as `known_members` lists them
        return all(self.known_members(name) == live for name in live)

    def sample(self) -> None:
        """What `status` against a random live node returns: that node's view."""
        live = [host.node for host in self.nodes if host.node is not None]
        if not live:
            self.missed_samples += 1
            return
        node = self._sampler_rng.choice(live)
        node.scheduler.expire(self.kernel.now)  # `cluster_state` expires first, too
        self.record_view(node.scheduler.view)

    def placements(self) -> Placements | None:
        """Summed over the live nodes, each of which counts only its own decisions."""
        live = [host.node for host in self.nodes if host.node is not None]
        if not live:
            return None
        counters = [node.scheduler.counters for node in live]
        return sum(
            (Placements(warm=c.warm_placements, cold=c.cold_placements) for c in counters),
            Placements(),
        )

    def membership_section(self) -> dict[str, Any]:
        counts = Counter(event for _, event, _ in self.notices)
        return {
            "events": dict(sorted(counts.items())),
            "detection_bound_s": round(self.detection_bound(), 6),
            "converged_at_end": self.converged(),
        }

    def report_extra(self) -> dict[str, Any]:
        gossip = self.gossip
        return {
            "gossip": {
                "probe_interval_s": gossip.probe_interval_s,
                "gossip_interval_s": gossip.gossip_interval_s,
                "gossip_fanout": gossip.gossip_fanout,
                "probing_candidates": self.node_config.probing.candidates,
                "seeds": [name for name, _ in self.seed_addresses],
            }
        }

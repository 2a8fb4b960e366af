"""`sllm bench gossip`: how fast gossip spreads and detects, its cost, and whether probing pays.

Everything runs the real membership core (`sllm.core.membership`) and the real node
(`sllm.core.node`) in virtual time on the simulator's kernel and network (`sllm.sim`),
with a one-way delay of 0.5 ms plus a log-normal queueing delay of median 0.7 ms (`LINK`)
and no loss. Memberships are hosted by `sllm.sim.participants`, and so are the real nodes
of the idle measure; nodes running requests are the decentralized simulator's
(`sllm.sim.decentralized`). Seven measurements:

1. **Dissemination.** A converged cluster of N nodes; one node refutes a suspicion about
   itself (a new incarnation: the smallest state change there is). Virtual seconds until
   99% (and 100%) of the other nodes hold it, as gossip rounds (``gossip_interval``) and
   protocol periods (``T``), beside ``log2 N``. Twice: with memberlist-style gossip rounds
   (the default, fanout 3 every 200 ms) and with SWIM piggybacking alone (fanout 0).
2. **Failure detection.** A converged cluster; one node crashes. Seconds until 99% and
   100% of the live nodes have declared it dead, beside the stated bound
   (`GossipConfig.detection_bound`).
3. **Bandwidth under load.** Every node looks at its load every second; a share of them
   (all: the worst case; one in ten) publish a changed report, and every datagram is
   encoded by the real codec. Bytes sent per node per second over 10 s, and how stale
   the reports held about others are: 0 for the latest, else the time since the first
   newer one was published (the price of a bounded bandwidth).
4. **Idle cost.** N real nodes (`sllm.core.node.Node`: worker, membership, scheduler), no
   requests, once the first reports have spread: bytes per node per second, and the
   share of views holding each other's latest report. Reports go out on change only, so
   this is probes, syncs and little else, whatever N.
5. **Join.** A node joins a converged cluster of N through one seed: seconds until it
   knows 99% and all of the members, and all of the seed's load reports (the seed
   answers a join with its whole state, in pages).
6. **Probing** (after Sparrow). A decentralized cluster of 20 nodes with workers (the sim
   engine), a Poisson load at high utilization, each request sent to a random node,
   placement with the default policy; queueing and latency with probing off and with
   d = 2 and 3 candidates.
7. **What placement reads, under load.** The scale experiment's load (`sllm experiment
   scale`: 0.25 requests/s per node, startup-aware, checkpoints in host memory) for 20 s
   on N real nodes, probing off and d = 2: for every decision, how stale the deciding
   node's copy of the chosen worker's report was (0 when it held that worker's latest,
   else the time since the first newer one went out), and the p99 TTFT beside one
   coordinator's on the same load.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.membership import GossipConfig, Membership, MemberState, Send
from sllm.core.node import Node, NodeConfig, ProbingConfig
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources, prestaged
from sllm.experiments.scale import DECENTRALIZED_SCALE_DURATIONS, scale_cluster, scale_workload
from sllm.sim.cluster import CentralizedCluster, ClusterConfig
from sllm.sim.decentralized import DecentralizedCluster, node_config_for
from sllm.sim.network import LinkModel
from sllm.sim.participants import Participants, member_address, member_id, membership_cluster
from sllm.sim.report import RunReport, percentile
from sllm.wire import MemberUpdate, Message, ScheduleRequest, ScheduleResponse, WorkerReport
from sllm.workload import Arrival
from sllm.workload.options import make_workload

SIZES = (10, 100, 1_000)
# One-way delay: a 0.5 ms floor plus a log-normal queueing delay of median 0.7 ms (p99 of
# the whole about 2.7 ms), a LAN with some load on it.
LINK = LinkModel(latency_s=0.0005, jitter_s=0.0007)
TARGET_SHARE = 0.99
# The model `measure_registry` deploys: a catalog entry of a typical size (one safetensors
# file with its sha256), as `sllm.catalog.catalog_entry_json` writes it.
REGISTRY_MODEL = "acme/bench-model"
REGISTRY_SPEC = (
    '{"engine":"vllm","files":[{"path":"model.safetensors","sha256":"' + "0" * 64 + '",'
    '"size":16000000000}],"name":"acme/bench-model","options":{},"params_b":8.0,'
    '"size_bytes":16000000000,"source":"hf://acme/bench-model"}'
)
PROBING_NODES = 20
# Bandwidth: let the first reports spread, then count bytes over a window; staleness is
# read over this many random (observer, subject) pairs.
BANDWIDTH_SETTLE_S = 3.0
BANDWIDTH_WINDOW_S = 10.0
STALENESS_PAIRS = 2_000
# Shares of the nodes whose load changes in a given second: every one (the worst case),
# one in ten (a busy cluster: a queue moves when a request starts or ends).
CHANGE_SHARES = (1.0, 0.1)
# Idle: the nodes start holding each other's first report (`idle_nodes`); the settling
# time lets the origins' own sends of it end (a few gossip rounds) and every node's
# report reach its idle value. The old node re-sent its report every 10 s, so a
# 30-second window shows three refreshes.
IDLE_SETTLE_S = 30.0
IDLE_WINDOW_S = 30.0
# Join: the cluster's reports have spread before the joiner comes.
JOIN_SETTLE_S = 5.0
PROBING_SETTINGS = (0, 2, 3)
# What placement reads: the scale experiment's load (`sllm.experiments.scale`) for as
# long as its decentralized arm runs at each size (20 s at 1,000 nodes: about 100 s of
# wall time a run), with probing off and with two candidates.
PLACEMENT_DURATIONS_S = {**DECENTRALIZED_SCALE_DURATIONS, 1_000: 20.0}
PLACEMENT_DURATION_S = 20.0  # at any other size
PLACEMENT_PROBING = (0, 2)


def _trials(size: int, trials: int) -> int:
    return max(1, trials if size < 1_000 else trials // 2)


# -- 1. dissemination ------------------------------------------------------------------------


def measure_dissemination(size: int, config: GossipConfig, seed: int) -> dict[str, float | None]:
    net = Participants(seed=seed, link=LINK, exact_bytes=False)
    nodes = membership_cluster(net, size, config, seed=seed)
    net.run_for(3.0)
    origin = nodes[random.Random(seed).randrange(size)]
    suspicion = MemberUpdate(
        node_id=origin.node_id,
        host="",
        port=0,
        incarnation=origin.incarnation,
        state=1,
        origin="bench",
    )
    origin.apply(suspicion, net.now)  # it refutes: a new incarnation to spread
    target = origin.incarnation
    others = [node for node in nodes if node is not origin]
    needed = math.ceil(TARGET_SHARE * len(others))

    def reached() -> int:
        return sum(1 for node in others if node.members[origin.node_id].incarnation >= target)

    step = min(config.gossip_interval_s, config.probe_interval_s) / 4
    t99 = net.run_until_true(lambda: reached() >= needed, timeout=300.0, step=step)
    t100 = net.run_until_true(lambda: reached() == len(others), timeout=300.0, step=step)
    return {"t99_s": t99, "t100_s": None if t100 is None or t99 is None else t99 + t100}


# -- 2. failure detection --------------------------------------------------------------------


def measure_detection(size: int, config: GossipConfig, seed: int) -> dict[str, float | None]:
    net = Participants(seed=seed, link=LINK, exact_bytes=False)
    nodes = membership_cluster(net, size, config, seed=seed)
    net.run_for(3.0)
    victim = nodes[random.Random(seed).randrange(size)]
    net.crash(victim.address)
    live = [node for node in nodes if node is not victim]
    needed = math.ceil(TARGET_SHARE * len(live))

    def dead() -> int:
        return sum(1 for node in live if node.members[victim.node_id].state is MemberState.DEAD)

    limit = 3 * config.detection_bound(size)
    t99 = net.run_until_true(lambda: dead() >= needed, timeout=limit, step=0.1)
    rest = net.run_until_true(lambda: dead() == len(live), timeout=limit, step=0.1)
    false = sum(node.counters.false_suspicions for node in live)
    return {
        "t99_s": t99,
        "t100_s": None if t99 is None or rest is None else t99 + rest,
        "false_suspicions": float(false),
    }


# -- 3. bandwidth ---------------------------------------------------------------------------


class ReportingMember:
    """A membership whose node looks at its load every second and publishes a changed
    report with probability `change_share` (1.0: every queue always moving, the worst
    case), as the node does: on change only. Remembers when it published each sequence
    number, to tell how stale another node's copy is."""

    def __init__(self, membership: Membership, change_share: float, rng: random.Random) -> None:
        self.membership = membership
        self.change_share = change_share
        self.rng = rng
        self._next_report = 0.0
        self._seq = 0
        self.published_at: list[float] = []  # index: seq - 1

    def handle(self, message: Message, sender: tuple[str, int], now: float) -> list[Send]:
        return self.membership.handle(message, sender, now)

    def tick(self, now: float) -> list[Send]:
        if now >= self._next_report:
            self._next_report = now + 1.0
            if self._seq == 0 or self.rng.random() < self.change_share:
                self.publish(now)
            self.membership.take_reports()  # nobody reads them; keep the list short
        return self.membership.tick(now)

    def publish(self, now: float) -> WorkerReport:
        """A new report, gossiped from here on."""
        self._seq += 1
        self.published_at.append(now)
        report = synthetic_report(self.membership, self._seq, now)
        self.membership.publish_report(report)
        return report

    def staleness(self, held_seq: int | None, now: float) -> float:
        """How long a copy at `held_seq` (None: no copy) has been out of date at `now`:
        0 for the latest, else the time since the first newer report was published."""
        if held_seq is not None and held_seq >= self._seq:
            return 0.0
        first_newer = 0 if held_seq is None else held_seq
        return now - self.published_at[first_newer]

    def next_deadline(self) -> float | None:
        deadline = self.membership.next_deadline()
        return self._next_report if deadline is None else min(deadline, self._next_report)


def synthetic_report(membership: Membership, seq: int, now: float) -> WorkerReport:
    """A gossip-sized report (six models) whose queue changes every time."""
    host, port = membership.address
    models = {f"llama-3.1-8b-ft{i}": i % 3 for i in range(6)}
    return WorkerReport(
        node_id=membership.node_id,
        host=host,
        port=port,
        http_port=0,
        models=models,
        models_omitted=18,
        queue_depth=seq % 7,
        queue_capacity=64,
        running=seq % 8,
        slots=8,
        gpu_utilization=(seq % 8) / 8,
        memory_used=60 * 10**9,
        memory_total=141 * 10**9,
        load_backlog_s=0.0,
        ready=True,
        seq=seq,
        timestamp=now,
    )


def measure_bandwidth(
    size: int, config: GossipConfig, seed: int, change_share: float = 1.0
) -> dict[str, float]:
    """Bytes per node and view staleness with `change_share` of the nodes changing their
    load each second (1.0: the worst case).

    Staleness of one node's copy of another's report: 0 when it holds the latest, else
    how long since the first newer report was published (`ReportingMember.staleness`),
    since an unchanged report is as good as new when reports go out on change only.
    Also the old measure, the report's age (now less its timestamp), for comparison.
    """
    net = Participants(seed=seed, link=LINK)  # every datagram encoded: exact bytes
    memberships = [
        Membership(member_id(i), member_address(i), random.Random(seed * 7919 + i), 0.0, config)
        for i in range(size)
    ]
    peers = [(m.node_id, m.address) for m in memberships]
    reporters: dict[str, ReportingMember] = {}
    first: list[WorkerReport] = []
    for index, membership in enumerate(memberships):
        membership.bootstrap(peers, 0.0)
        reporter = ReportingMember(membership, change_share, random.Random(seed * 31 + index))
        reporters[membership.node_id] = reporter
        first.append(reporter.publish(0.0))
        net.add(membership.address, reporter)
    # Every node holds every first report already: what is measured is the churn, not a
    # cold start's flood of N first reports.
    for membership in memberships:
        membership.bootstrap_reports(first)
    net.run_for(BANDWIDTH_SETTLE_S)
    start = net.bytes_sent()
    net.run_for(BANDWIDTH_WINDOW_S)
    sent = [total - start[address] for address, total in net.bytes_sent().items()]
    rng = random.Random(seed)
    ages: list[float] = []
    stale: list[float] = []
    missing = 0
    for _ in range(STALENESS_PAIRS):
        observer, subject = rng.sample(memberships, 2)
        report = observer.reports.get(subject.node_id)
        if report is None:
            missing += 1
        else:
            ages.append(net.now - report.timestamp)
        held = None if report is None else report.seq
        stale.append(reporters[subject.node_id].staleness(held, net.now))
    stale.sort()
    return {
        "bytes_per_node_s": sum(sent) / size / BANDWIDTH_WINDOW_S,
        "max_bytes_per_node_s": max(sent) / BANDWIDTH_WINDOW_S,
        "report_age_mean_s": statistics.fmean(ages) if ages else float("nan"),
        "report_missing_share": missing / STALENESS_PAIRS,
        "staleness_median_s": stale[len(stale) // 2],
        "staleness_p99_s": stale[int(0.99 * (len(stale) - 1))],
    }


# -- 3b. idle cost and joins, with real nodes ---------------------------------------------------


def idle_nodes(
    net: Participants, size: int, seed: int, config: NodeConfig | None = None
) -> list[Node]:
    """`size` real decentralized nodes (worker, membership, scheduler) on `net`, converged:
    every node knows every other as alive. Nothing is placed on them: they are idle."""
    catalog = served_catalog()
    cost = CostModel()
    resources = WorkerResources(slots=2, queue_capacity=32)
    preloaded = prestaged(catalog, resources, Tier.HOST)
    nodes = [
        Node(
            member_id(i),
            member_address(i),
            catalog,
            cost,
            random.Random(seed * 1_000_003 + i),
            net.now,
            config,
            resources=resources,
            preloaded=preloaded,
        )
        for i in range(size)
    ]
    peers = [(node.node_id, node.address) for node in nodes]
    for node in nodes:
        node.membership.bootstrap(peers, net.now)
        net.add(node.address, node)
    # Every node publishes its first report, and every other node holds it already: the
    # idle state after a cold start, without simulating the cold start's flood of N
    # first reports (at 1,000 nodes it keeps the gossip rounds full for minutes).
    for node in nodes:
        net.send(node.address, node.tick(net.now))  # its first report is published
    first = [node.membership.reports[node.node_id] for node in nodes]
    for node in nodes:
        node.membership.bootstrap_reports(first)
    return nodes


def measure_idle(size: int, seed: int) -> dict[str, float]:
    """Bytes per node per second of an idle cluster of real nodes, once every first report
    has spread (`IDLE_SETTLE_S`), and whether their views are whole: the idle cost that
    load-report dissemination adds to probes and syncs."""
    net = Participants(seed=seed, link=LINK)
    nodes = idle_nodes(net, size, seed)
    net.run_for(IDLE_SETTLE_S)
    start = net.bytes_sent()
    net.run_for(IDLE_WINDOW_S)
    sent = [total - start[address] for address, total in net.bytes_sent().items()]
    rng = random.Random(seed)
    held = 0
    for _ in range(STALENESS_PAIRS):
        observer, subject = rng.sample(nodes, 2)
        entry = observer.scheduler.view.get(subject.node_id)
        latest = subject.membership.reports[subject.node_id]  # what it last published
        held += entry is not None and entry.report.seq == latest.seq
    return {
        "bytes_per_node_s": sum(sent) / size / IDLE_WINDOW_S,
        "max_bytes_per_node_s": max(sent) / IDLE_WINDOW_S,
        "views_current_share": held / STALENESS_PAIRS,
    }


def measure_join(size: int, seed: int) -> dict[str, float | None]:
    """A node joins a converged cluster of `size` members through one seed: virtual
    seconds until it knows 99% (and all) of them, and all the seed's load reports."""
    net = Participants(seed=seed, link=LINK, exact_bytes=False)
    config = GossipConfig()
    members = membership_cluster(net, size, config, seed=seed)
    for member in members:
        member.publish_report(synthetic_report(member, 1, net.now))
    net.run_for(JOIN_SETTLE_S)
    seed_member = members[0]
    joiner = Membership(
        "joiner", member_address(size), random.Random(seed), net.now, config,
        seeds=[seed_member.address],
    )  # fmt: skip
    net.add(joiner.address, joiner)
    started = net.now
    needed = math.ceil(TARGET_SHARE * size)
    reports = set(seed_member.reports)
    t99 = net.run_until_true(lambda: joiner.live_count - 1 >= needed, timeout=60.0, step=0.01)
    net.run_until_true(lambda: joiner.live_count - 1 == size, timeout=60.0, step=0.01)
    t100 = None if joiner.live_count - 1 < size else net.now - started
    net.run_until_true(lambda: set(joiner.reports) >= reports, timeout=60.0, step=0.01)
    reports_s = net.now - started if set(joiner.reports) >= reports else None
    return {"t99_s": t99, "t100_s": t100, "reports_s": reports_s}


def measure_registry(size: int, seed: int) -> dict[str, float | None]:
    """A model deployed on one node of an idle cluster of `size` real nodes: virtual
    seconds until 99% (and all) of the nodes hold it, then the same for its delete."""
    net = Participants(seed=seed, link=LINK)
    nodes = idle_nodes(net, size, seed)
    net.run_for(JOIN_SETTLE_S)
    needed = math.ceil(TARGET_SHARE * size)

    def holding(*, deleted: bool) -> int:
        return sum(
            (entry := node.registry.get(REGISTRY_MODEL)) is not None and entry.deleted == deleted
            for node in nodes
        )

    times: dict[str, float | None] = {}
    for action, deleted in (("deploy", False), ("delete", True)):
        started = net.now
        if deleted:
            nodes[-1].delete(REGISTRY_MODEL, net.now)
        else:
            nodes[0].deploy(REGISTRY_MODEL, REGISTRY_SPEC, net.now)
        times[f"{action}_t99_s"] = net.run_until_true(
            partial(_at_least, holding, deleted, needed), timeout=60.0, step=0.01
        )
        net.run_until_true(partial(_at_least, holding, deleted, size), timeout=60.0, step=0.01)
        times[f"{action}_t100_s"] = net.now - started if holding(deleted=deleted) == size else None
    return times


def _at_least(holding: Callable[..., int], deleted: bool, count: int) -> bool:
    return holding(deleted=deleted) >= count


# -- 4. probing -----------------------------------------------------------------------------


def measure_probing(
    candidates: int, seed: int, rate: float, duration: float, nodes: int = PROBING_NODES
) -> dict[str, float]:
    """One run of the decentralized simulator with `candidates` probes per decision."""
    catalog = served_catalog()
    config = ClusterConfig(
        workers=nodes,
        seed=seed,
        resources=WorkerResources(slots=2, queue_capacity=32),
        prestage=Tier.HOST,
        link=LINK,
    )
    cluster = DecentralizedCluster(config, NodeConfig(probing=ProbingConfig(candidates=candidates)))
    rng = random.Random(seed)
    models = list(catalog)[:4]
    arrivals = []
    at = 0.0
    for _ in range(int(rate * duration)):
        at += rng.expovariate(rate)
        model = rng.choice(models)
        arrivals.append(Arrival(time_s=at, model=model, prompt_tokens=256, output_tokens=64))
    outcomes = cluster.run(arrivals, duration).outcomes
    done = [o for o in outcomes if o.ok]
    queue = sorted(o.queue_s for o in done)
    e2e = sorted(o.e2e_s for o in done)
    per_node = [sum(1 for o in done if o.worker_id == host.name) for host in cluster.nodes]
    return {
        "completed_share": len(done) / max(1, len(outcomes)),
        "queue_mean_s": statistics.fmean(queue),
        "queue_p99_s": queue[int(0.99 * (len(queue) - 1))],
        "e2e_mean_s": statistics.fmean(e2e),
        "e2e_p99_s": e2e[int(0.99 * (len(e2e) - 1))],
        "per_node_std": statistics.pstdev(per_node),
    }


# -- 7. what placement reads, under load ----------------------------------------------------


class AuditedCluster(DecentralizedCluster):
    """The decentralized simulator, watched: every report a node gossips (its sequence
    number and time) and, for every decision, how stale the deciding node's copy of the
    chosen worker's report was: 0 when it held that worker's latest gossiped report or a
    newer one (its own, or a probe reply), else the time since the first newer one went
    out (as `ReportingMember.staleness`). That is the view placement actually read."""

    def __init__(self, config: ClusterConfig, node_config: NodeConfig) -> None:
        super().__init__(config, node_config)
        self.published: dict[str, tuple[list[int], list[float]]] = {}  # node -> seqs, times
        self.decision_staleness: list[float] = []

    def start_hosts(self) -> None:
        super().start_hosts()
        for host in self.nodes:
            assert host.node is not None
            self._watch(host.node)

    def _watch(self, node: Node) -> None:
        seqs: list[int] = []
        times: list[float] = []
        self.published[node.node_id] = (seqs, times)
        publish = node.membership.publish_report
        place = node.scheduler.place

        def published(report: WorkerReport) -> None:
            seqs.append(report.seq)
            times.append(self.kernel.now)
            publish(report)

        def placed(
            request: ScheduleRequest,
            now: float,
            among: Sequence[str] = (),
            reply_to: object = None,
        ) -> ScheduleResponse:
            response = place(request, now, among, reply_to)
            entry = node.scheduler.view.get(response.worker_id) if response.worker_id else None
            if entry is not None:
                self.decision_staleness.append(self._staleness(entry.report, now))
            return response

        # Wrapped on the instances, so that the node under test is the shipped one.
        setattr(node.membership, "publish_report", published)  # noqa: B010
        setattr(node.scheduler, "place", placed)  # noqa: B010

    def _staleness(self, held: WorkerReport, now: float) -> float:
        seqs, times = self.published[held.node_id]
        first_newer = bisect.bisect_right(seqs, held.seq)
        return 0.0 if first_newer == len(seqs) else now - times[first_newer]


def _scale_load(size: int, seed: int, duration: float) -> tuple[ClusterConfig, list[Arrival]]:
    """The scale experiment's cluster (on this benchmark's link) and load at `size`."""
    config = dataclasses.replace(scale_cluster(size, seed), link=LINK)
    return config, make_workload(scale_workload(size, duration, seed))[1]


def measure_placement_views(
    size: int, candidates: int, seed: int, duration: float = PLACEMENT_DURATION_S
) -> dict[str, float]:
    """The scale experiment's load on `size` real nodes with `candidates` probes per
    decision: how stale the reports placement chose by were, and the run's p99 TTFT."""
    config, arrivals = _scale_load(size, seed, duration)
    config = dataclasses.replace(config, probing_candidates=candidates)
    cluster = AuditedCluster(config, node_config_for(config))
    report = cluster.run(arrivals, duration).report.run
    stale = sorted(cluster.decision_staleness)
    return {
        "decisions": float(len(stale)),
        "staleness_median_s": percentile(stale, 50),
        "staleness_p99_s": percentile(stale, 99),
        "stale_share": sum(1 for s in stale if s > 0) / max(1, len(stale)),
        **_outcome(report),
    }


def measure_centralized(
    size: int, seed: int, duration: float = PLACEMENT_DURATION_S
) -> dict[str, float]:
    """The same load placed by one coordinator: the baseline for the p99 TTFT."""
    config, arrivals = _scale_load(size, seed, duration)
    return _outcome(CentralizedCluster(config).run(arrivals, duration).report.run)


def _outcome(report: RunReport) -> dict[str, float]:
    return {
        "ttft_p99_s": report.latency.ttft.p99,
        "completed": float(report.completed),
        "failed": float(report.failed),
    }


# -- driver ---------------------------------------------------------------------------------


def _summary(values: Sequence[float | None]) -> dict[str, float | None]:
    present = sorted(v for v in values if v is not None)
    if not present:
        return {"median": None, "max": None, "failed": float(len(values))}
    return {
        "median": round(statistics.median(present), 3),
        "max": round(present[-1], 3),
        "failed": float(len(values) - len(present)),
    }


def run(sizes: Sequence[int], trials: int, probing_seeds: int, log: bool) -> dict[str, Any]:
    gossip = GossipConfig()
    piggyback = GossipConfig(gossip_fanout=0)
    result: dict[str, Any] = {
        "config": {
            "probe_interval_s": gossip.probe_interval_s,
            "probe_timeout_s": gossip.probe_timeout_s,
            "gossip_interval_s": gossip.gossip_interval_s,
            "gossip_fanout": gossip.gossip_fanout,
            "suspicion_mult": gossip.suspicion_mult,
            "suspicion_max_mult": gossip.suspicion_max_mult,
            "retransmit_mult": gossip.retransmit_mult,
            "latency_s": LINK.latency_s,
            "jitter_s": LINK.jitter_s,
        },
        "dissemination": [],
        "detection": [],
        "bandwidth": [],
        "idle": [],
        "join": [],
        "registry": [],
        "placement_views": [],
        "probing": [],
    }

    def say(text: str) -> None:
        if log:
            print(text, flush=True)

    for size in sizes:
        count = _trials(size, trials)
        started = time.perf_counter()
        rows: dict[str, dict[str, Any]] = {}
        for name, config in (("gossip", gossip), ("piggyback", piggyback)):
            runs = [measure_dissemination(size, config, seed) for seed in range(count)]
            t99 = _summary([r["t99_s"] for r in runs])
            t100 = _summary([r["t100_s"] for r in runs])
            unit = config.gossip_interval_s if config.gossip_fanout else config.probe_interval_s
            rows[name] = {
                "t99_s": t99,
                "t100_s": t100,
                "rounds_99": None if t99["median"] is None else round(t99["median"] / unit, 1),
                "round_s": unit,
            }
        entry = {"nodes": size, "trials": count, "log2_n": round(math.log2(size), 2), **rows}
        result["dissemination"].append(entry)
        say(
            f"dissemination N={size}: gossip 99% {rows['gossip']['t99_s']['median']}s "
            f"({rows['gossip']['rounds_99']} rounds of 0.2 s), piggyback only 99% "
            f"{rows['piggyback']['t99_s']['median']}s ({rows['piggyback']['rounds_99']} "
            f"periods); log2 N = {entry['log2_n']}  [{time.perf_counter() - started:.1f}s]"
        )
        started = time.perf_counter()
        found = [measure_detection(size, gossip, seed) for seed in range(count)]
        detection: dict[str, Any] = {
            "nodes": size,
            "trials": count,
            "t99_s": _summary([r["t99_s"] for r in found]),
            "t100_s": _summary([r["t100_s"] for r in found]),
            "bound_s": round(gossip.detection_bound(size), 2),
            "suspicion_min_s": round(gossip.suspicion_timeouts(size)[0], 2),
            "false_suspicions": sum(r["false_suspicions"] or 0.0 for r in found),
        }
        result["detection"].append(detection)
        say(
            f"detection N={size}: 99% {detection['t99_s']['median']}s, all "
            f"{detection['t100_s']['median']}s (max {detection['t100_s']['max']}s); bound "
            f"{detection['bound_s']}s  [{time.perf_counter() - started:.1f}s]"
        )
        for share in CHANGE_SHARES:
            started = time.perf_counter()
            measured = measure_bandwidth(size, gossip, 0, change_share=share)
            bandwidth = {
                "nodes": size,
                "change_share": share,
                **{k: round(v, 3) for k, v in measured.items()},
            }
            result["bandwidth"].append(bandwidth)
            say(
                f"bandwidth N={size}, {share:.0%} changing/s: "
                f"{bandwidth['bytes_per_node_s']:.0f} B/s per node, staleness median "
                f"{bandwidth['staleness_median_s']:.2f}s p99 {bandwidth['staleness_p99_s']:.2f}s"
                f" (report age {bandwidth['report_age_mean_s']:.2f}s, missing "
                f"{bandwidth['report_missing_share']:.0%})"
                f"  [{time.perf_counter() - started:.1f}s]"
            )
        started = time.perf_counter()
        idle = {"nodes": size, **{k: round(v, 4) for k, v in measure_idle(size, 0).items()}}
        result["idle"].append(idle)
        say(
            f"idle N={size}: {idle['bytes_per_node_s']:.0f} B/s per node (max "
            f"{idle['max_bytes_per_node_s']:.0f}), views current "
            f"{idle['views_current_share']:.1%}  [{time.perf_counter() - started:.1f}s]"
        )
        started = time.perf_counter()
        joins = [measure_join(size, seed) for seed in range(count)]
        join: dict[str, Any] = {
            "nodes": size,
            "trials": count,
            "t99_s": _summary([r["t99_s"] for r in joins]),
            "t100_s": _summary([r["t100_s"] for r in joins]),
            "reports_s": _summary([r["reports_s"] for r in joins]),
        }
        result["join"].append(join)
        say(
            f"join N={size}: 99% of members in {join['t99_s']['median']}s, all in "
            f"{join['t100_s']['median']}s, the seed's reports in {join['reports_s']['median']}s"
            f"  [{time.perf_counter() - started:.1f}s]"
        )
        started = time.perf_counter()
        spread = [measure_registry(size, seed) for seed in range(count)]
        registry: dict[str, Any] = {"nodes": size, "trials": count}
        for key in spread[0]:
            registry[key] = _summary([r[key] for r in spread])
        result["registry"].append(registry)
        say(
            f"registry N={size}: a deploy on 99% of nodes in "
            f"{registry['deploy_t99_s']['median']}s, all in "
            f"{registry['deploy_t100_s']['median']}s; a delete on all in "
            f"{registry['delete_t100_s']['median']}s"
            f"  [{time.perf_counter() - started:.1f}s]"
        )
        started = time.perf_counter()
        duration = PLACEMENT_DURATIONS_S.get(size, PLACEMENT_DURATION_S)
        central = measure_centralized(size, 0, duration)
        for candidates in PLACEMENT_PROBING:
            views = measure_placement_views(size, candidates, 0, duration)
            placement = {
                "nodes": size,
                "candidates": candidates,
                "duration_s": duration,
                **{k: round(v, 3) for k, v in views.items()},
                "centralized_ttft_p99_s": round(central["ttft_p99_s"], 3),
                "centralized_failed": central["failed"],
                "ttft_p99_ratio": round(views["ttft_p99_s"] / central["ttft_p99_s"], 3),
            }
            result["placement_views"].append(placement)
            say(
                f"placement N={size}, probing d={candidates}: the report each decision chose "
                f"by was stale by {placement['staleness_median_s']:.2f}s median, "
                f"{placement['staleness_p99_s']:.2f}s p99 ({placement['stale_share']:.1%} of "
                f"{placement['decisions']:.0f} decisions stale); p99 TTFT "
                f"{placement['ttft_p99_s']:.2f}s, {placement['ttft_p99_ratio']:.2f}x "
                f"centralized's {placement['centralized_ttft_p99_s']:.2f}s (failed "
                f"{placement['failed']:.0f} vs {placement['centralized_failed']:.0f})"
                f"  [{time.perf_counter() - started:.1f}s]"
            )
            started = time.perf_counter()
    for candidates in PROBING_SETTINGS if probing_seeds else ():
        started = time.perf_counter()
        probed = [
            measure_probing(candidates, seed, rate=110.0, duration=30.0)
            for seed in range(probing_seeds)
        ]
        row: dict[str, Any] = {"candidates": candidates, "seeds": probing_seeds}
        for key in probed[0]:
            row[key] = round(statistics.fmean(r[key] for r in probed), 4)
        result["probing"].append(row)
        say(
            f"probing d={candidates}: queue mean {row['queue_mean_s']:.3f}s p99 "
            f"{row['queue_p99_s']:.3f}s, e2e mean {row['e2e_mean_s']:.3f}s p99 "
            f"{row['e2e_p99_s']:.3f}s, per-node std {row['per_node_std']:.1f}"
            f"  [{time.perf_counter() - started:.1f}s]"
        )
    return result


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "gossip",
        help="gossip dissemination and detection time vs log N, bandwidth, probing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES)
    )
    parser.add_argument("--trials", type=int, default=5, help="seeds per size (half at 1,000+)")
    parser.add_argument(
        "--probing-seeds", type=int, default=2, help="seeds per probing setting; 0 skips it"
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    result = run(args.sizes, args.trials, args.probing_seeds, log=not args.json)
    print(json.dumps(result, indent=None if not args.json else 2))
    return 0

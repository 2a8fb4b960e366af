"""A decentralized node: a worker, a gossip member and a scheduler over its own view.

Why it exists: in decentralized mode there is no coordinator. Every node runs requests
(a `WorkerState`), learns the cluster by gossip (a `Membership`), and places requests with
the very same policies and `ClusterView` as the coordinator (a `Coordinator` used as a
local scheduler), fed with the load reports that gossip brings, its own included. Any
node answers a ``schedule_request`` with a ``schedule_response`` naming the chosen peer,
possibly itself; the client then sends the ``inference_request`` there, exactly as it
does after asking the coordinator.

Like every core object it is sans-I/O: `handle(message, sender, now)` and `tick(now)`
return `Send`s, `next_deadline()` says when to tick. Running requests is the runtime's job:
it hands ``inference_request``s to `node.worker` and carries out the actions with an engine,
as a worker process does (`sllm.runtime.worker.RequestRunner`).

Theory of operation
-------------------
**The view follows membership.** A load report enters the view only while gossip holds its
sender alive; a member declared dead or gone is removed from the view at once, rather
than after a report timeout (the view's own timeout, `NodeConfig.report_stale_s`, is
only a backstop for a live member whose reports stopped coming). A suspect member is
set aside: its latest report waits out of the view, so placement skips it, and goes
back in the moment the member is alive again (it refuted, or the suspicion was wrong).

**Own reports: sent on change, never on time.** Every ``report_interval_s`` the node
applies its own fresh report to its view, and gossips it only when something placement
reads changed (models, queue, running, readiness, load backlog to the second), or when the
live member count has doubled since it last did (a cluster still forming: early members
gossiped to few). An unchanged report is never re-sent: an idle cluster costs its probes
and syncs, whatever N (measured in docs/decentralized.md). A joiner gets every report at
once in the join state pages (`sllm.core.membership`), so nobody needs to re-send for it.
Since an unchanged member sends nothing, the view's backstop timeout
(``report_stale_s``) cannot mean "silent": every ``report_interval_s`` the node renews
(`ClusterView.touch`) the view entries older than ``report_refresh_s`` whose member
membership holds alive, and leaves any other to the backstop; every ``report_refresh_s``
it asks up to `FILL_PROBES_MAX` alive members it holds no report from for theirs (a
``load_probe``: gossip misses a report now and then, and nothing re-sends it). A
gossiped report names at most `GOSSIP_REPORT_MAX_MODELS` models, fastest tiers first,
and counts the rest in ``models_omitted``: two such reports fit in one datagram beside
the membership updates. A probe's answer carries the whole report: it travels alone.

**Staleness and probing** (after Sparrow, Ousterhout et al., SOSP'13). Gossiped load is
seconds old, and every node schedules independently, so several nodes can pick the same
"least loaded" worker at once. With `ProbingConfig.candidates` = d > 0, a node first asks
d candidates (the policy's own choice, then the least-loaded holders of the model and the
least-loaded workers overall) for their current report with a ``load_probe``, waits for
the replies or ``timeout_s``, applies the fresh reports to its view, and then lets the
policy decide among the candidates that replied (and this node, when it is one), as
Sparrow does: deciding over the whole view again would pass a fresh report over for a
stale one that only looks better, and at 1,000 nodes most gossiped copies are stale under
load. When none of them can take the request, the whole view decides. Measured in
docs/decentralized.md (`sllm bench gossip`).

**Held requests.** With a held queue (`NodeConfig.admission_hold_s`, ADMISSION_HOLD) the
node's scheduler holds a request over its deadline as the coordinator does, answering
``hold``; `tick` releases the held ones every `RELEASE_PERIOD_S` and sends each decision
to its requester, probing first as for a new request (`_start_release`). The queue's
bound (`HOLD_MAX`) is the cluster's: each node holds its share of it, by the live member
count (20 nodes that each held 256 would hold 20 times what a coordinator does; with the
share, the pressure experiment's decentralized twin at 90% load went from 1.34x to 1.14x
of its centralized p99, docs/simulator.md).

Not handled yet: forwarding the inference request itself (the client sends it to the
chosen node), batch sampling across requests (Sparrow's batch probing), late binding.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import cast

from sllm.core.admission import Admission
from sllm.core.coordinator import HOLD_MAX, RELEASE_PERIOD_S, Coordinator, Notice
from sllm.core.cost import CostModel, ModelInfo
from sllm.core.membership import (
    Address,
    GossipConfig,
    Membership,
    MemberState,
    Send,
)
from sllm.core.registry_gossip import RegistryReplica
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources, WorkerState
from sllm.wire.fit import first_models
from sllm.wire.messages import (
    MEMBER_PAGE_MAX,
    SECONDS_MAX,
    ClusterStateRequest,
    GossipAck,
    GossipJoin,
    GossipJoinState,
    GossipNack,
    GossipPing,
    GossipPingReq,
    GossipPush,
    GossipSync,
    LoadProbe,
    LoadProbeReply,
    MemberStateRequest,
    MemberStateResponse,
    MemberSummary,
    Message,
    RegistryDigest,
    RegistryEntries,
    ScheduleRequest,
    WorkerReport,
)

# A gossiped report names at most this many models (GPU and host-memory ones first): about
# 500 bytes, so two fit in a datagram beside a dozen membership updates.
GOSSIP_REPORT_MAX_MODELS = 6
GOSSIP_MESSAGES = (
    GossipPing,
    GossipAck,
    GossipPingReq,
    GossipNack,
    GossipSync,
    GossipPush,
    GossipJoin,
    GossipJoinState,
)
# Alive members whose report this node lacks (gossip missed it, and it is sent only on
# change) are asked for it directly, this many at most every `report_refresh_s`: with a
# retransmit limit of 3 log10 N an observer misses a given report with probability about
# e^-3 at 10 nodes and e^-9 at 1,000, so a handful covers what gossip drops.
FILL_PROBES_MAX = 16
FILL_PROBE_PREFIX = "fill-"
RELEASE_PROBE_PREFIX = "release-"
# A release of held requests probes the candidates of at most this many of them, the
# oldest (those it releases first), before it decides: at most this many times
# `ProbingConfig.candidates` probes every `RELEASE_PERIOD_S` while requests are held.
RELEASE_PROBED_MAX = 4
# The requester of a decision asked for in the node's own process (its HTTP front door):
# the host hands the decision over instead of sending it (`sllm.hosts.node.NodeHost`).
LOCAL_REQUESTER: Address = ("", 0)
# A node gossips its unchanged report again when the live member count has grown this many
# times since it last did: O(log N) times while a cluster forms, never once it is formed.
REPUBLISH_GROWTH = 2


# Candidates asked before each decision. Two, as Sparrow: at 1,000 nodes under load most
# gossiped copies are stale, and the reports placement reads must not be
# (docs/decentralized.md, "Load dissemination at 1,000 nodes and beyond").
PROBING_CANDIDATES_DEFAULT = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbingConfig:
    """Sparrow-style probing before a decision; ``candidates = 0`` turns it off."""

    candidates: int = PROBING_CANDIDATES_DEFAULT  # d: how many candidates to ask
    timeout_s: float = 0.05  # decide with what has come back by then (a LAN RTT is < 1 ms)

    def __post_init__(self) -> None:
        if self.candidates < 0 or not self.timeout_s > 0:
            raise ValueError("probing needs candidates >= 0 and a positive timeout")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Everything a node is configured with besides its identity and resources."""

    policy: str = "startup-aware"
    report_interval_s: float = 1.0  # REPORT_INTERVAL: how often the node looks at itself
    # How old a view entry may get before it is checked against membership (kept while the
    # member is alive: reports come only on change). Sends nothing.
    report_refresh_s: float = 10.0
    report_stale_s: float = 60.0  # the view's backstop timeout for a silent live member
    gossip: GossipConfig = field(default_factory=GossipConfig)
    probing: ProbingConfig = field(default_factory=ProbingConfig)
    # ADMISSION_DEADLINE, as the coordinator has it (`Coordinator`'s ``deadline_s``): each
    # node refuses at once a request its own view says would wait longer. None: off.
    admission_deadline_s: float | None = None
    # ADMISSION_HOLD (`Coordinator`'s ``hold_s``): a request over the deadline waits in
    # the node's held queue this long for room, instead of being refused. None: off.
    admission_hold_s: float | None = None

    def __post_init__(self) -> None:
        if self.admission_hold_s is not None and self.admission_deadline_s is None:
            raise ValueError("admission_hold_s needs admission_deadline_s")
        if not 0 < self.report_interval_s <= self.report_refresh_s < self.report_stale_s:
            raise ValueError(
                "need 0 < report_interval_s <= report_refresh_s < report_stale_s, got "
                f"{self.report_interval_s}, {self.report_refresh_s}, {self.report_stale_s}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Traffic:
    """What the runtime measures about the node's socket, for `status`."""

    bytes_sent_per_s: float = 0.0
    bytes_received_per_s: float = 0.0
    rejected_datagrams: int = 0


@dataclass(slots=True)
class ProbingCounters:
    decisions: int = 0  # decisions made after probing
    probes_sent: int = 0
    replies: int = 0
    timed_out: int = 0  # decisions made before every reply came
    fill_probes: int = 0  # reports asked for because gossip never brought them


@dataclass(slots=True)
class _Pending:
    request: ScheduleRequest
    requester: Address
    deadline: float
    awaiting: dict[str, str]  # probe request id -> the candidate asked
    # Candidates whose current report is in the view: those that replied, and this node.
    fresh: list[str]


@dataclass(slots=True)
class _Release:
    """A release of held requests that waits for its probes' replies (`_start_release`)."""

    deadline: float
    # probe request id -> the candidate asked
    awaiting: dict[str, str] = field(default_factory=dict)
    # candidate -> the held request ids it was asked for
    waiting_on: dict[str, list[str]] = field(default_factory=dict)
    # held request id -> its candidates whose current report is in the view
    fresh: dict[str, list[str]] = field(default_factory=dict)


def trim_report(report: WorkerReport, max_models: int = GOSSIP_REPORT_MAX_MODELS) -> WorkerReport:
    """The report as gossip carries it: the first `max_models` models (fastest tiers)."""
    return first_models(report, max_models)


def _signature(report: WorkerReport) -> tuple[object, ...]:
    """What placement reads from a report, to tell whether it is worth gossiping."""
    return (
        tuple(report.models.items()),
        report.models_omitted,
        report.queue_depth,
        report.running,
        report.ready,
        round(report.load_backlog_s),
        tuple(round(load.ready_in_s) for load in report.loads),
    )


class Node:
    """Worker + membership + local scheduler; every entry point is `(input, now) -> output`."""

    def __init__(
        self,
        node_id: str,
        address: Address,
        catalog: Mapping[str, ModelInfo],
        cost: CostModel,
        rng: random.Random,
        now: float,
        config: NodeConfig | None = None,
        resources: WorkerResources | None = None,
        seeds: Iterable[Address] = (),
        preloaded: Mapping[str, Tier] | None = None,
        http_port: int = 0,
        wall_offset: float = 0.0,
        worker: WorkerState | None = None,
        admission: Admission | None = None,
    ) -> None:
        """`worker` is the runtime's own worker state, when it already made one; else the
        node makes one from `resources` and `preloaded`. `admission` bounds the member
        list (MAX_MEMBERS, NEW_IDENTITY_RATE)."""
        self.node_id = node_id
        self.address = address
        self.config = config or NodeConfig()
        self.http_port = http_port
        # Reports carry wall-clock timestamps (they order a restarted node's reports);
        # `now + wall_offset` is the wall clock. The simulator's virtual time needs none.
        self.wall_offset = wall_offset
        self.worker = worker or WorkerState(
            node_id, resources or WorkerResources(), catalog, cost, preloaded, now=now
        )
        self.membership = Membership(
            node_id,
            address,
            random.Random(rng.getrandbits(64)),
            now,
            self.config.gossip,
            seeds,
            admission,
        )
        self.scheduler = Coordinator(
            self.config.policy,
            catalog,
            cost,
            self.config.report_stale_s,
            random.Random(rng.getrandbits(64)),
            now,
            # Reports come from members only, so the member list bounds the view already.
            admission=Admission(capacity=self.membership.admission.capacity),
            deadline_s=self.config.admission_deadline_s,
            hold_s=self.config.admission_hold_s,
        )
        self._next_release_at = now  # while requests are held (`Coordinator.release`)
        self._release: _Release | None = None  # a release waiting for its probes
        self.traffic = Traffic()
        self.probing = ProbingCounters()
        self._pending: dict[str, _Pending] = {}
        self._probe_of: dict[str, str] = {}  # probe request id -> schedule request id
        self._probe_seq = 0
        self._notices: list[Notice] = []
        # Suspect members' last reports, out of the view: a request placed on a member
        # that then dies waits for the dead notice to be placed again (seconds), so
        # placement avoids the members most likely to die next.
        self._suspects: dict[str, WorkerReport] = {}
        self._published: tuple[object, ...] | None = None
        self._published_to = 0  # live members when the report was last gossiped
        self._next_report_at = now
        self._next_fill_at = now + self.config.report_refresh_s
        self._left = False
        # The model registry, replicated by gossip (`sllm.core.registry_gossip`).
        gossip = self.config.gossip
        self.registry = RegistryReplica(
            node_id,
            random.Random(rng.getrandbits(64)),
            fanout=gossip.gossip_fanout,
            round_interval_s=gossip.gossip_interval_s,
            sync_interval_s=gossip.sync_interval_s,
            now=now,
        )
        self._registry_asked = False  # a joiner asks its first live peer for the registry

    # -- queries ---------------------------------------------------------------------

    def take_notices(self) -> list[Notice]:
        """What happened since the last call (membership included), for the runtime to log."""
        notices, self._notices = self._notices, []
        return notices

    def next_deadline(self) -> float | None:
        if self._left:
            return None
        times = [self._next_report_at, self.registry.next_deadline()]
        gossip = self.membership.next_deadline()
        if gossip is not None:
            times.append(gossip)
        times.extend(pending.deadline for pending in self._pending.values())
        if self._release is not None:
            times.append(self._release.deadline)
        elif self.scheduler.held:
            times.append(self._next_release_at)
        return min(times)

    # -- input -----------------------------------------------------------------------

    def handle(self, message: Message, sender: Address, now: float) -> list[Send]:
        if self._left:
            return []
        if isinstance(message, GOSSIP_MESSAGES):
            sends = self.membership.handle(message, sender, now)
            self._absorb(now)
            return sends
        if isinstance(message, ScheduleRequest):
            return self._schedule(message, sender, now)
        if isinstance(message, RegistryEntries):
            self.registry.receive_parts(message.entries, now)
            self._registry_changes()
            return []
        if isinstance(message, RegistryDigest):
            return self.registry.answer_digest(message, sender)
        if isinstance(message, LoadProbe):
            # The whole report, not gossip's six models: it travels alone, and past the
            # sixth a model, or a load under way, would look absent (the wire shrinks
            # what overflows the datagram).
            report = self._own_report(now)
            return [
                Send(
                    to=sender,
                    message=LoadProbeReply(request_id=message.request_id, reports=(report,)),
                )
            ]
        if isinstance(message, LoadProbeReply):
            return self._probe_reply(message, now)
        if isinstance(message, ClusterStateRequest):
            return [Send(to=sender, message=self.scheduler.cluster_state(message, now))]
        if isinstance(message, MemberStateRequest):
            return [Send(to=sender, message=self.member_state(message, now))]
        self._notices.append(Notice(event="unexpected_message", fields={"type": message.TYPE}))
        return []

    def tick(self, now: float) -> list[Send]:
        if self._left:
            return []
        sends = self.membership.tick(now)
        self._absorb(now)
        if now >= self._next_report_at:
            self._next_report_at = now + self.config.report_interval_s
            self._report(now)
        if now >= self._next_fill_at:
            self._next_fill_at = now + self.config.report_refresh_s
            sends.extend(self._fill_missing())
        for request_id, pending in list(self._pending.items()):
            if now >= pending.deadline:
                self.probing.timed_out += 1
                sends.append(self._decide(request_id, now))
        if self._release is not None:
            if now >= self._release.deadline:
                sends.extend(self._release_held(now, self._release.fresh))
        elif self.scheduler.held and now >= self._next_release_at:
            sends.extend(self._start_release(now))
        sends.extend(self._registry_gossip(now))
        return sends

    # -- the model registry ------------------------------------------------------------

    def deploy(self, name: str, spec: str, now: float) -> None:
        """Deploy or update model `name` (its catalog entry as canonical JSON,
        `sllm.catalog.catalog_entry_json`) from this node; it spreads by gossip, and a
        ``registry_changed`` notice tells the host. Raises `SpecTooLarge`."""
        self.registry.write(name, spec, wall_ms=self._wall_ms(now), now=now)
        self._registry_changes()

    def delete(self, name: str, now: float) -> None:
        """Delete model `name` everywhere (a tombstone, spread by gossip)."""
        self.registry.delete(name, wall_ms=self._wall_ms(now), now=now)
        self._registry_changes()

    def _wall_ms(self, now: float) -> int:
        return int((now + self.wall_offset) * 1000)

    def _registry_gossip(self, now: float) -> list[Send]:
        peers = [m for m in self.membership.live_members() if m.node_id != self.node_id]
        sends = []
        if not self._registry_asked and peers:
            self._registry_asked = True  # joined: ask for the registry now, not in 5 s
            sends.extend(self.registry.sync_now(peers))
        limit = self.config.gossip.retransmit_limit(self.membership.live_count)
        sends.extend(self.registry.tick(peers, now, retransmit_limit=limit))
        return sends

    def _registry_changes(self) -> None:
        """Tell the host which registry entries changed (it updates what it serves)."""
        changed = self.registry.take_changes()
        if changed:
            names = sorted({entry.name for entry in changed})
            self._notices.append(
                Notice(event="registry_changed", fields={"models": ",".join(names)})
            )

    def leave(self, now: float) -> list[Send]:
        """Stop taking work and announce the leave; nothing is handled afterwards.

        The node's own view learns at once that its worker is not ready, so that its front
        door, which serves until the process stops, places nothing on it (with no other
        ready member, it answers "no_ready_workers").
        """
        self.worker.ready = False
        self.scheduler.view.apply_report(self._own_report(now), now)
        sends = self.membership.leave(now)
        self._left = True
        return sends

    # -- gossip into the view ----------------------------------------------------------

    def _absorb(self, now: float) -> None:
        """Apply what gossip learned: fresh reports in, dead or departed members out, and
        suspect members set aside (placement skips them) until they prove alive."""
        view = self.scheduler.view
        membership = self.membership
        set_aside = self._suspects
        for report in membership.take_reports():
            node_id = report.node_id
            if not membership.is_live(node_id):
                continue
            self.scheduler.counters.reports += 1
            if node_id in set_aside or (node_id != self.node_id and not self._alive(node_id)):
                set_aside[node_id] = report  # the latest, for when it proves alive
            else:
                view.apply_report(report, now)
        for notice in membership.take_notices():
            event = notice.event
            member_id = str(notice.fields.get("member", ""))
            if event in ("member_dead", "member_left", "member_forgotten"):
                view.remove(member_id)
                set_aside.pop(member_id, None)
            elif event == "member_suspect" and member_id != self.node_id:
                entry = view.get(member_id)
                if entry is not None:
                    set_aside[member_id] = entry.report
                    view.remove(member_id)
            self._notices.append(notice)
        if set_aside:
            for member_id in [m for m in set_aside if self._alive(m)]:
                view.apply_report(set_aside.pop(member_id), now)

    def _alive(self, member_id: str) -> bool:
        member = self.membership.get(member_id)
        return member is not None and member.state is MemberState.ALIVE

    def _own_report(self, now: float) -> WorkerReport:
        host, port = self.address
        return self.worker.report(
            now, host, port, http_port=self.http_port, timestamp=now + self.wall_offset
        )

    def _report(self, now: float) -> None:
        report = self._own_report(now)
        self.scheduler.view.apply_report(report, now)
        signature = _signature(report)
        members = self.membership.live_count
        # The held queue's bound is the cluster's: each node holds its share of it.
        self.scheduler.hold_max = max(1, HOLD_MAX // max(1, members))
        grown = members >= REPUBLISH_GROWTH * self._published_to
        if signature != self._published or grown:
            self._published = signature
            self._published_to = members
            self.membership.publish_report(trim_report(report))
        self._reconcile_view(now)

    def _fill_missing(self) -> list[Send]:
        """Ask alive members this node has no report from for theirs (a `load_probe`).

        O(N) once every ``report_refresh_s``. The reply goes into the view like any probe
        reply (`_probe_reply`); membership's copy of the report is not needed: joiners get
        the state from a seed that holds it.
        """
        view = self.scheduler.view
        sends: list[Send] = []
        for member in self.membership.live_members():
            if len(sends) >= FILL_PROBES_MAX:
                break
            node_id = member.node_id
            if member.state is not MemberState.ALIVE or node_id == self.node_id:
                continue
            if node_id in view or node_id in self._suspects:
                continue
            self._probe_seq += 1
            probe = LoadProbe(request_id=f"{FILL_PROBE_PREFIX}{self._probe_seq}")
            sends.append(Send(to=member.address, message=probe))
        self.probing.fill_probes += len(sends)
        return sends

    def _reconcile_view(self, now: float) -> None:
        """Keep the view's entries of alive members, whose reports come only on change.

        Walks the oldest entries only (the view keeps them oldest first), those not heard
        of for ``report_refresh_s``: each entry is looked at once per refresh period, so
        the cost is O(N / refresh) a second, not O(N) a report. An entry whose member is
        not alive here is left to the view's backstop timeout (membership's notices
        remove dead and departed members at once anyway).
        """
        view = self.scheduler.view
        horizon = now - self.config.report_refresh_s
        due = []
        for entry in view.entries():
            if entry.last_seen > horizon:
                break
            due.append(entry.worker_id)
        for worker_id in due:
            if worker_id == self.node_id or self._alive(worker_id):
                view.touch(worker_id, now)

    # -- placement ---------------------------------------------------------------------

    def _schedule(self, request: ScheduleRequest, requester: Address, now: float) -> list[Send]:
        self.scheduler.view.expire(now)
        candidates = self._candidates(request) if self.config.probing.candidates else []
        remote = [c for c in candidates if c != self.node_id and self.membership.is_live(c)]
        if not remote:
            decision = self.scheduler.place(request, now, reply_to=requester)
            return [Send(to=requester, message=decision)]
        request_id = request.request_id
        if request_id in self._pending:
            return []  # a duplicate of a request we are already probing for
        own = [self.node_id] if self.node_id in candidates else []
        pending = _Pending(request, requester, now + self.config.probing.timeout_s, {}, own)
        sends = []
        for worker_id in remote:
            member = self.membership.get(worker_id)
            assert member is not None
            self._probe_seq += 1
            probe_id = f"probe-{self._probe_seq}"
            self._probe_of[probe_id] = request_id
            pending.awaiting[probe_id] = worker_id
            sends.append(Send(to=member.address, message=LoadProbe(request_id=probe_id)))
        self._pending[request_id] = pending
        self.probing.probes_sent += len(sends)
        return sends

    def _candidates(self, request: ScheduleRequest) -> list[str]:
        """The policy's choice, then the least-loaded GPU holders, then the least loaded."""
        view = self.scheduler.view
        model = self.scheduler.catalog.get(request.model)
        if model is None:
            return []
        wanted = self.config.probing.candidates
        chosen: dict[str, None] = {}
        first = self.scheduler.policy.choose(view, request, model)
        if first is not None:
            chosen[first.worker.worker_id] = None
        sources = [view.holders(request.model, Tier.GPU), view.by_load]
        for index in sources:
            if index is None:
                continue
            for worker_id in islice(index.lowest(), wanted):
                if len(chosen) >= wanted:
                    break
                chosen.setdefault(worker_id, None)
        return list(chosen)[:wanted]

    def _probe_reply(self, reply: LoadProbeReply, now: float) -> list[Send]:
        self.probing.replies += 1
        for report in reply.reports:
            node_id = report.node_id
            if node_id != self.node_id and self._alive(node_id):  # suspects stay set aside
                self.scheduler.view.apply_report(report, now)
        request_id = self._probe_of.pop(reply.request_id, None)
        if request_id is None:
            return self._release_probe_reply(reply.request_id, now)
        pending = self._pending.get(request_id)
        if pending is None:
            return []  # late: the decision is made, but the fresh report was still useful
        pending.fresh.append(pending.awaiting.pop(reply.request_id))
        if pending.awaiting:
            return []
        return [self._decide(request_id, now)]

    def _decide(self, request_id: str, now: float) -> Send:
        pending = self._pending.pop(request_id)
        for probe_id in pending.awaiting:
            self._probe_of.pop(probe_id, None)
        self.probing.decisions += 1
        decision = self.scheduler.place(
            pending.request, now, among=pending.fresh, reply_to=pending.requester
        )
        return Send(to=pending.requester, message=decision)

    # -- held requests -----------------------------------------------------------------

    def _start_release(self, now: float) -> list[Send]:
        """Probe the candidates of the oldest held requests, then release (`_release_held`).

        A release decides from the view, as a new request does, and for the same reason
        probes first: gossiped reports are seconds old, and every node holds requests, so
        the nodes would otherwise all release theirs onto the worker whose report last
        showed room (the pressure experiment at 120% load: worker queues refused 517
        requests decentralized against 31 centralized, docs/simulator.md). The held
        requests beyond the oldest `RELEASE_PROBED_MAX` are decided from the view.
        """
        wanted = self.config.probing.candidates
        if not wanted:
            return self._release_held(now, {})
        release = _Release(deadline=now + self.config.probing.timeout_s)
        sends: list[Send] = []
        for held in islice(self.scheduler.held.values(), RELEASE_PROBED_MAX):
            request_id = held.request.request_id
            fresh = release.fresh[request_id] = []
            for worker_id in self._candidates(held.request):
                if worker_id == self.node_id:
                    fresh.append(worker_id)
                    continue
                member = self.membership.get(worker_id)
                if member is None or not self.membership.is_live(worker_id):
                    continue
                asked = release.waiting_on.setdefault(worker_id, [])
                asked.append(request_id)
                if len(asked) > 1:
                    continue  # asked already for an older held request
                self._probe_seq += 1
                probe_id = f"{RELEASE_PROBE_PREFIX}{self._probe_seq}"
                release.awaiting[probe_id] = worker_id
                sends.append(Send(to=member.address, message=LoadProbe(request_id=probe_id)))
        if not sends:
            return self._release_held(now, release.fresh)
        self.probing.probes_sent += len(sends)
        self._release = release
        return sends

    def _release_probe_reply(self, probe_id: str, now: float) -> list[Send]:
        """A reply to a release's probe (its report is in the view already): the release
        goes once every probe has answered."""
        release = self._release
        if release is None or probe_id not in release.awaiting:
            return []  # late, or a fill probe's: the fresh report was still useful
        worker_id = release.awaiting.pop(probe_id)
        for request_id in release.waiting_on.get(worker_id, ()):
            release.fresh[request_id].append(worker_id)
        if release.awaiting:
            return []
        return self._release_held(now, release.fresh)

    def _release_held(self, now: float, fresh: Mapping[str, list[str]]) -> list[Send]:
        """Send the decisions of the held requests that can go now (`Coordinator.release`),
        each deciding among its candidates in `fresh` where it has any."""
        self._release = None
        self._next_release_at = now + RELEASE_PERIOD_S
        return [
            Send(to=cast(Address, requester), message=decision)
            for requester, decision in self.scheduler.release(now, among=fresh)
        ]

    # -- status ------------------------------------------------------------------------

    def member_state(self, request: MemberStateRequest, now: float) -> MemberStateResponse:
        """Counters and one page of members sorted by id. O(N): for `status`."""
        membership = self.membership
        counts = membership.counts()
        members = sorted(membership.members.values(), key=lambda m: m.node_id)
        page = members[request.offset : request.offset + min(request.limit, MEMBER_PAGE_MAX)]
        view = self.scheduler.view
        summaries = []
        for member in page:
            entry = view.get(member.node_id)
            summaries.append(
                MemberSummary(
                    node_id=member.node_id,
                    host=member.address[0],
                    port=member.address[1],
                    state=int(member.state),
                    incarnation=member.incarnation,
                    info_age_s=0.0
                    if member.node_id == self.node_id
                    else _age(now, max(member.heard_at, member.changed_at)),
                    reported=entry is not None,
                    report_age_s=_age(now, entry.last_seen) if entry is not None else 0.0,
                )
            )
        counters = membership.counters
        return MemberStateResponse(
            request_id=request.request_id,
            node_id=self.node_id,
            incarnation=membership.incarnation,
            alive=counts[MemberState.ALIVE],
            suspect=counts[MemberState.SUSPECT],
            dead=counts[MemberState.DEAD],
            left=counts[MemberState.LEFT],
            false_suspicions=counters.false_suspicions,
            refuted=counters.refuted,
            local_health=membership.awareness,
            bytes_sent_per_s=max(0.0, self.traffic.bytes_sent_per_s),
            bytes_received_per_s=max(0.0, self.traffic.bytes_received_per_s),
            rejected_datagrams=self.traffic.rejected_datagrams,
            offset=request.offset,
            members=tuple(summaries),
            max_members=membership.admission.capacity,
            refused_members=membership.admission.refused,
        )


def _age(now: float, then: float) -> float:
    return min(max(0.0, now - then), SECONDS_MAX)

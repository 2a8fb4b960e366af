"""Gossip membership and dissemination for the decentralized mode: SWIM with Lifeguard.

Why it exists: with no coordinator, every node must learn who is in the cluster, notice who
has failed, and learn everyone's load, with per-node traffic that does not grow with the
cluster. This module is that protocol as a pure state machine: `handle(message, sender,
now)` and `tick(now)` return the datagrams to send (`Send`), `next_deadline()` says when
`tick` must run next, and `take_notices()` / `take_reports()` hand the runtime what
happened. No sockets, clocks or global random: time comes in as ``now``, chance from the
seeded `random.Random` given at construction.

Theory of operation
-------------------
**Failure detection** (SWIM, Das, Gupta and Motivala, DSN'02). Every protocol period ``T``
a node probes one member with a ``gossip_ping``. Members are probed in a randomized
round-robin: the list is shuffled, walked in order, and reshuffled when exhausted; a new
member is inserted at a random position. So each member is probed by each other member
once per pass (SWIM's time-bounded completeness: at most ``2N - 1`` periods between two
probes of one member by one prober). Without an ack within the probe timeout, the prober
asks ``k`` random alive members to probe the target for it (``gossip_ping_req``); they
relay the target's ack. No ack, direct or relayed, by the end of the period: the target is
*suspected*, not declared dead.

**Suspicion and incarnations** (SWIM section 4.2). Every member owns an incarnation number
that only it increments. ``suspect(i)`` overrides ``alive(i)``; ``alive(j)`` overrides
``suspect(i)`` only when ``j > i``; ``dead(i)`` overrides both. A member that hears it is
suspected (or declared dead) refutes by gossiping ``alive(i + 1)``. A suspicion that is not
refuted within the suspicion timeout becomes ``dead``. A restarted process starts at
incarnation 0, learns through its join exchange what the cluster believes about it, and
refutes with a higher incarnation: so it rejoins with a higher incarnation. Burying a
member drops its load report, so refuting a death gossips the node's report again beside
the ``alive``, and a report that arrives for a member still held dead is kept until its
``alive`` does.

**Lifeguard** (Dadgar, Phillips and Currey, "Lifeguard: Local Health Awareness for More
Accurate Failure Detection", 2018), which memberlist implements:

- *Local health* (LHA): a score ``0 <= h < S`` rises when this node's own probes fail or
  its indirect probes get no nack, and when it must refute a suspicion about itself (all
  signs that *it* is slow); it falls only with a direct ack that comes within the probe
  timeout (memberlist's rule: a relayed or late ack proves the target alive, not this
  node healthy). Probe period and probe timeout are multiplied by ``h + 1``, so a slow
  node probes less eagerly and accuses less.
- *Nacks*: a relay that hears nothing from the target within ``nack_ratio`` of the probe
  timeout answers ``gossip_nack``; missing nacks tell the prober its own network is bad.
- *Dynamic suspicion* (LHA-Suspicion): the timeout starts at ``max`` and shrinks towards
  ``min`` as independent suspicions of the same member (by distinct origins) arrive:
  ``timeout(C) = max(min, max - (max - min) * log(C + 1) / log(K + 1))`` with ``C``
  confirmations of ``K`` expected, ``min = alpha * max(1, log10 N) * T`` and
  ``max = beta * min``.
- *Buddy system*: a message to a member we suspect carries that suspicion first, so the
  member learns of it (and refutes) at once.

**Dissemination** (SWIM section 4.1: infection-style, piggybacked). Membership updates and
load reports ride on pings, acks and ping-reqs. Each update is sent at most
``lambda * ceil(log10(N + 1))`` times by each node that learns it (memberlist's retransmit
limit); the least-sent, then freshest, updates go first, and a message takes as many as fit
in the datagram cap (`MAX_DATAGRAM_BYTES` less the signing envelope). A newer update about
a member replaces the older one in the queue. Membership updates fill a message before load
reports: correctness first, load second. With one ping sent and about one received per
period, an update reaches most of the cluster in O(log N) periods.

**Gossip rounds** (memberlist's refinement of SWIM). Piggybacking alone carries two or
three messages per node per period, too few for load reports that change every second.
So, as memberlist does, every ``gossip_interval`` a node with something queued pushes it
(``gossip_push``, no reply) to ``gossip_fanout`` random alive members. A node with nothing
queued sends nothing. Per-node bandwidth is at most ``fanout / interval`` datagrams a
second whatever N. Load reports are queued only when they change (`sllm.core.node`
publishes on change, never on time), so an idle cluster costs its probes and syncs and
nothing that grows with N; under load, what grows with N is how stale load reports get
(a node can relay only so many reports a second), which is what Sparrow-style probing
(`sllm.core.node`) corrects at decision time. Measured in docs/decentralized.md.

**Anti-entropy** (push-pull, as in memberlist). Every ``sync_interval`` a node sends a
bounded random sample of its member list (`SYNC_MEMBERS_MAX` updates) and load reports (its
own first) (``gossip_sync``) to one random alive member, which merges it and answers with
its own sample. It repairs what piggybacking missed. Each sync is one datagram each way
whatever N, so per-node bandwidth stays bounded: the price is that repairing a specific
entry takes O(N / sample) exchanges at large N.

**Bounded state** (without a cluster secret anyone may gossip). A member is created only by
an ``alive`` update about a stranger, and only if `sllm.core.admission` admits it: the
member list holds at most ``MAX_MEMBERS`` entries (tombstones included) and each source
address may introduce new members only so fast. A ``gossip_ping_req`` is relayed only to a
member known here as alive or suspect, at the address known here: a relay never sends to
an address a request names, so a node cannot be used as a reflector.

**Join, rejoin, partitions, leave.** A node that knows no other live member sends its seeds
a ``gossip_join``, at start and every ``rejoin_interval`` while alone. A seed answers with
its whole state, as memberlist's join push-pull does but in datagrams:
``gossip_join_state`` pages within the datagram cap, live members (the joiner's own entry
included, so a restarted node learns its old incarnation and refutes) then their reports,
in bursts of `JOIN_PAGES_PER_BURST` every `JOIN_PAGE_GAP_S`. The joiner merges pages
without gossiping them on. Page tokens (`JOIN_PAGE_TOKENS_MAX`, `JOIN_PAGE_TOKENS_PER_S`)
bound what joins cost a node, and what a stranger can make it send; a join beyond them gets
a sync reply. Dead members are remembered for ``dead_retention`` (so stale gossip cannot
resurrect them: an alive update needs a higher incarnation than the death); meanwhile,
every ``reconnect_interval`` a node syncs with one random dead member or one seed it does
not know as alive. After a healed partition, each side learns the other has declared it
dead, refutes with a higher incarnation, and the views reconverge. A graceful leave gossips
``left`` at once to ``leave_fanout`` members; a left member is never suspected, nor
reconnected.

Detection bound (see docs/decentralized.md for the measured values): with no message loss,
every live node marks a crashed member dead within
``T_first + T + timeout_max(N) + D(N)``: ``T_first`` until someone probes it (each period a
given member escapes all ``N - 1`` probers with probability about ``1/e``), one period for
the direct and indirect probes, the suspicion timeout (``min`` when ``K`` confirmations
come, ``max`` at worst), and ``D(N)``, about ``log2 N`` periods, for the verdict to spread.

Parameters (`GossipConfig`; defaults are memberlist's LAN profile where it has one):

==========================  ==========  ====================================================
parameter                   default     meaning
==========================  ==========  ====================================================
probe_interval_s (T)        1.0         protocol period: one probe per period
probe_timeout_s             0.5         direct ack wait, then indirect probes
indirect_checks (k)         3           relays asked on a failed direct probe
suspicion_mult (alpha)      4.0         ``min = alpha * max(1, log10 N) * T``
suspicion_max_mult (beta)   6.0         ``max = beta * min``
suspicion_confirmations (K) 2           independent suspicions that bring ``max`` to ``min``
retransmit_mult (lambda)    4           ``lambda * ceil(log10(N + 1))`` sends per update
report_retransmit_mult      3           the same for load reports (sent on change only)
gossip_interval_s           0.2         gossip round period (memberlist LAN: 200 ms)
gossip_fanout               3           members per gossip round; 0 = piggyback only
awareness_max (S)           8           local health multiplier ceiling: ``h + 1 <= S``
nack_ratio                  0.8         relays nack after this share of the probe timeout
sync_interval_s             5.0         push-pull period (memberlist: 30 s)
reconnect_interval_s        10.0        sync with a dead member or unknown seed
rejoin_interval_s           1.0         sync with the seeds while alone
dead_retention_s            600.0       dead members remembered (tombstones)
leave_fanout                0           members told at once of a leave; 0 = the
                                        retransmit limit
==========================  ==========  ====================================================

Not handled yet: a TCP fallback probe and TCP push-pull (memberlist has both; every
exchange here is one datagram, a join's full state a paced series of them; a lost page is
repaired by syncs and gossip, not re-sent), digest-based anti-entropy (a sample is sent, so
a missed entry is repaired in O(N / sample) syncs at very large N), per-member metadata
other than load reports, and protection against a member lying about others (any
authenticated node may gossip anything).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Generic, TypeVar

from sllm.core.admission import MAX_MEMBERS_DEFAULT, REFUSED_EVENT, Admission
from sllm.core.coordinator import Notice
from sllm.wire.codec import MAX_DATAGRAM_BYTES, SIGNED_OVERHEAD_BYTES, json_size, wire_body
from sllm.wire.messages import (
    PIGGYBACK_MAX_MEMBERS,
    PIGGYBACK_MAX_REPORTS,
    GossipAck,
    GossipJoin,
    GossipJoinState,
    GossipNack,
    GossipPing,
    GossipPingReq,
    GossipPush,
    GossipSync,
    MemberUpdate,
    Message,
    WorkerReport,
)

Address = tuple[str, int]

# Bytes a message may take before signing: the cap less the HMAC envelope, which is always
# reserved so that a cluster can turn signing on without changing what fits.
DATAGRAM_BUDGET_BYTES = MAX_DATAGRAM_BYTES - SIGNED_OVERHEAD_BYTES
# How many queued updates `take` may look at and skip (too big for the room left) before it
# stops: keeps filling a message O(piggyback) whatever the queue length.
FILL_SKIPS_MAX = 8
# `detection_bound` allows this many periods before someone probes a crashed member.
FIRST_PROBE_PERIODS = 5
# The largest page number a join state page is sized for (its digits count in the budget).
COUNT_FIELD_MAX = 99_999
# Members sampled for a sync before the byte budget trims the sample.
SYNC_SAMPLE_MAX = 3 * PIGGYBACK_MAX_MEMBERS
# Member updates in a sync: the peer's, ours, and six random ones. A fixed count, so a sync
# costs the same at 10 nodes as at 1,000 (filled to the cap it grew with N up to about 17
# members, +19% idle bytes from 10 to 100 nodes); the room left carries load reports, ours
# first, which repairs a copy of it that the peer missed (reports go out on change only).
# Joiners get every member from the join state, so syncs only repair.
SYNC_MEMBERS_MAX = 8
# Reports from members not known yet (their alive update is still on its way) are held
# back this many at most, and released when the member is added.
ORPHAN_REPORTS_MAX = 64
# Join state pages: a full state is about N / 17 member pages and N / 3 report pages (400
# pages, 520 KB at 1,000 members). A node answers joins in full while it has page tokens:
# JOIN_PAGE_TOKENS_MAX covers two such joins at once, and tokens come back at
# JOIN_PAGE_TOKENS_PER_S (one more 1,000-member join every two seconds, 260 KB/s at
# most), which also bounds what a stranger can make a node send in unsigned mode. A join
# beyond that gets an ordinary sync reply (a sample) and learns the rest by gossip.
JOIN_PAGE_TOKENS_MAX = 1_000
JOIN_PAGE_TOKENS_PER_S = 200.0
# Pages leave in bursts of JOIN_PAGES_PER_BURST (about 85 KB, well within a default
# 208 KB socket receive buffer) every JOIN_PAGE_GAP_S: 400 pages take about 60 ms.
JOIN_PAGES_PER_BURST = 64
JOIN_PAGE_GAP_S = 0.01


class MemberState(IntEnum):
    """A member's state; the integer is what the wire carries."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


LIVE_STATES = frozenset({MemberState.ALIVE, MemberState.SUSPECT})
# The notices membership gives about other members. Besides these it gives "left_cluster"
# (this node's own leave) and the admission's "identities_refused" (new members refused).
MEMBER_EVENTS = frozenset(
    {
        "member_joined",
        "member_suspect",
        "member_alive",
        "member_dead",
        "member_left",
        "member_rejoined",
        "member_forgotten",
        "suspicion_refuted",
    }
)
MEMBERSHIP_EVENTS = MEMBER_EVENTS | {"left_cluster", REFUSED_EVENT}
ALIVE_ONLY = frozenset({MemberState.ALIVE})


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipConfig:
    """Protocol parameters; see the module docstring for what each does and why."""

    probe_interval_s: float = 1.0
    probe_timeout_s: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    suspicion_confirmations: int = 2
    retransmit_mult: int = 4
    report_retransmit_mult: int = 3
    gossip_interval_s: float = 0.2
    gossip_fanout: int = 3
    awareness_max: int = 8
    nack_ratio: float = 0.8
    sync_interval_s: float = 5.0
    reconnect_interval_s: float = 10.0
    rejoin_interval_s: float = 1.0
    dead_retention_s: float = 600.0
    leave_fanout: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "probe_interval_s",
            "probe_timeout_s",
            "sync_interval_s",
            "reconnect_interval_s",
            "rejoin_interval_s",
            "dead_retention_s",
            "gossip_interval_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be positive, got {value}")
        if self.probe_timeout_s >= self.probe_interval_s:
            problems.append("probe_timeout_s must be shorter than probe_interval_s")
        if self.suspicion_mult <= 0 or self.suspicion_max_mult < 1:
            problems.append("suspicion_mult must be > 0 and suspicion_max_mult >= 1")
        counts = (self.indirect_checks, self.suspicion_confirmations, self.leave_fanout)
        if min(*counts, self.gossip_fanout) < 0:
            problems.append("counts must be >= 0")
        if self.retransmit_mult < 1 or self.report_retransmit_mult < 1 or self.awareness_max < 1:
            problems.append("retransmit multipliers and awareness_max must be >= 1")
        if not 0 < self.nack_ratio < 1:
            problems.append("nack_ratio must be in (0, 1)")
        if problems:
            raise ValueError("; ".join(problems))

    def suspicion_timeouts(self, members: int) -> tuple[float, float]:
        """(min, max) suspicion timeout for a cluster of `members` live members."""
        low = self.suspicion_mult * max(1.0, math.log10(max(1, members))) * self.probe_interval_s
        return low, self.suspicion_max_mult * low

    def detection_bound(self, members: int) -> float:
        """Seconds within which every live node marks a crashed member dead (no loss).

        ``(FIRST_PROBE_PERIODS + 1 + ceil(log2 N)) * T + beta * alpha * max(1, log10 N) * T``:
        someone probes the member within FIRST_PROBE_PERIODS periods (it escapes all
        ``N - 1`` probers of one period with probability about 1/e, so e^-5 < 1% for five),
        one period of direct and indirect probes, the longest suspicion timeout (no
        confirmations), and ``log2 N`` periods for the verdict to spread (piggyback
        alone; gossip rounds are faster). Assumes healthy nodes (local health 0).
        """
        periods = FIRST_PROBE_PERIODS + 1 + math.ceil(math.log2(max(2, members)))
        return periods * self.probe_interval_s + self.suspicion_timeouts(members)[1]

    def retransmit_limit(self, members: int, multiplier: int | None = None) -> int:
        """How many times one node sends one update: ``lambda * ceil(log10(N + 1))``."""
        scale = math.ceil(math.log10(members + 1))
        return (self.retransmit_mult if multiplier is None else multiplier) * max(1, scale)


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """A datagram to send: the runtime encodes it, the simulator delivers it."""

    to: Address
    message: Message


@dataclass(slots=True)
class Member:
    """One member as this node believes it to be."""

    node_id: str
    address: Address
    incarnation: int
    state: MemberState
    origin: str  # who declared the suspicion or death; "" otherwise
    changed_at: float  # when the state last changed here
    heard_at: float  # last direct contact or accepted news

    def update(self) -> MemberUpdate:
        return MemberUpdate(
            node_id=self.node_id,
            host=self.address[0],
            port=self.address[1],
            incarnation=self.incarnation,
            state=int(self.state),
            origin=self.origin,
        )


@dataclass(slots=True)
class GossipCounters:
    """What this node's membership did since it started."""

    probes: int = 0
    probes_failed: int = 0
    indirect_probes: int = 0
    suspicions_raised: int = 0  # members this node suspected itself
    false_suspicions: int = 0  # suspected members seen alive again with a higher incarnation
    refuted: int = 0  # suspicions or deaths about this node it refuted
    deaths: int = 0  # members this node saw declared dead
    messages_in: int = 0
    messages_out: int = 0
    relays_declined: int = 0  # ping-reqs for a target not known here as alive or suspect
    join_states: int = 0  # joins answered with the full state
    join_states_declined: int = 0  # joins answered with a sample: out of page tokens


# -- dissemination queue -----------------------------------------------------------------

ItemT = TypeVar("ItemT")

# Objects sized lately, by id: an entry holds its object, so the id is not reused meanwhile.
SIZE_MEMO_MAX = 8192
_sizes: dict[int, tuple[object, int]] = {}


def encoded_size(item: MemberUpdate | WorkerReport) -> int:
    """Bytes of a member update or a report in compact JSON, remembered per object.

    One object is often sized many times: a node re-gossips the very updates and reports
    it received, and the simulator hands one object to every node it reaches (live, each
    node decodes its own copy and the memo costs one lookup). Messages are immutable, so
    an object's size never changes.
    """
    held = _sizes.get(id(item))
    if held is not None and held[0] is item:
        return held[1]
    size = json_size(wire_body(item))
    if len(_sizes) >= SIZE_MEMO_MAX:
        del _sizes[next(iter(_sizes))]  # the oldest entry
    _sizes[id(item)] = (item, size)
    return size


@dataclass(slots=True)
class _Queued(Generic[ItemT]):
    item: ItemT
    size: int
    order: int
    sent: int = 0


class Broadcasts(Generic[ItemT]):
    """memberlist's transmit-limited queue: one pending update per key, least sent first.

    A heap of ``(sent, -order, key)`` with lazy deletion: a newer update for a key, or a
    send, leaves the old heap entry stale, and stale entries are dropped when popped.
    """

    def __init__(self) -> None:
        self._queued: dict[str, _Queued[ItemT]] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._order = 0

    def __len__(self) -> int:
        return len(self._queued)

    def put(self, key: str, item: ItemT, size: int) -> None:
        self._order += 1
        self._queued[key] = _Queued(item, size, self._order)
        heapq.heappush(self._heap, (0, -self._order, key))
        if len(self._heap) > 4 * len(self._queued) + 64:  # too many stale entries: rebuild
            self._heap = [(q.sent, -q.order, k) for k, q in self._queued.items()]
            heapq.heapify(self._heap)

    def drop(self, key: str) -> None:
        self._queued.pop(key, None)

    def take(self, budget: int, count: int, limit: int) -> tuple[list[ItemT], int]:
        """Up to `count` items of at most `budget` bytes in all; each counts as sent once.

        Returns the items and the bytes left. An item sent `limit` times leaves the queue.
        """
        taken: list[ItemT] = []
        kept: list[tuple[int, int, str]] = []
        skips = 0
        heap, queued = self._heap, self._queued
        while heap and len(taken) < count and skips < FILL_SKIPS_MAX:
            sent, neg_order, key = heapq.heappop(heap)
            entry = queued.get(key)
            if entry is None or entry.order != -neg_order or entry.sent != sent:
                continue  # stale
            if entry.size + 1 > budget:
                kept.append((sent, neg_order, key))
                skips += 1
                continue
            taken.append(entry.item)
            budget -= entry.size + 1
            entry.sent += 1
            if entry.sent >= limit:
                del queued[key]
            else:
                kept.append((entry.sent, neg_order, key))
        for item in kept:
            heapq.heappush(heap, item)
        return taken, budget


# -- suspicion ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Suspicion:
    """Lifeguard's dynamic suspicion timer for one member."""

    started: float
    low: float
    high: float
    expected: int  # K
    confirmers: set[str]
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = self.started + self.timeout()

    def timeout(self) -> float:
        confirmations = len(self.confirmers) - 1
        if self.expected < 1:
            return self.low
        fraction = math.log(confirmations + 1) / math.log(self.expected + 1)
        return max(self.low, self.high - fraction * (self.high - self.low))

    def confirm(self, origin: str) -> bool:
        """Count an independent suspicion; True when it is new (and shortens the timer)."""
        if origin in self.confirmers or len(self.confirmers) - 1 >= self.expected:
            return False
        self.confirmers.add(origin)
        self.deadline = self.started + self.timeout()
        return True


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    started: float
    direct_deadline: float
    final_deadline: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    requester: Address
    requester_seq: int
    target: str
    nack_at: float | None  # None once the nack is sent
    expires: float


# -- the protocol ------------------------------------------------------------------------


class Membership:
    """One node's view of the cluster and its side of the SWIM/Lifeguard protocol."""

    def __init__(
        self,
        node_id: str,
        address: Address,
        rng: random.Random,
        now: float,
        config: GossipConfig | None = None,
        seeds: Iterable[Address] = (),
        admission: Admission | None = None,
    ) -> None:
        self.node_id = node_id
        # Who may become a member: a cap on the member list and a rate of new members per
        # source address (the sender of the gossip that names them).
        self.admission = admission or Admission(capacity=MAX_MEMBERS_DEFAULT)
        self.address = address
        self.config = config or GossipConfig()
        self.rng = rng
        self.seeds = [seed for seed in seeds if seed != address]
        self.incarnation = 0
        self.left = False
        self.awareness = 0  # Lifeguard's local health score h
        self.counters = GossipCounters()
        self.members: dict[str, Member] = {
            node_id: Member(node_id, address, 0, MemberState.ALIVE, "", now, now)
        }
        self.reports: dict[str, WorkerReport] = {}
        self._orphans: dict[str, WorkerReport] = {}  # of strangers, bounded
        self._held_for_dead: dict[str, WorkerReport] = {}  # one per member held dead or left
        self._broadcasts: Broadcasts[MemberUpdate] = Broadcasts()
        self._report_broadcasts: Broadcasts[WorkerReport] = Broadcasts()
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, _Suspicion] = {}
        self._tombstones: list[tuple[float, str]] = []  # (forget at, id), lazily validated
        self._seq = 0
        self._live = 1  # alive + suspect members, self included
        self._notices: list[Notice] = []
        self._fresh_reports: list[WorkerReport] = []
        # Join state pages waiting to leave, oldest join first, and the page tokens left.
        self._pages: deque[Send] = deque()
        self._next_page_at = now
        self._page_tokens = float(JOIN_PAGE_TOKENS_MAX)
        self._page_tokens_at = now
        jitter = self.rng.random()  # desynchronise nodes started together
        self._next_probe_at = now + jitter * self.config.probe_interval_s
        self._next_gossip_at = now + jitter * self.config.gossip_interval_s
        self._next_sync_at = now + (0.5 + jitter) * self.config.sync_interval_s
        self._next_reconnect_at = now + (0.5 + jitter) * self.config.reconnect_interval_s
        self._next_rejoin_at = now  # join at the first tick
        self._broadcast_self()

    # -- queries ---------------------------------------------------------------------

    @property
    def live_count(self) -> int:
        """Alive and suspect members, this node included: the N of every formula."""
        return self._live

    def get(self, node_id: str) -> Member | None:
        return self.members.get(node_id)

    def is_live(self, node_id: str) -> bool:
        member = self.members.get(node_id)
        return member is not None and member.state in LIVE_STATES

    def live_members(self) -> Iterator[Member]:
        return (m for m in self.members.values() if m.state in LIVE_STATES)

    def counts(self) -> dict[MemberState, int]:
        counts = dict.fromkeys(MemberState, 0)
        for member in self.members.values():
            counts[member.state] += 1
        return counts

    def take_notices(self) -> list[Notice]:
        """What happened since the last call, for the runtime to log."""
        notices, self._notices = self._notices, []
        return notices

    def take_reports(self) -> list[WorkerReport]:
        """Load reports of other members learned since the last call, newest per member."""
        reports, self._fresh_reports = self._fresh_reports, []
        return reports

    def next_deadline(self) -> float | None:
        if self.left:
            return None
        times = [self._next_probe_at, self._next_sync_at, self._next_reconnect_at]
        if self.config.gossip_fanout and (self._broadcasts or self._report_broadcasts):
            times.append(self._next_gossip_at)
        if self._alone() and self.seeds:
            times.append(self._next_rejoin_at)
        if self._probe is not None:
            probe = self._probe
            times.append(probe.final_deadline if probe.indirect else probe.direct_deadline)
        for relay in self._relays.values():
            times.append(relay.expires if relay.nack_at is None else relay.nack_at)
        times.extend(s.deadline for s in self._suspicions.values())
        if self._tombstones:
            times.append(self._tombstones[0][0])
        if self._pages:
            times.append(self._next_page_at)
        return min(times)

    # -- configuration-time helpers ---------------------------------------------------

    def bootstrap(self, peers: Iterable[tuple[str, Address]], now: float) -> None:
        """Know `peers` as alive at incarnation 0 without any exchange (benchmarks, tests)."""
        for node_id, address in peers:
            if node_id != self.node_id and node_id not in self.members:
                self._add(
                    MemberUpdate(
                        node_id=node_id,
                        host=address[0],
                        port=address[1],
                        incarnation=0,
                        state=0,
                        origin="",
                    ),
                    now,
                    quiet=True,
                )

    def bootstrap_reports(self, reports: Iterable[WorkerReport]) -> None:
        """Hold other members' `reports` without any exchange, and gossip none of them
        (benchmarks, tests: a cluster whose first reports have all spread)."""
        for report in reports:
            self._apply_report(report, relay=False)

    def publish_report(self, report: WorkerReport) -> None:
        """This node's own load report: kept for syncs and gossiped like any update."""
        self.reports[self.node_id] = report
        self._report_broadcasts.put(report.node_id, report, encoded_size(report))

    # -- input -----------------------------------------------------------------------

    def handle(self, message: Message, sender: Address, now: float) -> list[Send]:
        """A gossip message from `sender`; returns what to send in answer."""
        if self.left:
            return []
        self.counters.messages_in += 1
        if isinstance(message, GossipPing | GossipAck | GossipPingReq | GossipSync | GossipPush):
            if message.source == self.node_id:
                return []  # our own datagram came back (a seed list naming us)
            self._merge(message.members, message.reports, now, sender[0])
            self._heard(message.source, now)
        elif isinstance(message, GossipJoin | GossipJoinState):
            if message.source == self.node_id:
                return []
            # A joiner's own entry is news to spread; a page of state is what the cluster
            # knows already: merged without re-gossiping it.
            relay = isinstance(message, GossipJoin)
            self._merge(message.members, message.reports, now, sender[0], relay=relay)
            self._heard(message.source, now)
        sends: list[Send] = []
        if isinstance(message, GossipPing):
            if message.target == self.node_id:
                sends.append(self._ack(message.seq, sender, message.source))
        elif isinstance(message, GossipAck):
            self._on_ack(message, now, sends)
        elif isinstance(message, GossipPingReq):
            self._on_ping_req(message, sender, now, sends)
        elif isinstance(message, GossipNack):
            probe = self._probe
            if probe is not None and message.seq == probe.seq:
                probe.nacks += 1
        elif isinstance(message, GossipSync) and not message.reply:
            sends.append(self._sync(sender, message.source, reply=True))
        elif isinstance(message, GossipJoin):
            self._answer_join(sender, message.source, now, sends)
        self.counters.messages_out += len(sends)
        return sends

    def tick(self, now: float) -> list[Send]:
        """Run every timer that is due at `now`."""
        if self.left:
            return []
        sends: list[Send] = []
        self._check_probe(now, sends)
        self._check_relays(now, sends)
        self._check_suspicions(now)
        self._forget_tombstones(now)
        if now >= self._next_probe_at:
            self._start_probe(now, sends)
        if self._gossip_due(now):
            self._gossip(sends)
        if now >= self._next_sync_at:
            self._next_sync_at = now + self.config.sync_interval_s
            peer = self._random_alive(exclude=())
            if peer is not None:
                sends.append(self._sync(peer.address, peer.node_id, reply=False))
        if now >= self._next_reconnect_at:
            self._next_reconnect_at = now + self.config.reconnect_interval_s
            target = self._reconnect_target()
            if target is not None:
                sends.append(self._sync(target[0], target[1], reply=False))
        if now >= self._next_rejoin_at:
            self._next_rejoin_at = now + self.config.rejoin_interval_s
            if self._alone():
                sends.extend(self._join(seed) for seed in self.seeds)
        if self._pages and now >= self._next_page_at:
            self._send_pages(now, sends)
        self.counters.messages_out += len(sends)
        return sends

    def leave(self, now: float) -> list[Send]:
        """Announce a graceful leave to a few members at once; ignore everything after."""
        if self.left:
            return []
        me = self.members[self.node_id]
        me.state = MemberState.LEFT
        me.changed_at = now
        self._live -= 1
        update = me.update()
        fanout = self.config.leave_fanout or self.config.retransmit_limit(self._live)
        peers = [m for m in self.live_members() if m.node_id != self.node_id]
        chosen = self.rng.sample(peers, min(fanout, len(peers)))
        # The leave goes first in every message; whatever else fits rides along.
        self._broadcasts.put(self.node_id, update, encoded_size(update))
        sends = []
        for peer in chosen:
            self._seq += 1
            members, reports = self._piggyback(
                json_size({"seq": self._seq, "source": self.node_id, "target": peer.node_id}),
                peer.node_id,
            )
            if update not in members:
                members = [update, *members[: PIGGYBACK_MAX_MEMBERS - 1]]
            ping = GossipPing(
                seq=self._seq,
                source=self.node_id,
                target=peer.node_id,
                members=tuple(members),
                reports=reports,
            )
            sends.append(Send(to=peer.address, message=ping))
        self.left = True
        self._notices.append(Notice(event="left_cluster", fields={"told": len(sends)}))
        self.counters.messages_out += len(sends)
        return sends

    # -- merging updates ---------------------------------------------------------------

    def _merge(
        self,
        members: Iterable[MemberUpdate],
        reports: Iterable[WorkerReport],
        now: float,
        source: str,
        *,
        relay: bool = True,
    ) -> None:
        for update in members:
            self.apply(update, now, source, relay=relay)
        for report in reports:
            self._apply_report(report, relay=relay)

    def apply(
        self, update: MemberUpdate, now: float, source: str = "", *, relay: bool = True
    ) -> None:
        """Take one membership update in, by SWIM's incarnation rules.

        `source` is the host the update came from: a stranger it names joins only if
        `admission` lets it (the list is not full, the source is not over its rate).
        Without `relay` (a join state page) a new member is added quietly: not gossiped
        on, and no notice each.
        """
        if update.node_id == self.node_id:
            self._about_self(update, now)
            return
        member = self.members.get(update.node_id)
        state = MemberState(update.state)
        if state is MemberState.ALIVE:
            if member is None:
                if self.admission.admit(size=len(self.members), source=source, now=now):
                    self._add(update, now, quiet=not relay)
                else:
                    refused = self.admission.notice("member", now)  # one per interval
                    if refused is not None:
                        self._notices.append(Notice(event=REFUSED_EVENT, fields=refused))
            elif update.incarnation > member.incarnation:
                self._revive(member, update, now)
            return
        if member is None or update.incarnation < member.incarnation:
            return  # news about a stranger, or stale
        if member.state not in LIVE_STATES:
            return  # already dead or gone
        if state is MemberState.SUSPECT:
            self._suspect(member, update, now)
        else:
            self._bury(member, state, update.incarnation, update.origin, now)

    def _about_self(self, update: MemberUpdate, now: float) -> None:
        state = MemberState(update.state)
        if update.incarnation < self.incarnation:
            return  # stale: refuted already
        echo = update.incarnation == self.incarnation and (update.host, update.port) == self.address
        if state is MemberState.ALIVE and echo:
            return  # our own news, echoed back
        # Someone believes something else about us at our incarnation or above: refute.
        self.incarnation = update.incarnation + 1
        me = self.members[self.node_id]
        me.incarnation = self.incarnation
        self._broadcast_self()
        own_report = self.reports.get(self.node_id)
        if state is not MemberState.SUSPECT and own_report is not None:
            # Whoever buried us dropped our report with us: send it again beside the refutation.
            self.publish_report(own_report)
        if state is not MemberState.ALIVE:
            self.counters.refuted += 1
            self._raise_awareness(1)
            self._notices.append(
                Notice(
                    event="suspicion_refuted",
                    fields={
                        "state": state.name.lower(),
                        "by": update.origin,
                        "incarnation": me.incarnation,
                    },
                )
            )

    def _add(self, update: MemberUpdate, now: float, quiet: bool = False) -> None:
        member = Member(
            update.node_id,
            (update.host, update.port),
            update.incarnation,
            MemberState.ALIVE,
            "",
            now,
            now,
        )
        self.members[update.node_id] = member
        self._live += 1
        self._enroll(update.node_id)
        orphan = self._orphans.pop(update.node_id, None)
        if orphan is not None:
            self._apply_report(orphan, relay=not quiet)
        if not quiet:
            self._queue(member)
            self._notices.append(
                Notice(
                    event="member_joined",
                    fields={"member": update.node_id, "address": f"{update.host}:{update.port}"},
                )
            )

    def _revive(self, member: Member, update: MemberUpdate, now: float) -> None:
        """A newer alive: a refuted suspicion, or a dead member back with a new incarnation."""
        was = member.state
        member.incarnation = update.incarnation
        member.address = (update.host, update.port)
        member.heard_at = now
        member.state = MemberState.ALIVE
        member.origin = ""
        self._queue(member)
        if was is MemberState.ALIVE:
            return
        member.changed_at = now
        self._suspicions.pop(member.node_id, None)
        if was is MemberState.SUSPECT:
            self.counters.false_suspicions += 1
            self._notices.append(
                Notice(
                    event="member_alive", fields={"member": member.node_id, "false_suspicion": True}
                )
            )
            return
        self._live += 1
        self._enroll(member.node_id)
        self._notices.append(
            Notice(
                event="member_rejoined",
                fields={"member": member.node_id, "incarnation": member.incarnation},
            )
        )
        held = self._held_for_dead.pop(member.node_id, None)
        if held is not None:
            self._apply_report(held)

    def _suspect(self, member: Member, update: MemberUpdate, now: float) -> None:
        if member.state is MemberState.SUSPECT:
            # As memberlist does: a suspicion at a higher incarnation only confirms the
            # timer running. Raising the incarnation here would make the member's
            # refutation of the first suspicion look stale.
            suspicion = self._suspicions.get(member.node_id)
            if suspicion is not None and suspicion.confirm(update.origin):
                # A new independent suspicion: pass it on so others shorten their timers too.
                self._broadcasts.put(
                    f"{member.node_id}\0{update.origin}", update, encoded_size(update)
                )
            return
        member.state = MemberState.SUSPECT
        member.incarnation = update.incarnation
        member.origin = update.origin
        member.changed_at = now
        low, high = self.config.suspicion_timeouts(self._live)
        expected = self.config.suspicion_confirmations
        if self._live - 2 < expected:
            expected = 0  # too few members to expect that many independent suspicions
        self._suspicions[member.node_id] = _Suspicion(now, low, high, expected, {update.origin})
        self._queue(member)
        self._notices.append(
            Notice(event="member_suspect", fields={"member": member.node_id, "by": update.origin})
        )

    def _bury(
        self, member: Member, state: MemberState, incarnation: int, origin: str, now: float
    ) -> None:
        member.state = state
        member.incarnation = incarnation
        member.origin = origin
        member.changed_at = now
        self._live -= 1
        self._suspicions.pop(member.node_id, None)
        self.reports.pop(member.node_id, None)
        self._report_broadcasts.drop(member.node_id)
        heapq.heappush(self._tombstones, (now + self.config.dead_retention_s, member.node_id))
        self._queue(member)
        if state is MemberState.DEAD:
            self.counters.deaths += 1
        event = "member_dead" if state is MemberState.DEAD else "member_left"
        self._notices.append(Notice(event=event, fields={"member": member.node_id, "by": origin}))

    def _apply_report(self, report: WorkerReport, *, relay: bool = True) -> None:
        """Keep a newer report; gossip it on unless it came in a join state page."""
        if report.node_id == self.node_id:
            return
        member = self.members.get(report.node_id)
        if member is None:
            # Its alive update may be a message behind: hold the report until it comes.
            if len(self._orphans) < ORPHAN_REPORTS_MAX or report.node_id in self._orphans:
                self._orphans[report.node_id] = report
            return
        if member.state not in LIVE_STATES:
            # So may the alive of a rejoin or of a refuted death.
            self._held_for_dead[report.node_id] = report
            return
        held = self.reports.get(report.node_id)
        if held is not None and report.seq <= held.seq and report.timestamp <= held.timestamp:
            return
        self.reports[report.node_id] = report
        if relay:
            self._report_broadcasts.put(report.node_id, report, encoded_size(report))
        self._fresh_reports.append(report)

    def _heard(self, node_id: str, now: float) -> None:
        member = self.members.get(node_id)
        if member is not None and member.state in LIVE_STATES:
            member.heard_at = now

    # -- probing -----------------------------------------------------------------------

    def _scale(self) -> int:
        return self.awareness + 1

    def _raise_awareness(self, delta: int) -> None:
        self.awareness = min(self.config.awareness_max - 1, max(0, self.awareness + delta))

    def _enroll(self, node_id: str) -> None:
        """Insert a member into the probe order at a random position (memberlist does)."""
        self._probe_order.insert(self.rng.randint(0, len(self._probe_order)), node_id)

    def _next_target(self) -> Member | None:
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                node_id = self._probe_order[self._probe_index]
                self._probe_index += 1
                member = self.members.get(node_id)
                if member is not None and member.state in LIVE_STATES and node_id != self.node_id:
                    return member
            # A pass is over: reshuffle the live members for the next one.
            self._probe_order = [
                m.node_id for m in self.live_members() if m.node_id != self.node_id
            ]
            self.rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def _start_probe(self, now: float, sends: list[Send]) -> None:
        scale = self._scale()
        self._next_probe_at = now + self.config.probe_interval_s * scale
        target = self._next_target()
        if target is None:
            return
        self._seq += 1
        self.counters.probes += 1
        self._probe = _Probe(
            self._seq,
            target.node_id,
            now,
            now + self.config.probe_timeout_s * scale,
            now + self.config.probe_interval_s * scale,
        )
        sends.append(self._ping(self._seq, target))

    def _check_probe(self, now: float, sends: list[Send]) -> None:
        probe = self._probe
        if probe is None:
            return
        target = self.members.get(probe.target)
        if target is None or target.state not in LIVE_STATES:
            self._probe = None  # it died or left meanwhile: nothing to decide
            return
        if not probe.indirect and now >= probe.direct_deadline:
            probe.indirect = True
            relays = self._random_alive_many(self.config.indirect_checks, {probe.target})
            probe.expected_nacks = len(relays)
            self.counters.indirect_probes += 1
            for relay in relays:
                request = self._ping_req(probe, target, relay)
                sends.append(Send(to=relay.address, message=request))
        if now >= probe.final_deadline:
            self._probe = None
            self.counters.probes_failed += 1
            if probe.expected_nacks:
                self._raise_awareness(max(0, probe.expected_nacks - probe.nacks))
            else:
                self._raise_awareness(1)
            self.counters.suspicions_raised += 1
            update = MemberUpdate(
                node_id=target.node_id,
                host=target.address[0],
                port=target.address[1],
                incarnation=target.incarnation,
                state=int(MemberState.SUSPECT),
                origin=self.node_id,
            )
            self.apply(update, now)

    def _on_ack(self, ack: GossipAck, now: float, sends: list[Send]) -> None:
        probe = self._probe
        if probe is not None and ack.seq == probe.seq:
            self._probe = None
            if not probe.indirect and now <= probe.direct_deadline:
                # Only an on-time direct ack says this node is healthy, as in memberlist: a
                # relayed or late one says the target lives, not that our probes are timely.
                self._raise_awareness(-1)
            self._heard(probe.target, now)
            return
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            self._heard(relay.target, now)
            members, reports = self._piggyback(
                json_size({"seq": relay.requester_seq, "source": relay.target}), ""
            )
            forwarded = GossipAck(
                seq=relay.requester_seq,
                source=relay.target,
                members=tuple(members),
                reports=reports,
            )
            sends.append(Send(to=relay.requester, message=forwarded))

    def _on_ping_req(
        self, request: GossipPingReq, sender: Address, now: float, sends: list[Send]
    ) -> None:
        """Probe `request.target` for the sender, if it is a member this node knows alive or
        suspect, at the address this node knows for it.

        Never at an address the request names alone: anyone can send a ping-req, and
        relaying to its address would make this node send datagrams wherever a stranger
        likes. A requester whose view is newer than ours (a target known here as dead, or
        not yet) gets no relay and no nack: it has other relays, and its own probe.
        """
        target = self.members.get(request.target)
        if target is None or target.state not in LIVE_STATES or target.node_id == self.node_id:
            self.counters.relays_declined += 1
            return
        self._seq += 1
        timeout = self.config.probe_timeout_s * self._scale()
        self._relays[self._seq] = _Relay(
            sender,
            request.seq,
            request.target,
            now + timeout * self.config.nack_ratio,
            now + 2 * timeout,
        )
        sends.append(self._ping(self._seq, target))

    def _check_relays(self, now: float, sends: list[Send]) -> None:
        for seq, relay in list(self._relays.items()):
            if relay.nack_at is not None and now >= relay.nack_at:
                relay.nack_at = None
                sends.append(
                    Send(
                        to=relay.requester,
                        message=GossipNack(seq=relay.requester_seq, source=self.node_id),
                    )
                )
            if now >= relay.expires:
                del self._relays[seq]

    def _check_suspicions(self, now: float) -> None:
        for node_id, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline:
                member = self.members[node_id]
                self._bury(member, MemberState.DEAD, member.incarnation, self.node_id, now)

    def _forget_tombstones(self, now: float) -> None:
        while self._tombstones and self._tombstones[0][0] <= now:
            _, node_id = heapq.heappop(self._tombstones)
            member = self.members.get(node_id)
            if member is None or member.state in LIVE_STATES:
                continue  # came back since
            if member.changed_at + self.config.dead_retention_s > now:
                continue  # died again later: its newer tombstone is still queued
            del self.members[node_id]
            self._held_for_dead.pop(node_id, None)
            self._broadcasts.drop(node_id)
            self._notices.append(Notice(event="member_forgotten", fields={"member": node_id}))

    # -- choosing peers ----------------------------------------------------------------

    def _alone(self) -> bool:
        return self._live <= 1

    def _random_alive(self, exclude: Iterable[str]) -> Member | None:
        found = self._random_alive_many(1, set(exclude))
        return found[0] if found else None

    def _random_alive_many(
        self, count: int, exclude: set[str], states: frozenset[MemberState] = ALIVE_ONLY
    ) -> list[Member]:
        """Up to `count` distinct random members in `states`, by rejection from the probe order.

        O(count) on average; falls back to a scan when most of the order is unsuitable.
        """
        order = self._probe_order
        chosen: dict[str, Member] = {}
        if count <= 0 or not order:
            return []
        for _ in range(4 * count + 4):
            node_id = order[self.rng.randrange(len(order))]
            member = self.members.get(node_id)
            if (
                member is not None
                and member.state in states
                and node_id != self.node_id
                and node_id not in exclude
            ):
                chosen[node_id] = member
                if len(chosen) == count:
                    return list(chosen.values())
        pool = [
            m
            for m in self.members.values()
            if m.state in states
            and m.node_id != self.node_id
            and m.node_id not in exclude
            and m.node_id not in chosen
        ]
        extra = self.rng.sample(pool, min(count - len(chosen), len(pool)))
        return [*chosen.values(), *extra]

    def _reconnect_target(self) -> tuple[Address, str] | None:
        """A dead member (it may be back after a partition) or a seed not known alive.

        For a dead member the sync leads with our verdict about it, so that a member
        that is in fact alive hears it and refutes.
        """
        dead = [m for m in self.members.values() if m.state is MemberState.DEAD]
        if dead:
            member = self.rng.choice(dead)
            return member.address, member.node_id
        known = {m.address for m in self.live_members()}
        unknown = [seed for seed in self.seeds if seed not in known]
        return (self.rng.choice(unknown), "") if unknown else None

    # -- building messages ---------------------------------------------------------------

    def _queue(self, member: Member) -> None:
        update = member.update()
        self._broadcasts.put(member.node_id, update, encoded_size(update))

    def _broadcast_self(self) -> None:
        self._queue(self.members[self.node_id])

    def _piggyback(
        self, fixed_bytes: int, destination: str
    ) -> tuple[list[MemberUpdate], tuple[WorkerReport, ...]]:
        """Updates and reports for one message whose other fields take `fixed_bytes`.

        The envelope keys and the type name are counted too; a message built here encodes
        to at most `DATAGRAM_BUDGET_BYTES` in JSON, so it fits signed.
        """
        budget = DATAGRAM_BUDGET_BYTES - fixed_bytes - 80  # {"v":1,"t":"...","b":{...}} keys
        members: list[MemberUpdate] = []
        target = self.members.get(destination)
        if target is not None and target.state is not MemberState.ALIVE:
            buddy = target.update()  # Lifeguard's buddy system: tell it first
            members.append(buddy)
            budget -= encoded_size(buddy) + 1
        live = self._live
        taken, budget = self._broadcasts.take(
            budget, PIGGYBACK_MAX_MEMBERS - len(members), self.config.retransmit_limit(live)
        )
        members.extend(taken)
        reports, _ = self._report_broadcasts.take(
            budget,
            PIGGYBACK_MAX_REPORTS,
            self.config.retransmit_limit(live, self.config.report_retransmit_mult),
        )
        return members, tuple(reports)

    def _gossip_due(self, now: float) -> bool:
        """Whether a gossip round fires now. Rounds keep a fixed phase, as memberlist's
        ticker does: news that arrives while the queue was idle waits for the next round
        instead of being pushed on at once, so a round is a round."""
        due = self._next_gossip_at
        if now < due:
            return False
        interval = self.config.gossip_interval_s
        self._next_gossip_at = due + (math.floor((now - due) / interval) + 1) * interval
        return now - due < interval  # on time; after an idle stretch, wait for the phase

    def _gossip(self, sends: list[Send]) -> None:
        """A gossip round: push what is queued to a few random alive members."""
        if not (self._broadcasts or self._report_broadcasts):
            return
        fixed = json_size({"source": self.node_id})
        # Suspects too, as memberlist does: they must hear the news (their own suspicion
        # above all), and relays of indirect probes are the only ones that must be alive.
        for peer in self._random_alive_many(self.config.gossip_fanout, set(), LIVE_STATES):
            members, reports = self._piggyback(fixed, peer.node_id)
            if not members and not reports:
                break
            sends.append(
                Send(
                    to=peer.address,
                    message=GossipPush(
                        source=self.node_id, members=tuple(members), reports=reports
                    ),
                )
            )

    def _ping(self, seq: int, target: Member) -> Send:
        fixed = json_size({"seq": seq, "source": self.node_id, "target": target.node_id})
        members, reports = self._piggyback(fixed, target.node_id)
        ping = GossipPing(
            seq=seq,
            source=self.node_id,
            target=target.node_id,
            members=tuple(members),
            reports=reports,
        )
        return Send(to=target.address, message=ping)

    def _ack(self, seq: int, to: Address, destination: str) -> Send:
        members, reports = self._piggyback(
            json_size({"seq": seq, "source": self.node_id}), destination
        )
        return Send(
            to=to,
            message=GossipAck(
                seq=seq, source=self.node_id, members=tuple(members), reports=reports
            ),
        )

    def _ping_req(self, probe: _Probe, target: Member, relay: Member) -> GossipPingReq:
        fixed = json_size(
            {
                "seq": probe.seq,
                "source": self.node_id,
                "target": target.node_id,
                "target_host": target.address[0],
                "target_port": target.address[1],
            }
        )
        members, reports = self._piggyback(fixed, relay.node_id)
        return GossipPingReq(
            seq=probe.seq,
            source=self.node_id,
            target=target.node_id,
            target_host=target.address[0],
            target_port=target.address[1],
            members=tuple(members),
            reports=reports,
        )

    def _sync(self, to: Address, peer: str, reply: bool) -> Send:
        """A bounded sample: the peer's entry and ours first, then random members (at most
        `SYNC_MEMBERS_MAX` in all), then reports, ours first, while they fit."""
        budget = DATAGRAM_BUDGET_BYTES - 80 - json_size({"source": self.node_id, "reply": reply})
        chosen: list[MemberUpdate] = []
        first = [self.node_id]
        if peer and peer in self.members:
            first.insert(0, peer)
        ids = list(self.members)
        sample = self.rng.sample(ids, min(len(ids), SYNC_SAMPLE_MAX))
        seen: set[str] = set()
        for node_id in [*first, *sample]:
            if node_id in seen or len(chosen) >= SYNC_MEMBERS_MAX:
                continue
            seen.add(node_id)
            update = self.members[node_id].update()
            size = encoded_size(update) + 1
            if size <= budget:
                chosen.append(update)
                budget -= size
        reports: list[WorkerReport] = []
        report_ids = list(self.reports)
        own = [self.node_id] if self.node_id in self.reports else []
        picks = self.rng.sample(report_ids, min(len(report_ids), PIGGYBACK_MAX_REPORTS))
        for node_id in dict.fromkeys([*own, *picks]):
            if len(reports) >= PIGGYBACK_MAX_REPORTS:
                break
            report = self.reports[node_id]
            size = encoded_size(report) + 1
            if size <= budget:
                reports.append(report)
                budget -= size
        return Send(
            to=to,
            message=GossipSync(
                source=self.node_id, reply=reply, members=tuple(chosen), reports=tuple(reports)
            ),
        )

    # -- joins -----------------------------------------------------------------------------

    def _join(self, seed: Address) -> Send:
        """Ask a seed for the whole state, carrying our own entry and report."""
        me = self.members[self.node_id].update()
        own = self.reports.get(self.node_id)
        return Send(
            to=seed,
            message=GossipJoin(source=self.node_id, members=(me,), reports=(own,) if own else ()),
        )

    def _answer_join(self, to: Address, joiner: str, now: float, sends: list[Send]) -> None:
        """The full state in pages, while page tokens last; else a sample (a sync reply).

        Pages snapshot the live members and their reports now; the first burst leaves at
        once and the rest every JOIN_PAGE_GAP_S (`tick`).
        """
        elapsed = now - self._page_tokens_at
        self._page_tokens_at = now
        self._page_tokens = min(
            float(JOIN_PAGE_TOKENS_MAX), self._page_tokens + elapsed * JOIN_PAGE_TOKENS_PER_S
        )
        # At least this many member pages: a join that cannot be afforded is declined
        # before the O(N) work of building its pages (joins from strangers cost O(1)).
        member_pages = self._live / PIGGYBACK_MAX_MEMBERS
        pages = [] if member_pages > self._page_tokens else self._state_pages(to, joiner)
        if not pages or len(pages) > self._page_tokens:
            self.counters.join_states_declined += 1
            sends.append(self._sync(to, joiner, reply=True))
            return
        self._page_tokens -= len(pages)
        self.counters.join_states += 1
        queued_before = bool(self._pages)
        self._pages.extend(pages)
        if not queued_before:
            self._send_pages(now, sends)

    def _send_pages(self, now: float, sends: list[Send]) -> None:
        for _ in range(min(JOIN_PAGES_PER_BURST, len(self._pages))):
            sends.append(self._pages.popleft())
        self._next_page_at = now + JOIN_PAGE_GAP_S

    def _state_pages(self, to: Address, joiner: str) -> list[Send]:
        """Live members, then their reports, in as few datagrams as the cap allows."""
        fixed = json_size(
            {"source": self.node_id, "page": COUNT_FIELD_MAX, "pages": COUNT_FIELD_MAX}
        )
        budget_per_page = DATAGRAM_BUDGET_BYTES - 80 - fixed
        # The joiner's own entry too: a restarted node learns what the cluster believes
        # about it, and refutes with a higher incarnation.
        updates = [m.update() for m in self.live_members()]
        reports = [r for node_id, r in self.reports.items() if node_id != joiner]
        contents: list[tuple[list[MemberUpdate], list[WorkerReport]]] = []
        members: list[MemberUpdate] = []
        held: list[WorkerReport] = []
        budget = budget_per_page

        def room(size: int, full: bool) -> None:
            nonlocal members, held, budget
            if full or size > budget:
                contents.append((members, held))
                members, held, budget = [], [], budget_per_page
            budget -= size

        for update in updates:
            size = encoded_size(update) + 1
            room(size, len(members) >= PIGGYBACK_MAX_MEMBERS)
            members.append(update)
        for report in reports:
            size = encoded_size(report) + 1
            room(size, len(held) >= PIGGYBACK_MAX_REPORTS)
            held.append(report)
        if members or held:
            contents.append((members, held))
        return [
            Send(
                to=to,
                message=GossipJoinState(
                    source=self.node_id,
                    page=index,
                    pages=len(contents),
                    members=tuple(page_members),
                    reports=tuple(page_reports),
                ),
            )
            for index, (page_members, page_reports) in enumerate(contents)
        ]

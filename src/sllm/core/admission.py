"""Admission of new identities into the tables that strangers can grow: workers and members.

Why it exists: without a cluster secret, anyone who can reach a UDP port can announce a
worker (a report to the coordinator) or a member (a gossip push, sync or ping). Each
announcement of a new id creates an entry that lives until it times out, and a gossip
member is also probed, so a flood of forged ids costs memory, CPU and, worst, datagrams
sent to whatever addresses the flood names. So every such table is bounded twice:

- a hard cap on its size (`capacity`): memory and the work done per entry stay bounded
  whatever arrives;
- a token bucket per source address on *new* ids (`per_source_per_s`, `per_source_burst`):
  one sender cannot fill the cap in one burst, so when expiry makes room again, the room is
  not all taken by the same flood.

Only the first sight of an id passes through here: an id already in the table is never
refused, so a flood cannot push out the workers or members that are already known, and a
refused id is simply not created (its sender may try again later, when there is room).
Refusals are counted by cause, and `notice` says at most once per `NOTICE_INTERVAL_S` how
many there were, so the runtime can log them without a flood of log lines.

Not handled: a forged source address. UDP does not authenticate it, so the per-source
bucket stops one honest-addressed sender, not a spoofer; the cap stops everyone. The real
defence is CLUSTER_SECRET, with which only key holders can announce anything.
"""

from __future__ import annotations

import math
from collections import OrderedDict

# The largest centralized cluster the docs measure is 10,000 workers (docs/benchmarks.md);
# 12,000 leaves room for a rolling restart of a fifth of it (old and new ids both live until
# the old ones time out). A worker costs the coordinator about 2 kB, so about 25 MB at most.
MAX_WORKERS_DEFAULT = 12_000
# The largest decentralized cluster the docs measure is 1,000 nodes (docs/decentralized.md);
# members stay listed for DEAD_RETENTION (10 min) after they die, so a cluster that replaces
# every node twice within that window holds about 3,000: 4,000 leaves room for that.
MAX_MEMBERS_DEFAULT = 4_000
# A new id per source address per second, after the burst. One host runs one worker or node
# (a pod, a container), so even one a second is generous in steady state; ten lets a host
# that fronts many (a NAT, a development machine) bring them back within minutes.
NEW_IDENTITY_RATE_DEFAULT = 10.0
# New ids one source address may announce at once: a coordinator restart brings every worker
# behind one address back within one REPORT_INTERVAL, and a node joining a 1,000-node cluster
# learns every member from its seeds. 1,000 covers both at the sizes the docs claim.
NEW_IDENTITY_BURST_DEFAULT = 1_000
# Source addresses whose buckets are remembered, least recently used first out. A forgotten
# source starts again with a full burst, which the cap bounds anyway; 4,096 buckets are a
# few hundred kB.
SOURCES_MAX = 4_096
# At most one notice of refusals per this many seconds: a flood refuses thousands of ids a
# second and the log must stay readable (the counters hold the exact numbers).
NOTICE_INTERVAL_S = 10.0
# The event name of that notice, for the coordinator and for membership alike.
REFUSED_EVENT = "identities_refused"


class Admission:
    """Decides whether a new id may join a table of at most `capacity` entries.

    `admit(size=..., source=..., now=...)` is called only for an id the table does not hold;
    `size` is the table's size now. An empty `source` (a bootstrap list, a test, a driver that
    does not know the sender) skips the per-source bucket, never the cap.
    """

    __slots__ = (
        "_buckets",
        "_notice_at",
        "_noticed",
        "capacity",
        "per_source_burst",
        "per_source_per_s",
        "refused_full",
        "refused_rate",
    )

    def __init__(
        self,
        *,
        capacity: int,
        per_source_per_s: float = NEW_IDENTITY_RATE_DEFAULT,
        per_source_burst: int = NEW_IDENTITY_BURST_DEFAULT,
    ) -> None:
        if capacity < 1 or per_source_burst < 1:
            raise ValueError("capacity and per_source_burst must be >= 1")
        if not (math.isfinite(per_source_per_s) and per_source_per_s >= 0):
            raise ValueError("per_source_per_s must be a finite number >= 0")
        self.capacity = capacity
        self.per_source_per_s = per_source_per_s
        self.per_source_burst = per_source_burst
        self.refused_full = 0  # new ids refused because the table was full
        self.refused_rate = 0  # new ids refused because their source exceeded its rate
        # source -> (tokens, when they were counted), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._noticed = 0  # refusals already told in a notice
        self._notice_at = -math.inf  # when the next notice may be given

    @property
    def refused(self) -> int:
        return self.refused_full + self.refused_rate

    def admit(self, *, size: int, source: str, now: float) -> bool:
        """True when a new id from `source` may join a table holding `size` entries."""
        if size >= self.capacity:
            self.refused_full += 1
            return False
        if not source:
            return True
        held = self._buckets.pop(source, None)
        if held is None:
            tokens = float(self.per_source_burst)
        else:
            tokens, since = held
            elapsed = max(0.0, now - since)  # a clock that steps back refills nothing
            tokens = min(float(self.per_source_burst), tokens + elapsed * self.per_source_per_s)
        admitted = tokens >= 1.0
        if admitted:
            tokens -= 1.0
        else:
            self.refused_rate += 1
        self._buckets[source] = (tokens, now)  # now the most recently used
        if len(self._buckets) > SOURCES_MAX:
            self._buckets.popitem(last=False)
        return admitted

    def notice(self, what: str, now: float) -> dict[str, object] | None:
        """The fields of a REFUSED_EVENT notice about the refusals since the last one, at
        most once per NOTICE_INTERVAL_S (the caller builds the notice: this module is below
        the coordinator, which defines `Notice`)."""
        if self.refused == self._noticed or now < self._notice_at:
            return None
        fields: dict[str, object] = {
            "what": what,
            "refused": self.refused - self._noticed,
            "refused_full": self.refused_full,
            "refused_rate": self.refused_rate,
            "capacity": self.capacity,
        }
        self._noticed = self.refused
        self._notice_at = now + NOTICE_INTERVAL_S
        return fields

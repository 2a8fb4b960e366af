"""The model registry of a decentralized cluster: a replicated map, spread by gossip.

Why it exists: with no coordinator, no one process owns the registry (`sllm.registry` on
the coordinator). Every node holds a replica; a deploy or a delete on any node becomes an
entry, and every node converges on the same entries.

Theory of operation:

- **Entries, last writer wins.** One entry per model name: ``(version, writer)``, whether
  it is deleted, and the spec (the model's catalog entry as canonical JSON, opaque here;
  `sllm.catalog.catalog_entry_json`). The entry with the higher ``(version, writer,
  deleted)`` wins, so every node picks the same winner whatever order entries arrive in (merging is
  commutative, associative and idempotent: tested with hypothesis). A version is a
  hybrid clock: ``max(wall-clock milliseconds, highest version seen + 1)``, so a node's
  write supersedes everything it has seen, even with its clock behind.
- **Tombstones.** A delete is an entry with ``deleted`` set and no spec; it wins over the
  writes it saw, and is kept `TOMBSTONE_RETENTION_S` (an hour) before it is forgotten.
  A node cut off for less than that cannot bring a deleted model back: its old entry
  loses to the tombstone when it rejoins. (Far longer than a partition that failure
  detection has not already turned into a dead member: `GossipConfig.detection_bound`
  is 88 s at 1,000 nodes.)
- **Rumors.** A change (local, or newly learned) is pushed, in `RegistryEntries`
  datagrams, to `fanout` random live members every gossip round, each entry
  ``GossipConfig.retransmit_limit(N)`` times: ``O(log N)`` rounds to reach everyone, as
  membership updates do. Unchanged entries are never re-sent.
- **Anti-entropy.** Every `sync_interval_s` a node sends one random live member a
  `RegistryDigest` (a hash of every entry's name, version, writer and deleted flag).
  A member that holds something else answers with all its entries and its own digest,
  so the two end with the union: a node that missed a rumor, or joined late, converges
  within a few sync intervals. At join, a node asks its first live member at once.
- **Parts.** A spec can be larger than a datagram (a model with many checkpoint shards
  and their sha256): it travels in parts of at most `SPEC_PART_BYTES` bytes encoded,
  reassembled by ``(name, version, writer)`` and checked against the spec's sha256; an
  incomplete one is dropped after `PARTS_TIMEOUT_S`, and anti-entropy sends it again.

Pure: time and randomness are passed in; the node (`sllm.core.node.Node`) hosts it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sllm.core.membership import Address, Member, Send
from sllm.wire.codec import MAX_DATAGRAM_BYTES, SIGNED_OVERHEAD_BYTES, json_size, wire_body
from sllm.wire.messages import (
    ENTRY_PARTS_PER_MESSAGE_MAX,
    SPEC_PART_MAX_LEN,
    SPEC_PARTS_MAX,
    RegistryDigest,
    RegistryEntries,
    RegistryEntryPart,
)

# An hour: see the module docstring.
TOMBSTONE_RETENTION_S = 3600.0
# Parts of one entry arrive within milliseconds of each other; 30 s is many gossip rounds.
PARTS_TIMEOUT_S = 30.0
SPEC_PART_BYTES = SPEC_PART_MAX_LEN
# Bytes of a datagram the entries may fill: the cap, less the signature and the envelope
# (``{"v":1,"t":"registry_entries","b":{"source":...,"entries":[...]}}``).
_ENVELOPE_BYTES = 120
DATAGRAM_BUDGET_BYTES = MAX_DATAGRAM_BYTES - SIGNED_OVERHEAD_BYTES - _ENVELOPE_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryEntry:
    """One model's entry; `spec` is "" for a tombstone."""

    name: str
    version: int
    writer: str
    deleted: bool
    spec: str
    changed_at: float = 0.0  # local time it was taken in (for the tombstone's retention)

    @property
    def order(self) -> tuple[int, str, bool]:
        """What decides between two entries of one name: higher wins (a tombstone wins a
        tie, which a writer never makes, so the order is total whatever arrives)."""
        return (self.version, self.writer, self.deleted)


class SpecTooLarge(ValueError):
    """A spec that needs more than `SPEC_PARTS_MAX` parts."""


def split(entry: RegistryEntry) -> list[RegistryEntryPart]:
    """`entry` in parts, each of at most `SPEC_PART_BYTES` bytes of encoded text."""
    pieces = _pieces(entry.spec) if entry.spec else [""]
    if len(pieces) > SPEC_PARTS_MAX:
        raise SpecTooLarge(f"{entry.name}: the spec needs {len(pieces)} parts > {SPEC_PARTS_MAX}")
    digest = hashlib.sha256(entry.spec.encode()).hexdigest() if entry.spec else ""
    return [
        RegistryEntryPart(
            name=entry.name,
            version=entry.version,
            writer=entry.writer,
            deleted=entry.deleted,
            spec_sha256=digest,
            part=index,
            parts=len(pieces),
            text=piece,
        )
        for index, piece in enumerate(pieces)
    ]


def _pieces(text: str) -> list[str]:
    """`text` cut so each piece is at most `SPEC_PART_BYTES` characters and bytes encoded."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + SPEC_PART_BYTES)
        while json_size(text[start:end]) - 2 > SPEC_PART_BYTES:  # less the quotes
            end = start + max(1, (end - start) * 3 // 4)
        pieces.append(text[start:end])
        start = end
    return pieces


@dataclass(slots=True)
class _Partial:
    parts: dict[int, str]
    first_seen: float


class RegistryReplica:
    """One node's copy of the registry, and the gossip that spreads it."""

    def __init__(
        self,
        node_id: str,
        rng: random.Random,
        *,
        fanout: int,
        round_interval_s: float,
        sync_interval_s: float,
        now: float,
    ) -> None:
        self.node_id = node_id
        self.rng = rng
        self.fanout = fanout
        self.round_interval_s = round_interval_s
        self.sync_interval_s = sync_interval_s
        self._next_round_at = now
        self._entries: dict[str, RegistryEntry] = {}
        self._partial: dict[tuple[str, int, str, bool], _Partial] = {}
        # Entries still to push, and how many times each has been pushed.
        self._rumors: dict[str, int] = {}
        self._highest_version = 0
        self._changed: list[RegistryEntry] = []
        self._next_sync_at = now + sync_interval_s
        self._digest: str | None = None
        # What it did, for tests and logs: entries taken, entries that lost to what was
        # here, reassembled specs whose sha256 did not match.
        self.applied = 0
        self.stale = 0
        self.bad_parts = 0

    # -- reading ---------------------------------------------------------------------

    def live(self) -> dict[str, str]:
        """The specs of every model not deleted, by name."""
        return {name: e.spec for name, e in self._entries.items() if not e.deleted}

    def get(self, name: str) -> RegistryEntry | None:
        return self._entries.get(name)

    def entries(self) -> Iterator[RegistryEntry]:
        return iter(self._entries.values())

    def take_changes(self) -> list[RegistryEntry]:
        """The entries that changed since the last call (local writes and merges)."""
        changed, self._changed = self._changed, []
        return changed

    def digest(self) -> str:
        """A hash of every entry's name, version, writer and deleted flag."""
        if self._digest is None:
            text = "\n".join(
                f"{e.name}\t{e.version}\t{e.writer}\t{int(e.deleted)}"
                for e in sorted(self._entries.values(), key=lambda e: e.name)
            )
            self._digest = hashlib.sha256(text.encode()).hexdigest()
        return self._digest

    def next_deadline(self) -> float:
        if self._rumors:
            return min(self._next_sync_at, self._next_round_at)
        return self._next_sync_at

    # -- local writes ----------------------------------------------------------------

    def write(self, name: str, spec: str, *, wall_ms: int, now: float) -> RegistryEntry:
        """Deploy or update `name` here; it spreads from the next gossip round."""
        entry = RegistryEntry(
            name=name,
            version=self._next_version(wall_ms),
            writer=self.node_id,
            deleted=False,
            spec=spec,
            changed_at=now,
        )
        split(entry)  # raises SpecTooLarge before anything changes
        self._take(entry)
        return entry

    def delete(self, name: str, *, wall_ms: int, now: float) -> RegistryEntry:
        """Delete `name` here (a tombstone); it spreads from the next gossip round."""
        entry = RegistryEntry(
            name=name,
            version=self._next_version(wall_ms),
            writer=self.node_id,
            deleted=True,
            spec="",
            changed_at=now,
        )
        self._take(entry)
        return entry

    def _next_version(self, wall_ms: int) -> int:
        return max(wall_ms, self._highest_version + 1)

    # -- merging ---------------------------------------------------------------------

    def merge(self, entry: RegistryEntry) -> bool:
        """Take `entry` if it wins over what is here; True if it did."""
        current = self._entries.get(entry.name)
        if current is not None and current.order >= entry.order:
            if current.order != entry.order:
                self.stale += 1
            return False
        self._take(entry)
        return True

    def _take(self, entry: RegistryEntry) -> None:
        self._entries[entry.name] = entry
        self._highest_version = max(self._highest_version, entry.version)
        self._rumors[entry.name] = 0
        self._changed.append(entry)
        self._digest = None
        self.applied += 1

    def receive_parts(self, parts: Iterable[RegistryEntryPart], now: float) -> None:
        """Merge the entries these parts complete (a lone part of a large spec waits)."""
        for part in parts:
            key = (part.name, part.version, part.writer, part.deleted)
            current = self._entries.get(part.name)
            order = (part.version, part.writer, part.deleted)
            if current is not None and current.order >= order:
                if current.order != order:
                    self.stale += 1
                continue
            if part.parts == 1:
                self._complete(part, part.text, now)
                continue
            partial = self._partial.setdefault(key, _Partial({}, now))
            partial.parts[part.part] = part.text
            if len(partial.parts) == part.parts:
                del self._partial[key]
                self._complete(part, "".join(partial.parts[i] for i in range(part.parts)), now)

    def _complete(self, part: RegistryEntryPart, spec: str, now: float) -> None:
        if part.deleted:
            spec = ""
        elif hashlib.sha256(spec.encode()).hexdigest() != part.spec_sha256:
            self.bad_parts += 1
            return
        self.merge(
            RegistryEntry(
                name=part.name,
                version=part.version,
                writer=part.writer,
                deleted=part.deleted,
                spec=spec,
                changed_at=now,
            )
        )

    # -- gossip ----------------------------------------------------------------------

    def tick(self, peers: Sequence[Member], now: float, *, retransmit_limit: int) -> list[Send]:
        """What is due at `now` among live `peers`: a gossip round of pending rumors, and
        anti-entropy every `sync_interval_s`."""
        sends: list[Send] = []
        if self._rumors and now >= self._next_round_at:
            self._next_round_at = now + self.round_interval_s
            sends.extend(self._gossip_round(peers, retransmit_limit))
        if now >= self._next_sync_at:
            self._next_sync_at = now + self.sync_interval_s
            self._forget(now)
            sends.extend(self.sync_now(peers))
        return sends

    def _gossip_round(self, peers: Sequence[Member], retransmit_limit: int) -> list[Send]:
        if not peers:
            return []
        chosen = self.rng.sample(list(peers), min(self.fanout, len(peers)))
        names = sorted(self._rumors, key=lambda name: self._rumors[name])
        parts = [part for name in names for part in split(self._entries[name])]
        for name in names:
            self._rumors[name] += 1
            if self._rumors[name] >= retransmit_limit:
                del self._rumors[name]
        return [
            Send(to=peer.address, message=message)
            for peer in chosen
            for message in self._pack(parts)
        ]

    def sync_now(self, peers: Sequence[Member]) -> list[Send]:
        """A digest to one random live member (anti-entropy; at once for a joiner)."""
        if not peers:
            return []
        peer = self.rng.choice(list(peers))
        return [Send(to=peer.address, message=self.digest_message(reply=False))]

    def digest_message(self, *, reply: bool) -> RegistryDigest:
        return RegistryDigest(
            source=self.node_id, digest=self.digest(), entries=len(self._entries), reply=reply
        )

    def answer_digest(self, digest: RegistryDigest, sender: Address) -> list[Send]:
        """What to send back for `digest`: nothing when the same, else every entry here
        (and this replica's digest, unless `digest` was itself an answer)."""
        if digest.digest == self.digest():
            return []
        parts = [part for entry in self._entries.values() for part in split(entry)]
        answer = [Send(to=sender, message=message) for message in self._pack(parts)]
        if not digest.reply:
            answer.append(Send(to=sender, message=self.digest_message(reply=True)))
        return answer

    def _pack(self, parts: Sequence[RegistryEntryPart]) -> list[RegistryEntries]:
        """`parts` in as few datagrams as fit."""
        messages: list[RegistryEntries] = []
        batch: list[RegistryEntryPart] = []
        budget = DATAGRAM_BUDGET_BYTES - json_size(self.node_id)
        used = 0
        for part in parts:
            size = json_size(wire_body(part)) + 1
            if batch and (used + size > budget or len(batch) == ENTRY_PARTS_PER_MESSAGE_MAX):
                messages.append(RegistryEntries(source=self.node_id, entries=tuple(batch)))
                batch, used = [], 0
            batch.append(part)
            used += size
        if batch:
            messages.append(RegistryEntries(source=self.node_id, entries=tuple(batch)))
        return messages

    def _forget(self, now: float) -> None:
        """Drop tombstones past their retention and parts that never completed."""
        for name, entry in list(self._entries.items()):
            if entry.deleted and now - entry.changed_at > TOMBSTONE_RETENTION_S:
                del self._entries[name]
                self._rumors.pop(name, None)
                self._digest = None
        for key, partial in list(self._partial.items()):
            if now - partial.first_seen > PARTS_TIMEOUT_S:
                del self._partial[key]

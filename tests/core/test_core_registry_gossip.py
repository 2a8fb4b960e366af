"""The replicated registry's merge (`sllm.core.registry_gossip`): order does not matter,
tombstones win over what they saw and are forgotten after their retention, and specs
larger than a datagram travel in parts that are checked when whole."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sllm.core.registry_gossip import (
    SPEC_PART_BYTES,
    TOMBSTONE_RETENTION_S,
    RegistryEntry,
    RegistryReplica,
    split,
)


def _replica(node_id: str = "n1") -> RegistryReplica:
    return RegistryReplica(
        node_id, random.Random(1), fanout=3, round_interval_s=0.2, sync_interval_s=5.0, now=0.0
    )


entries = st.builds(
    RegistryEntry,
    name=st.sampled_from(["a", "b", "c"]),
    version=st.integers(min_value=1, max_value=5),
    writer=st.sampled_from(["n1", "n2", "n3"]),
    deleted=st.booleans(),
    spec=st.just(""),
).map(
    lambda e: (
        e
        if e.deleted
        else RegistryEntry(
            name=e.name,
            version=e.version,
            writer=e.writer,
            deleted=False,
            spec=f"{e.version}{e.writer}",
        )
    )
)


def _state(replica: RegistryReplica) -> dict[str, tuple[int, str, bool, str]]:
    return {e.name: (e.version, e.writer, e.deleted, e.spec) for e in replica.entries()}


@given(st.lists(entries, max_size=12), st.randoms())
def test_merging_in_any_order_or_twice_gives_the_same_registry(batch, rng) -> None:
    forward, shuffled = _replica(), _replica()
    for entry in batch:
        forward.merge(entry)
    again = list(batch) * 2
    rng.shuffle(again)
    for entry in again:
        shuffled.merge(entry)
    assert _state(forward) == _state(shuffled)
    assert forward.digest() == shuffled.digest()


def test_a_local_write_supersedes_everything_seen_even_with_a_clock_behind() -> None:
    replica = _replica("n1")
    replica.merge(RegistryEntry(name="m", version=10_000, writer="n9", deleted=False, spec="x"))
    written = replica.write("m", "y", wall_ms=5, now=1.0)  # its clock is far behind
    assert written.version == 10_001
    deleted = replica.delete("m", wall_ms=6, now=2.0)
    assert deleted.version == 10_002 and "m" not in replica.live()
    # an old write arriving late loses to the tombstone
    assert not replica.merge(
        RegistryEntry(name="m", version=9_999, writer="n9", deleted=False, spec="z")
    )
    assert "m" not in replica.live()


def test_tombstones_are_forgotten_after_their_retention() -> None:
    replica = _replica()
    replica.delete("m", wall_ms=1, now=0.0)
    replica.tick([], TOMBSTONE_RETENTION_S / 2, retransmit_limit=1)
    assert replica.get("m") is not None
    replica.tick([], TOMBSTONE_RETENTION_S + 10, retransmit_limit=1)
    assert replica.get("m") is None


def test_a_large_spec_travels_in_parts_and_a_tampered_one_is_refused() -> None:
    spec = '{"files":[' + ",".join(f'{{"sha256":"{i:064x}"}}' for i in range(40)) + "]}"
    entry = RegistryEntry(name="big", version=3, writer="n2", deleted=False, spec=spec)
    parts = split(entry)
    assert len(parts) > 3 and all(len(p.text) <= SPEC_PART_BYTES for p in parts)

    receiver = _replica()
    receiver.receive_parts(reversed(parts), now=1.0)  # any order
    assert receiver.live() == {"big": spec}

    tampered = [parts[0].__class__(**{**vars_of(parts[0]), "text": "x" + parts[0].text[1:]})]
    other = _replica()
    other.receive_parts(tampered + parts[1:], now=1.0)
    assert other.live() == {} and other.bad_parts == 1


def vars_of(part) -> dict:
    return {name: getattr(part, name) for name in part.__dataclass_fields__}

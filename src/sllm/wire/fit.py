"""Shrink-to-fit: a message over the datagram cap becomes a smaller one, true but shorter.

Why it exists: a sender must never drop a report or a page for being too large when a
shorter one would do, and the live runtime (`sllm.runtime.udp.Endpoint.send`) and the
simulator's network (`sllm.sim.network`) must send the same shorter message, or the
simulator measures a protocol the live system does not run. So the rule lives here, in
the wire package, pure, and both call `encode_to_fit`.

How a message shrinks (`shrink`, one step at a time, until the codec accepts it):

- a worker report moves its slowest-tier half of models into ``models_omitted`` (models
  are listed fastest tier first, so what stays is what placement wants most), with the
  loads of the models it no longer names;
- a cluster-state or member-state page carries one entry fewer (the client asks for the
  rest by offset);
- a gossip message drops its last piggybacked report, then its last member update (the
  sender fills them freshest and most urgent first, and what is dropped is sent again);
- a probe reply shrinks the report it carries.

Anything else cannot shrink: `encode_to_fit` raises the codec's ``oversized`` error.
"""

from __future__ import annotations

import dataclasses
from itertools import islice

from sllm.wire.codec import Codec, EncodeError
from sllm.wire.messages import (
    ClusterStateResponse,
    GossipAck,
    GossipJoin,
    GossipJoinState,
    GossipPing,
    GossipPingReq,
    GossipPush,
    GossipSync,
    LoadProbeReply,
    MemberStateResponse,
    Message,
    WorkerReport,
)


def shrink(message: Message) -> Message | None:
    """A smaller message saying less but nothing false; None when it cannot shrink."""
    if isinstance(message, WorkerReport) and message.models:
        return first_models(message, len(message.models) // 2)
    if isinstance(message, ClusterStateResponse) and len(message.workers) > 1:
        return dataclasses.replace(message, workers=message.workers[:-1])
    if isinstance(message, MemberStateResponse) and len(message.members) > 1:
        return dataclasses.replace(message, members=message.members[:-1])
    if isinstance(
        message,
        GossipPing
        | GossipAck
        | GossipPingReq
        | GossipSync
        | GossipPush
        | GossipJoin
        | GossipJoinState,
    ):
        if message.reports:
            return dataclasses.replace(message, reports=message.reports[:-1])
        if message.members:
            return dataclasses.replace(message, members=message.members[:-1])
        return None
    if isinstance(message, LoadProbeReply) and message.reports:
        smaller = shrink(message.reports[0])
        if isinstance(smaller, WorkerReport):
            return dataclasses.replace(message, reports=(smaller,))
    return None


def first_models(report: WorkerReport, count: int) -> WorkerReport:
    """`report` naming only its first `count` models (the fastest tiers), the rest
    counted in ``models_omitted``, and the loads of only those it still names."""
    if len(report.models) <= count:
        return report
    kept = dict(islice(report.models.items(), count))
    omitted = report.models_omitted + len(report.models) - len(kept)
    loads = tuple(load for load in report.loads if load.model in kept)
    return dataclasses.replace(report, models=kept, models_omitted=omitted, loads=loads)


def encode_to_fit(codec: Codec, message: Message, now: float, nonce: int) -> tuple[Message, bytes]:
    """The message as it will travel (itself, or shrunk until it fits) and its datagram.

    Raises the codec's `EncodeError`: ``oversized`` when nothing is left to drop, any other
    reason at once (shrinking cannot mend an out-of-range field).
    """
    current = message
    while True:
        try:
            return current, codec.encode(current, now, nonce)
        except EncodeError as error:
            if error.reason != "oversized":
                raise
            smaller = shrink(current)
            if smaller is None:
                raise
            current = smaller

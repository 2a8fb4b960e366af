"""Gossip messages on the wire: every one fits the datagram cap, shrinking when it must."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sllm.wire import (
    MAX_DATAGRAM_BYTES,
    Codec,
    GossipJoin,
    GossipJoinState,
    GossipPing,
    LoadProbeReply,
    MemberStateResponse,
    MemberSummary,
    MemberUpdate,
    Message,
    WorkerReport,
)
from sllm.wire.codec import DecodeError
from sllm.wire.fit import encode_to_fit, shrink
from sllm.wire.messages import (
    MEMBER_PAGE_MAX,
    PIGGYBACK_MAX_REPORTS,
    REPORT_MAX_MODELS,
)

CODEC = Codec(b"wire-secret")
LONG = "x" * 120


def fitted(message: Message) -> tuple[Message, bytes]:
    """What `Endpoint.send` and the simulator's network do: shrink until it fits."""
    return encode_to_fit(CODEC, message, 1.0, 1)


def big_report(i: int) -> WorkerReport:
    return WorkerReport(
        f"{LONG}-{i}", "10.0.0.1", 7946, 0,
        {f"{LONG[:90]}-{m}": m % 4 for m in range(REPORT_MAX_MODELS)},
        0, 3, 64, 2, 8, 0.25, 10, 100, 1.5, True, 7, 1e9,
    )  # fmt: skip


def test_an_oversized_gossip_message_drops_reports_then_the_last_updates() -> None:
    updates = tuple(MemberUpdate(f"{LONG}-{i}", "10.0.0.9", 7946, i, 1, LONG) for i in range(24))
    reports = tuple(big_report(i) for i in range(PIGGYBACK_MAX_REPORTS))
    ping = GossipPing(1, "a", "b", updates, reports)
    message, data = fitted(ping)
    assert isinstance(message, GossipPing)
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert message.reports == ()
    assert message.members == updates[: len(message.members)]  # the first ones are kept
    assert message.members  # the most urgent update (a leave, a buddy suspicion) survives


def test_a_member_page_and_a_probe_reply_shrink_to_fit() -> None:
    summaries = tuple(
        MemberSummary(f"{LONG}-{i}", LONG, 7946, 0, 1, 0.5, True, 0.5)
        for i in range(MEMBER_PAGE_MAX)
    )
    page = MemberStateResponse(
        request_id="r",
        node_id=LONG,
        incarnation=1,
        alive=5,
        suspect=0,
        dead=0,
        left=0,
        false_suspicions=0,
        refuted=0,
        local_health=0,
        bytes_sent_per_s=1.0,
        bytes_received_per_s=1.0,
        rejected_datagrams=0,
        offset=0,
        members=summaries,
        max_members=4_000,
        refused_members=0,
    )
    message, _ = fitted(page)
    assert isinstance(message, MemberStateResponse)
    assert 1 <= len(message.members) < MEMBER_PAGE_MAX
    reply = LoadProbeReply("p", (big_report(0),))
    message, _ = fitted(reply)
    assert isinstance(message, LoadProbeReply)
    assert message.reports[0].models_omitted > 0


def test_shrink_gives_up_on_an_empty_gossip_message() -> None:
    empty = GossipPing(1, "a", "b", (), ())
    assert shrink(empty) is None
    assert shrink(dataclasses.replace(empty, members=(MemberUpdate("c", "h", 1, 0, 0, ""),)))


def test_join_messages_round_trip_and_refuse_bad_fields() -> None:
    member = MemberUpdate("n1", "127.0.0.1", 7946, 3, 0, "")
    report = dataclasses.replace(big_report(0), node_id="n1", models={"m": 0}, models_omitted=0)
    join = GossipJoin(source="n1", members=(member,), reports=(report,))
    page = GossipJoinState(source="seed", page=2, pages=5, members=(member,) * 3, reports=(report,))
    for nonce, message in enumerate((join, page)):
        data = CODEC.encode(message, 1.0, 100 + nonce)
        assert CODEC.decode(data, 1.0) == message
    plain = Codec()
    body = json.loads(plain.encode(page, 1.0, 1))
    body["b"]["page"] = -1
    with pytest.raises(DecodeError, match="page"):
        plain.decode(json.dumps(body).encode(), 1.0)
    body = json.loads(plain.encode(join, 1.0, 1))
    body["b"]["source"] = "not an id!"
    with pytest.raises(DecodeError, match="source"):
        plain.decode(json.dumps(body).encode(), 1.0)


def test_an_oversized_join_drops_its_report_and_keeps_the_joiners_entry() -> None:
    member = MemberUpdate(f"{LONG}-j", LONG, 7946, 0, 0, "")
    join = GossipJoin(source=f"{LONG}-j", members=(member,), reports=(big_report(0),))
    message, data = fitted(join)
    assert isinstance(message, GossipJoin)
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert message.reports == () and message.members == (member,)

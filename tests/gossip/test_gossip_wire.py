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
        node_id=f"{LONG}-{i}",
        host="127.0.0.1",
        port=7946,
        http_port=0,
        models={f"{LONG[:90]}-{m}": m % 4 for m in range(REPORT_MAX_MODELS)},
        models_omitted=0,
        queue_depth=3,
        queue_capacity=64,
        running=2,
        slots=8,
        gpu_utilization=0.25,
        memory_used=10,
        memory_total=100,
        load_backlog_s=1.5,
        ready=True,
        seq=7,
        timestamp=1e9,
    )


def test_an_oversized_gossip_message_drops_reports_then_the_last_updates() -> None:
    updates = tuple(
        MemberUpdate(
            node_id=f"{LONG}-{i}", host="127.0.0.9", port=7946, incarnation=i, state=1, origin=LONG
        )
        for i in range(24)
    )
    reports = tuple(big_report(i) for i in range(PIGGYBACK_MAX_REPORTS))
    ping = GossipPing(seq=1, source="a", target="b", members=updates, reports=reports)
    message, data = fitted(ping)
    assert isinstance(message, GossipPing)
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert message.reports == ()
    assert message.members == updates[: len(message.members)]  # the first ones are kept
    assert message.members  # the most urgent update (a leave, a buddy suspicion) survives


def test_a_member_page_and_a_probe_reply_shrink_to_fit() -> None:
    summaries = tuple(
        MemberSummary(
            node_id=f"{LONG}-{i}",
            host=LONG,
            port=7946,
            state=0,
            incarnation=1,
            info_age_s=0.5,
            reported=True,
            report_age_s=0.5,
        )
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
    reply = LoadProbeReply(request_id="p", reports=(big_report(0),))
    message, _ = fitted(reply)
    assert isinstance(message, LoadProbeReply)
    assert message.reports[0].models_omitted > 0


def test_shrink_gives_up_on_an_empty_gossip_message() -> None:
    empty = GossipPing(seq=1, source="a", target="b", members=(), reports=())
    assert shrink(empty) is None
    assert shrink(
        dataclasses.replace(
            empty,
            members=(
                MemberUpdate(node_id="c", host="h", port=1, incarnation=0, state=0, origin=""),
            ),
        )
    )


def test_join_messages_round_trip_and_refuse_bad_fields() -> None:
    member = MemberUpdate(
        node_id="n1", host="127.0.0.1", port=7946, incarnation=3, state=0, origin=""
    )
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
    member = MemberUpdate(
        node_id=f"{LONG}-j", host=LONG, port=7946, incarnation=0, state=0, origin=""
    )
    join = GossipJoin(source=f"{LONG}-j", members=(member,), reports=(big_report(0),))
    message, data = fitted(join)
    assert isinstance(message, GossipJoin)
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert message.reports == () and message.members == (member,)

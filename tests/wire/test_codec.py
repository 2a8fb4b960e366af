"""The wire codec: round trips, every reject reason, the HMAC envelope, and reject counting."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import pickle
import random
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sllm.wire import (
    MAX_DATAGRAM_BYTES,
    MESSAGE_TYPES,
    REJECT_REASONS,
    WIRE_VERSION,
    ClusterStateRequest,
    ClusterStateResponse,
    Codec,
    DecodeError,
    EncodeError,
    InferenceRequest,
    InferenceResult,
    InferenceStarted,
    LoadEnd,
    Message,
    RegistryDigest,
    RegistryEntries,
    RegistryEntryPart,
    RejectCounter,
    ScheduleRequest,
    ScheduleResponse,
    WorkerReport,
    WorkerSummary,
)
from sllm.wire import codec as codec_module
from sllm.wire.fit import encode_to_fit
from sllm.wire.messages import (
    ID_MAX_LEN,
    LOADS_REPORTED_MAX,
    MEMBER_PAGE_MAX,
    REPORT_MAX_MODELS,
    STATE_PAGE_MAX_WORKERS,
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
    MemberUpdate,
)

SECRET = b"cluster-secret-for-tests-0123456"
NOW = 1_712_345_678.25
HYPOTHESIS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
HAVE_MSGPACK = "msgpack" in codec_module.AVAILABLE_FORMATS
FORMATS = [
    "json",
    pytest.param("msgpack", marks=pytest.mark.skipif(not HAVE_MSGPACK, reason="no msgpack")),
]


def summary(i: int, models: int = 1) -> WorkerSummary:
    return WorkerSummary(
        worker_id=f"worker-{i:04d}.sllm-workers.default.svc",
        host=f"10.244.17.{200 + i}",
        port=8001,
        models={f"meta-llama/Llama-3.1-{j}B-Instruct": j % 4 for j in range(models)},
        queue_depth=17,
        running=4,
        gpu_utilization=0.7312345678,
        last_report_age_s=1.23456789,
        ready=i % 2 == 1,  # the longer "false" first
    )


def full_report() -> WorkerReport:
    """A report naming REPORT_MAX_MODELS models with realistic 32-character names."""
    names = [f"meta-llama/Llama-3.1-{i:02d}B-Instruct"[:32] for i in range(REPORT_MAX_MODELS)]
    return WorkerReport(
        node_id="sllm-worker-17",
        host="10.244.17.203",
        port=8001,
        http_port=8081,
        models={name: i % 4 for i, name in enumerate(names)},
        models_omitted=12,
        queue_depth=17,
        queue_capacity=64,
        running=4,
        slots=8,
        gpu_utilization=0.7312345678,
        memory_used=81_604_378_624,
        memory_total=150_323_855_360,
        load_backlog_s=12.345678,
        ready=True,
        seq=123_456,
        timestamp=NOW,
    )


def full_page() -> ClusterStateResponse:
    return ClusterStateResponse(
        request_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        policy="startup_aware",
        active_workers=10_000,
        total_requests=123_456_789,
        cache_hits=100_000_000,
        cold_starts=12_345,
        rejected=42,
        queue_depth_mean=3.14159265358979,
        queue_depth_max=64,
        gpu_utilization_mean=0.5123456789,
        uptime_s=123_456.789012,
        offset=60,
        workers=tuple(summary(i) for i in range(STATE_PAGE_MAX_WORKERS)),
        max_workers=12_000,
        refused_workers=123_456,
    )


SAMPLES: dict[str, Message] = {
    "worker_report": full_report(),
    "schedule_request": ScheduleRequest(
        request_id="req-1",
        model="facebook/opt-6.7b",
        priority=3,
        prompt_tokens=512,
        output_tokens=128,
    ),
    "schedule_response": ScheduleResponse(
        request_id="req-1",
        worker_id="worker-3",
        host="10.0.0.3",
        port=8001,
        http_port=8081,
        action="cold_start",
        estimated_wait_s=2.5,
        reason="idle, checkpoint on disk",
    ),
    "cluster_state_request": ClusterStateRequest(
        request_id="req-2", offset=12, limit=STATE_PAGE_MAX_WORKERS
    ),
    "cluster_state_response": full_page(),
    "inference_request": InferenceRequest(
        request_id="req-3", model="facebook/opt-1.3b", prompt_tokens=100, output_tokens=20
    ),
    "inference_result": InferenceResult(
        request_id="req-3",
        worker_id="worker-1",
        ok=True,
        reason="",
        cold_start=False,
        queue_s=0.01,
        ttft_s=0.2,
        e2e_s=1.5,
    ),
    "inference_started": InferenceStarted(request_id="req-3", worker_id="worker-1"),
}


# -- gossip (decentralized mode) ---------------------------------------------------------


def member_update(i: int) -> MemberUpdate:
    return MemberUpdate(
        node_id=f"node-{i:04d}",
        host=f"10.244.3.{i % 250}",
        port=7946,
        incarnation=i,
        state=i % 4,
        origin="node-0001",
    )


def gossip_report() -> WorkerReport:
    """A report as gossip carries it: six models, the rest counted as omitted."""
    report = full_report()
    kept = dict(list(report.models.items())[:6])
    return dataclasses.replace(report, models=kept, models_omitted=len(report.models) - 6)


def member_page() -> MemberStateResponse:
    return MemberStateResponse(
        request_id="req-9",
        node_id="node-0001",
        incarnation=3,
        alive=990,
        suspect=4,
        dead=5,
        left=1,
        false_suspicions=17,
        refuted=2,
        local_health=1,
        bytes_sent_per_s=12_345.6,
        bytes_received_per_s=11_222.3,
        rejected_datagrams=7,
        offset=12,
        members=tuple(
            MemberSummary(
                node_id=f"node-{i:04d}.sllm-nodes.default.svc",
                host=f"10.244.3.{i}",
                port=7946,
                state=i % 4,
                incarnation=i,
                info_age_s=1.25,
                reported=True,
                report_age_s=0.5,
            )
            for i in range(MEMBER_PAGE_MAX)
        ),
        max_members=4_000,
        refused_members=123_456,
    )


SAMPLES.update(
    {
        "gossip_ping": GossipPing(
            seq=7,
            source="node-0001",
            target="node-0002",
            members=tuple(member_update(i) for i in range(6)),
            reports=(gossip_report(),),
        ),
        "gossip_ack": GossipAck(seq=7, source="node-0002", members=(member_update(3),), reports=()),
        "gossip_ping_req": GossipPingReq(
            seq=8,
            source="node-0001",
            target="node-0003",
            target_host="10.244.3.3",
            target_port=7946,
            members=(member_update(4),),
            reports=(),
        ),
        "gossip_nack": GossipNack(seq=8, source="node-0004"),
        "gossip_sync": GossipSync(
            source="node-0001",
            reply=False,
            members=tuple(member_update(i) for i in range(6)),
            reports=(gossip_report(),),
        ),
        "gossip_push": GossipPush(
            source="node-0001", members=(member_update(5),), reports=(gossip_report(),)
        ),
        "load_probe": LoadProbe(request_id="probe-17"),
        "load_probe_reply": LoadProbeReply(request_id="probe-17", reports=(gossip_report(),)),
        "member_state_request": MemberStateRequest(
            request_id="req-9", offset=12, limit=MEMBER_PAGE_MAX
        ),
        "member_state_response": member_page(),
        "gossip_join": GossipJoin(
            source="node-0009", members=(member_update(9),), reports=(gossip_report(),)
        ),
        "gossip_join_state": GossipJoinState(
            source="node-0001",
            page=0,
            pages=3,
            members=tuple(member_update(i) for i in range(6)),
            reports=(gossip_report(),),
        ),
        "registry_entries": RegistryEntries(
            source="node-0001",
            entries=(
                RegistryEntryPart(
                    name="acme/tiny",
                    version=1_764_900_000_000,
                    writer="node-0002",
                    deleted=False,
                    spec_sha256="ab" * 32,
                    part=0,
                    parts=2,
                    text='{"engine":"vllm","files":[{"path":"model.safetensors"',
                ),
                RegistryEntryPart(
                    name="old-model",
                    version=1_764_900_000_001,
                    writer="node-0003",
                    deleted=True,
                    spec_sha256="",
                    part=0,
                    parts=1,
                    text="",
                ),
            ),
        ),
        "registry_digest": RegistryDigest(
            source="node-0001", digest="cd" * 32, entries=12, reply=False
        ),
    }
)


def test_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    assert all(type(m) is MESSAGE_TYPES[name] for name, m in SAMPLES.items())


def test_reject_reasons_are_the_documented_set() -> None:
    assert set(REJECT_REASONS) == {
        "oversized",
        "bad_encoding",
        "unknown_version",
        "unknown_type",
        "missing_field",
        "unknown_field",
        "bad_type",
        "out_of_range",
        "unsigned",
        "bad_signature",
        "stale",
        "replayed",
        "before_boot",
    }


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("secret", [None, SECRET], ids=["plain", "signed"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str, secret: bytes | None, fmt: Any) -> None:
    codec = Codec(secret=secret, format=fmt)
    message = SAMPLES[name]
    data = codec.encode(message, NOW, 7)
    assert len(data) <= MAX_DATAGRAM_BYTES
    decoded = codec.decode(data, NOW)
    assert decoded == message
    assert type(decoded) is type(message)


def test_plain_json_is_compact_and_versioned() -> None:
    data = Codec().encode(SAMPLES["schedule_request"], NOW, 0)
    assert data == (
        b'{"v":1,"t":"schedule_request","b":{"request_id":"req-1","model":"facebook/opt-6.7b",'
        b'"priority":3,"prompt_tokens":512,"output_tokens":128}}'
    )


def test_nested_workers_encode_as_a_list_of_objects() -> None:
    document = json.loads(Codec().encode(full_page(), NOW, 0))
    assert document["v"] == WIRE_VERSION
    workers = document["b"]["workers"]
    assert isinstance(workers, list) and len(workers) == STATE_PAGE_MAX_WORKERS
    assert workers[0]["worker_id"] == "worker-0000.sllm-workers.default.svc"
    assert workers[0]["models"] == {"meta-llama/Llama-3.1-0B-Instruct": 0}


def test_full_report_and_full_page_fit_one_datagram_when_signed() -> None:
    codec = Codec(secret=SECRET)
    report = codec.encode(full_report(), NOW, 2**64 - 1)
    page = codec.encode(full_page(), NOW, 2**64 - 2)
    assert len(report) <= MAX_DATAGRAM_BYTES
    assert len(page) <= MAX_DATAGRAM_BYTES
    assert codec.decode(report, NOW) == full_report()
    assert codec.decode(page, NOW) == full_page()


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_ascii_text_round_trips(fmt: Any) -> None:
    codec = Codec(format=fmt)
    request = ScheduleRequest(
        request_id="req-\u00fc",
        model="\u5317\u4eac/\u6a21\u578b-7b",
        priority=0,
        prompt_tokens=1,
        output_tokens=1,
    )
    report = dataclasses.replace(full_report(), models={"plain": 1, "\u00e9t\u00e9/m\U0001f600": 2})
    assert codec.decode(codec.encode(request, NOW, 0), NOW) == request
    assert codec.decode(codec.encode(report, NOW, 0), NOW) == report


def test_int_is_accepted_for_a_float_field_and_becomes_a_float() -> None:
    codec = Codec()
    data = tamper(codec.encode(SAMPLES["inference_result"], NOW, 0), e2e_s=2)
    decoded = codec.decode(data, NOW)
    assert isinstance(decoded, InferenceResult)
    assert decoded.e2e_s == 2.0 and type(decoded.e2e_s) is float


# -- rejections --------------------------------------------------------------------------


def tamper(data: bytes, **changes: Any) -> bytes:
    """Rewrite body fields of a plain JSON datagram (a missing value deletes the field)."""
    document = json.loads(data)
    for name, value in changes.items():
        if value is MISSING:
            del document["b"][name]
        else:
            document["b"][name] = value
    return json.dumps(document).encode()


MISSING = object()


def reject(data: bytes, codec: Codec | None = None, now: float = NOW) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        (codec or Codec()).decode(data, now)
    assert info.value.reason in REJECT_REASONS
    return info.value


REPORT = Codec().encode(SAMPLES["worker_report"], NOW, 0)
# A report with one model leaves room in the datagram for the hostile values below.
SMALL_REPORT = Codec().encode(
    dataclasses.replace(full_report(), models={"facebook/opt-1.3b": 1}), NOW, 0
)


def test_oversized_is_rejected_before_parsing() -> None:
    assert reject(b"x" * (MAX_DATAGRAM_BYTES + 1)).reason == "oversized"
    # Valid JSON padded past the cap: the length alone decides.
    padded = REPORT + b" " * (MAX_DATAGRAM_BYTES + 1 - len(REPORT))
    assert reject(padded).reason == "oversized"
    assert reject(padded, Codec(secret=SECRET)).reason == "oversized"


def test_random_bytes_are_rejected() -> None:
    rng = random.Random(20240601)
    plain, signed = Codec(), Codec(secret=SECRET)
    for _ in range(500):
        data = rng.randbytes(rng.randint(0, MAX_DATAGRAM_BYTES))
        assert reject(data, plain).reason == "bad_encoding"
        assert reject(data, signed).reason == "unsigned"


class _Exploit:
    """Unpickling this creates the marker file: proof that nothing was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_pickle_payload_is_rejected_and_never_runs(tmp_path: Path, fmt: Any) -> None:
    proof = tmp_path / "proof"
    with pickle.loads(pickle.dumps(_Exploit(proof))):  # the payload is live...
        pass
    assert proof.exists()

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))
    assert reject(payload, Codec(format=fmt)).reason == "bad_encoding"
    assert reject(payload, Codec(secret=SECRET, format=fmt)).reason == "unsigned"
    assert not marker.exists()  # ...and the codec never ran it


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_encoding"),
        (b'{"v":1,"t":"worker_report","b":{', "bad_encoding"),
        (b"\xff\xfe{}", "bad_encoding"),
        (b"[1, 2, 3]", "bad_encoding"),
        (b"[" * 1400, "bad_encoding"),
        (b'{"v":1,"v":1,"t":"inference_request","b":{}}', "bad_encoding"),
        (b'{"t":"inference_request","b":{}}', "missing_field"),
        (b'{"v":2,"t":"inference_request","b":{}}', "unknown_version"),
        (b'{"v":true,"t":"inference_request","b":{}}', "unknown_version"),
        (b'{"v":"1","t":"inference_request","b":{}}', "unknown_version"),
        (b'{"v":1,"t":"inference_request"}', "missing_field"),
        (b'{"v":1,"t":"inference_request","b":{},"x":0}', "unknown_field"),
        (b'{"v":1,"t":"launch_missiles","b":{}}', "unknown_type"),
        (b'{"v":1,"t":["worker_report"],"b":{}}', "bad_type"),
        (b'{"v":1,"t":"inference_request","b":[]}', "bad_type"),
    ],
)
def test_malformed_documents(data: bytes, reason: str) -> None:
    assert reject(data).reason == reason


def test_version_is_checked_before_the_type() -> None:
    assert reject(b'{"v":99,"t":"from_the_future","b":{"x":1}}').reason == "unknown_version"


def test_duplicate_field_inside_the_body_is_rejected() -> None:
    data = REPORT.replace(b'"port":8001,', b'"port":8001,"port":1,', 1)
    assert reject(data).reason == "bad_encoding"


@pytest.mark.parametrize(
    ("changes", "reason", "where"),
    [
        ({"queue_depth": MISSING}, "missing_field", "queue_depth"),
        ({"shoe_size": 44}, "unknown_field", "shoe_size"),
        ({"port": True}, "bad_type", "port"),
        ({"port": 8001.0}, "bad_type", "port"),
        ({"port": "8001"}, "bad_type", "port"),
        ({"ready": 1}, "bad_type", "ready"),
        ({"gpu_utilization": "0.5"}, "bad_type", "gpu_utilization"),
        ({"gpu_utilization": False}, "bad_type", "gpu_utilization"),
        ({"node_id": None}, "bad_type", "node_id"),
        ({"models": ["facebook/opt-1.3b"]}, "bad_type", "models"),
        ({"models": {"facebook/opt-1.3b": "gpu"}}, "bad_type", "models"),
        ({"models": {"facebook/opt-1.3b": True}}, "bad_type", "models"),
        ({"node_id": "n" * 129}, "out_of_range", "node_id"),
        ({"node_id": "\ud800"}, "bad_encoding", "node_id"),
        ({"node_id": ""}, "out_of_range", "node_id"),
        ({"node_id": "worker 1"}, "out_of_range", "node_id"),
        ({"node_id": "worker-1\n"}, "out_of_range", "node_id"),
        ({"node_id": "w\u00e9"}, "out_of_range", "node_id"),
        ({"node_id": "w/1"}, "out_of_range", "node_id"),
        ({"port": 70000}, "out_of_range", "port"),
        ({"port": -1}, "out_of_range", "port"),
        ({"gpu_utilization": 1.5}, "out_of_range", "gpu_utilization"),
        ({"gpu_utilization": math.nan}, "out_of_range", "gpu_utilization"),
        ({"load_backlog_s": math.inf}, "out_of_range", "load_backlog_s"),
        ({"load_backlog_s": 10**400}, "out_of_range", "load_backlog_s"),
        ({"queue_depth": -1}, "out_of_range", "queue_depth"),
        ({"seq": 2**53 + 1}, "out_of_range", "seq"),
        ({"models": {"facebook/opt-1.3b": 4}}, "out_of_range", "models"),
        ({"models": {"facebook/opt-1.3b": -1}}, "out_of_range", "models"),
        ({"models": {"m" * 97: 0}}, "out_of_range", "models"),
        ({"models": {f"m{i}": 0 for i in range(REPORT_MAX_MODELS + 1)}}, "out_of_range", "models"),
        ({"loads": [{"model": "m", "ready_in_s": -1.0}]}, "out_of_range", "ready_in_s"),
        ({"loads": [{"model": "m" * 97, "ready_in_s": 1.0}]}, "out_of_range", "model"),
        ({"loads": [{"model": "m"}]}, "missing_field", "ready_in_s"),
        ({"loads": {"m": 1.0}}, "bad_type", "loads"),
        (
            {
                "loads": [
                    {"model": f"m{i}", "ready_in_s": 1.0} for i in range(LOADS_REPORTED_MAX + 1)
                ]
            },
            "out_of_range",
            "loads",
        ),
    ],
)
def test_bad_fields(changes: dict[str, Any], reason: str, where: str) -> None:
    error = reject(tamper(SMALL_REPORT, **changes))
    assert error.reason == reason
    assert where in error.detail


def test_a_report_says_when_its_loads_end() -> None:
    with_loads = dataclasses.replace(
        full_report(),
        models={"facebook/opt-1.3b": 0, "facebook/opt-6.7b": 0},
        loads=(
            LoadEnd(model="facebook/opt-1.3b", ready_in_s=4.2),
            LoadEnd(model="facebook/opt-6.7b", ready_in_s=31.5),
        ),
    )
    codec = Codec()
    assert codec.decode(codec.encode(with_loads, NOW, 0), NOW) == with_loads
    assert full_report().loads == ()  # nothing loading: none


def test_a_report_too_big_keeps_the_loads_of_the_models_it_still_names() -> None:
    """Shrinking halves the models, fastest tiers first; a load of a model it no longer
    names goes with it, and the report never names a load it does not list."""
    report = full_report()
    names = list(report.models)
    loads = (LoadEnd(model=names[0], ready_in_s=3.0), LoadEnd(model=names[-1], ready_in_s=9.0))
    fitted, data = encode_to_fit(
        Codec(secret=SECRET), dataclasses.replace(report, loads=loads), NOW, 1
    )
    assert isinstance(fitted, WorkerReport) and len(data) <= MAX_DATAGRAM_BYTES
    assert len(fitted.models) < len(names)
    assert fitted.loads == loads[:1]
    assert fitted.models_omitted == report.models_omitted + len(names) - len(fitted.models)


def test_choices_are_enforced() -> None:
    data = tamper(Codec().encode(SAMPLES["schedule_response"], NOW, 0), action="teleport")
    assert reject(data).reason == "out_of_range"


def page_data(workers: Any) -> bytes:
    return tamper(Codec().encode(SAMPLES["cluster_state_response"], NOW, 0), workers=workers)


def test_bad_nested_elements_name_their_path() -> None:
    assert Codec().decode(page_data([]), NOW) == dataclasses.replace(full_page(), workers=())
    good_worker = json.loads(Codec().encode(full_page(), NOW, 0))["b"]["workers"][0]
    bad_port = [good_worker, {**good_worker, "port": 70000}]
    error = reject(page_data(bad_port))
    assert error.reason == "out_of_range"
    assert "workers[1].port" in error.detail
    extra = [{**good_worker, "admin": True}]
    assert reject(page_data(extra)).reason == "unknown_field"
    missing = [{k: v for k, v in good_worker.items() if k != "host"}]
    assert reject(page_data(missing)).reason == "missing_field"
    assert reject(page_data(["worker-1"])).reason == "bad_type"
    assert reject(page_data({"0": good_worker})).reason == "bad_type"
    tiny = {**good_worker, "worker_id": "w", "host": "h", "models": {}}
    too_many = [tiny] * (STATE_PAGE_MAX_WORKERS + 1)
    assert reject(page_data(too_many)).reason == "out_of_range"


# -- encode-side validation --------------------------------------------------------------


def test_encode_validates_with_the_same_rules() -> None:
    codec = Codec()
    report = full_report()
    with pytest.raises(EncodeError) as info:
        codec.encode(dataclasses.replace(report, port=70000), NOW, 0)
    assert info.value.reason == "out_of_range" and "port" in str(info.value)
    with pytest.raises(EncodeError) as info:
        codec.encode(dataclasses.replace(report, gpu_utilization=math.nan), NOW, 0)
    assert info.value.reason == "out_of_range"
    with pytest.raises(EncodeError) as info:
        codec.encode(dataclasses.replace(report, queue_depth=True), NOW, 0)
    assert info.value.reason == "bad_type"
    page = dataclasses.replace(full_page(), workers=(summary(0), "worker-1"))  # type: ignore[arg-type]
    with pytest.raises(EncodeError) as info:
        codec.encode(page, NOW, 0)
    assert info.value.reason == "bad_type" and "workers[1]" in str(info.value)
    assert isinstance(info.value, ValueError)  # misuse of the API, not a peer's fault


def test_encode_rejects_a_datagram_over_the_cap() -> None:
    names = {f"organization-{i:02d}/" + "m" * 70: 0 for i in range(REPORT_MAX_MODELS)}
    report = dataclasses.replace(full_report(), models=names)
    with pytest.raises(EncodeError) as info:
        Codec().encode(report, NOW, 0)
    assert info.value.reason == "oversized"


def test_encode_checks_nonce_and_time() -> None:
    codec = Codec(secret=SECRET)
    message = SAMPLES["inference_request"]
    for now, nonce in [(math.nan, 1), (NOW, -1), (NOW, 2**64), (NOW, True)]:
        with pytest.raises(EncodeError):
            codec.encode(message, now, nonce)


def test_encode_refuses_unregistered_classes() -> None:
    with pytest.raises(EncodeError) as info:
        Codec().encode(Message(), NOW, 0)
    assert info.value.reason == "unknown_type"


# -- HMAC envelope ---------------------------------------------------------------------


def signed(message: Message | None = None, now: float = NOW, nonce: int = 1) -> bytes:
    return Codec(secret=SECRET).encode(message or SAMPLES["inference_request"], now, nonce)


def test_signed_round_trip_and_layout() -> None:
    data = signed()
    assert data.startswith(codec_module.MAGIC)
    assert data[len(codec_module.MAGIC)] == WIRE_VERSION
    assert data[codec_module.SIGNED_OVERHEAD_BYTES :] == Codec().encode(
        SAMPLES["inference_request"], NOW, 1
    )
    assert Codec(secret=SECRET).decode(data, NOW) == SAMPLES["inference_request"]


def test_unsigned_is_rejected_when_a_secret_is_set() -> None:
    plain = Codec().encode(SAMPLES["inference_request"], NOW, 1)
    assert reject(plain, Codec(secret=SECRET)).reason == "unsigned"


def test_signed_is_rejected_without_a_secret() -> None:
    assert reject(signed(), Codec()).reason == "bad_encoding"


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_forged_datagrams_are_rejected() -> None:
    data = signed()
    mac_at = codec_module.SIGNED_OVERHEAD_BYTES - 1
    receiver = Codec(secret=SECRET)
    assert reject(flip(data, mac_at), receiver).reason == "bad_signature"
    assert reject(flip(data, len(data) - 3), receiver).reason == "bad_signature"  # payload
    assert reject(flip(data, len(codec_module.MAGIC) + 3), receiver).reason == "bad_signature"
    assert reject(data[:-1], receiver).reason == "bad_signature"
    assert reject(data[:30], receiver).reason == "bad_encoding"  # truncated envelope
    assert reject(flip(data, 0), receiver).reason == "unsigned"
    assert receiver.decode(data, NOW) == SAMPLES["inference_request"]  # the original is fine


def test_other_envelope_version_is_rejected() -> None:
    data = bytearray(signed())
    data[len(codec_module.MAGIC)] = WIRE_VERSION + 1
    assert reject(bytes(data), Codec(secret=SECRET)).reason == "unknown_version"


def test_wrong_secret_is_rejected() -> None:
    assert reject(signed(), Codec(secret=b"another-secret")).reason == "bad_signature"


def test_stale_datagrams_are_rejected() -> None:
    data = signed(now=NOW)
    assert reject(data, Codec(secret=SECRET), now=NOW + 31).reason == "stale"
    assert reject(data, Codec(secret=SECRET), now=NOW - 31).reason == "stale"
    assert Codec(secret=SECRET).decode(data, NOW + 29.9) == SAMPLES["inference_request"]
    payload = Codec().encode(SAMPLES["inference_request"], NOW, 1)
    forever = Codec(secret=SECRET)._seal(payload, math.inf, 1)  # a peer with a broken clock
    assert reject(forever, Codec(secret=SECRET)).reason == "stale"


def test_replayed_datagram_is_rejected() -> None:
    receiver = Codec(secret=SECRET)
    data = signed(nonce=42)
    receiver.decode(data, NOW)
    assert reject(data, receiver, now=NOW + 1).reason == "replayed"
    # Same timestamp, other nonce: a different datagram.
    assert receiver.decode(signed(nonce=43), NOW) == SAMPLES["inference_request"]


def test_replay_window_does_not_reopen_when_the_clock_steps_back() -> None:
    receiver = Codec(secret=SECRET, max_skew_s=10.0)
    data = signed(now=NOW, nonce=5)
    receiver.decode(data, NOW)
    receiver.decode(signed(now=NOW + 100, nonce=6), NOW + 100)  # evicts the first pair
    assert reject(data, receiver, now=NOW).reason == "stale"


def test_replay_cache_forgets_pairs_outside_the_window() -> None:
    receiver = Codec(secret=SECRET, max_skew_s=5.0)
    sender = Codec(secret=SECRET)
    message = SAMPLES["inference_request"]
    now = NOW
    for nonce in range(5_000):
        now += 0.01
        receiver.decode(sender.encode(message, now, nonce), now)
    # 100 datagrams a second for a 5 s window.
    assert receiver.replay_cache_size <= 501


def test_replay_cache_is_hard_capped_and_never_accepts_a_replay() -> None:
    receiver = Codec(secret=SECRET, replay_cache_max=100)
    sender = Codec(secret=SECRET)
    message = SAMPLES["inference_request"]
    sent = [sender.encode(message, NOW + i * 1e-3, i) for i in range(1_000)]
    for data in sent:
        receiver.decode(data, NOW)
    assert receiver.replay_cache_size == 100
    for data in sent:  # every one of them is refused, evicted or not
        assert reject(data, receiver).reason in {"replayed", "stale"}


def test_a_datagram_captured_before_a_restart_is_refused_by_the_new_process() -> None:
    captured = signed(now=NOW, nonce=7)
    before = Codec(secret=SECRET)
    before.start_listening(NOW - 3600.0)
    assert before.decode(captured, NOW) == SAMPLES["inference_request"]
    # Restarted at NOW + 1: an empty replay cache, so only the start time can tell.
    after = Codec(secret=SECRET)
    after.start_listening(NOW + 1.0)
    error = reject(captured, after, now=NOW + 2.0)
    assert error.reason == "before_boot"
    assert "1.000 s before this receiver started" in error.detail
    assert after.decode(signed(now=NOW + 2.0, nonce=7), NOW + 2.0) == SAMPLES["inference_request"]
    # Once max_skew_s has passed, the skew check refuses it as it would anywhere.
    assert reject(captured, after, now=NOW + 31.0).reason == "stale"


def test_before_boot_allows_the_slack_for_clock_skew_and_only_rises() -> None:
    slack = codec_module.BOOT_SLACK_S
    receiver = Codec(secret=SECRET)
    receiver.start_listening(NOW)
    # A sender whose clock runs just under the slack behind: accepted.
    behind = signed(now=NOW - slack * 0.9, nonce=1)
    assert receiver.decode(behind, NOW) == SAMPLES["inference_request"]
    # Just over it: refused until its clock passes our start, then accepted.
    assert reject(signed(now=NOW - slack * 1.1, nonce=2), receiver).reason == "before_boot"
    assert receiver.decode(signed(now=NOW + 0.01, nonce=3), NOW) == SAMPLES["inference_request"]
    # An earlier start does not lower the floor again.
    receiver.start_listening(NOW - 100.0)
    assert reject(signed(now=NOW - slack * 1.1, nonce=4), receiver).reason == "before_boot"
    with pytest.raises(ValueError):
        receiver.start_listening(math.nan)
    # A codec that never listened (one that only sends) has no floor.
    assert Codec(secret=SECRET).decode(signed(now=NOW - 20.0), NOW) == SAMPLES["inference_request"]


def test_codec_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        Codec(secret=b"")
    with pytest.raises(ValueError):
        Codec(max_skew_s=0)
    with pytest.raises(ValueError):
        Codec(replay_cache_max=0)
    with pytest.raises(ValueError):
        Codec(format="xml")  # type: ignore[arg-type]


# -- reject counting -------------------------------------------------------------------


def test_reject_counter_rate_limits_per_reason() -> None:
    counter = RejectCounter()
    assert counter.counts == dict.fromkeys(REJECT_REASONS, 0)
    now = 1000.0
    assert counter.record("bad_signature", now) == 0  # first one: log, nothing suppressed
    for _ in range(5):
        now += 1.0
        assert counter.record("bad_signature", now) is None
    assert counter.record("oversized", now) == 0  # another reason has its own budget
    assert not counter.should_log("bad_signature", now)
    now = 1000.0 + codec_module.LOG_INTERVAL_S
    assert counter.should_log("bad_signature", now)
    assert counter.record("bad_signature", now) == 5  # the five suppressed in between
    assert counter.record("bad_signature", now + 1) is None
    assert counter.counts["bad_signature"] == 8
    assert counter.counts["oversized"] == 1
    assert counter.total == 9


def test_reject_counter_counts_other_keys_from_their_first() -> None:
    counter = RejectCounter(keys=())  # unexpected message types, in `Endpoint.unexpected`
    assert counter.counts == {}
    assert counter.record("schedule_response", 1000.0) == 0
    assert counter.record("schedule_response", 1001.0) is None
    assert counter.record("worker_report", 1001.0) == 0
    assert counter.counts == {"schedule_response": 2, "worker_report": 1}


# -- properties ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("secret", [None, SECRET], ids=["plain", "signed"])
@HYPOTHESIS
@given(data=st.binary(max_size=MAX_DATAGRAM_BYTES + 8))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes, secret: Any, fmt: Any) -> None:
    try:
        Codec(secret=secret, format=fmt).decode(data, NOW)
    except DecodeError as error:
        assert error.reason in REJECT_REASONS


@pytest.mark.parametrize("fmt", FORMATS)
@HYPOTHESIS
@given(
    index=st.integers(min_value=0),
    mutation=st.sampled_from(["flip", "drop", "insert", "truncate"]),
    byte=st.integers(0, 255),
    name=st.sampled_from(sorted(SAMPLES)),
)
def test_mutated_datagrams_raise_only_decode_error(
    fmt: Any, index: int, mutation: str, byte: int, name: str
) -> None:
    codec = Codec(format=fmt)
    data = codec.encode(SAMPLES[name], NOW, 0)
    i = index % len(data)
    mutated = {
        "flip": data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1 :],
        "drop": data[:i] + data[i + 1 :],
        "insert": data[:i] + bytes([byte]) + data[i:],
        "truncate": data[:i],
    }[mutation]
    try:
        codec.decode(mutated, NOW)
    except DecodeError as error:
        assert error.reason in REJECT_REASONS


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed envelopes with plausible but arbitrary bodies: reaches the validators."""
    name = draw(st.sampled_from(sorted(MESSAGE_TYPES)))
    body = json.loads(Codec().encode(SAMPLES[name], NOW, 0))["b"]
    for key in draw(st.lists(st.sampled_from([*body, "extra"]), max_size=3)):
        body[key] = draw(_json_values)
    return {"v": WIRE_VERSION, "t": name, "b": body}


@HYPOTHESIS
@given(document=_documents())
def test_arbitrary_bodies_raise_only_decode_error(document: dict[str, Any]) -> None:
    try:
        Codec().decode(json.dumps(document).encode(), NOW)
    except DecodeError as error:
        assert error.reason in REJECT_REASONS


def id_(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy


def _strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Any value of `cls` that its own field metadata allows."""
    hints = get_type_hints(cls)
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        hint, meta = hints[f.name], f.metadata
        if hint is bool:
            kwargs[f.name] = st.booleans()
        elif hint is int:
            kwargs[f.name] = st.integers(meta["min"], meta["max"])
        elif hint is float:
            kwargs[f.name] = st.floats(meta["min"], meta["max"])
        elif hint is str and "choices" in meta:
            kwargs[f.name] = st.sampled_from(meta["choices"])
        elif hint is str and "pattern" in meta:
            pattern = st.from_regex(f"\\A{meta['pattern']}\\Z")
            kwargs[f.name] = pattern.filter(lambda text, most=meta["max_len"]: len(text) <= most)
        elif hint is str:
            kwargs[f.name] = st.text(max_size=meta["max_len"])
        elif get_origin(hint) is dict:
            kwargs[f.name] = st.dictionaries(
                st.text(max_size=meta["key_max_len"]),
                st.integers(meta["min"], meta["max"]),
                max_size=meta["max_len"],
            )
        else:
            item = _strategy(get_args(hint)[0])
            kwargs[f.name] = st.lists(item, max_size=meta["max_len"]).map(tuple)
    return st.builds(cls, **kwargs)


@pytest.mark.parametrize("fmt", FORMATS)
@HYPOTHESIS
@given(message=st.sampled_from([_strategy(cls) for cls in MESSAGE_TYPES.values()]).flatmap(id_))
def test_every_valid_message_round_trips_or_is_oversized(fmt: Any, message: Message) -> None:
    codec = Codec(secret=SECRET, format=fmt)
    try:
        data = codec.encode(message, NOW, 1)
    except EncodeError as error:
        assert error.reason == "oversized"
        return
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert codec.decode(data, NOW) == message


# -- structure -------------------------------------------------------------------------


def test_validators_are_compiled_once_per_class() -> None:
    assert codec_module._spec_for(WorkerReport) is codec_module._spec_for(WorkerReport)
    assert set(codec_module._SPECS) >= {*MESSAGE_TYPES.values(), WorkerSummary}


def test_a_field_without_bounds_is_a_programming_error() -> None:
    @dataclasses.dataclass(frozen=True)
    class Unbounded:
        name: str

    with pytest.raises(TypeError, match="max_len"):
        codec_module._compile(Unbounded)


def test_codec_reads_no_clock_randomness_or_sockets() -> None:
    tree = ast.parse(Path(codec_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "json" in imported  # the scan sees imports at all
    assert imported.isdisjoint({"time", "random", "socket", "asyncio", "pickle", "marshal"})


# Fields that name a worker or a node, in every message that carries one.
ID_FIELDS = frozenset({"node_id", "worker_id", "source", "target", "origin"})


def test_every_worker_or_node_id_on_the_wire_has_the_id_pattern() -> None:
    seen = 0
    for cls in [*MESSAGE_TYPES.values(), MemberUpdate, MemberSummary, WorkerSummary]:
        for f in dataclasses.fields(cls):
            if f.name in ID_FIELDS:
                seen += 1
                assert "pattern" in f.metadata, f"{cls.__name__}.{f.name}"
    assert seen >= 16


def test_an_id_of_the_id_characters_at_the_longest_length_is_accepted() -> None:
    longest = "a-Z_0.9:" * (ID_MAX_LEN // 8)
    data = tamper(SMALL_REPORT, node_id=longest)
    assert Codec().decode(data, NOW).node_id == longest


def test_a_gossip_push_from_a_source_outside_the_id_characters_is_rejected() -> None:
    push = GossipPush(source="node-1", members=(), reports=())
    data = Codec().encode(push, NOW, 0).replace(b'"node-1"', b'"node 1"')
    assert reject(data).reason == "out_of_range"

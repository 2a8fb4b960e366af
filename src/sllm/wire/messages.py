"""The control-plane vocabulary: one frozen dataclass per UDP message type.

These classes are plain data. The core consumes and produces them, the codec
(`sllm.wire.codec`) turns them into bytes and back, and the simulator passes them
between virtual nodes without encoding them at all. Nothing here does I/O.

Every field carries its own bounds in `metadata`, so the codec can reject a value
out of range with the name of the field, and so that a reader sees the limit next
to the field it limits:

- ``min`` / ``max``: numeric bounds, inclusive;
- ``max_len``: the longest string, or the most entries in a mapping or tuple;
- ``key_max_len``: the longest key of a mapping (a mapping's ``min``/``max`` bound its values);
- ``pattern``: a regular expression a string must match whole (worker and node ids);
- ``choices``: the strings a field may hold.

Tiers are small integers (see `sllm.core.tiers.Tier`): 0 GPU, 1 host memory,
2 local disk, 3 remote store.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

from sllm.records import record

# Why these numbers: an id is a hostname, a UUID or a pod name, and 128 covers all
# three; a model name is a Hugging Face style "org/name-size-variant".
ID_MAX_LEN = 128
# The characters of a worker or node id. Hostnames and pod names (RFC 1123), UUIDs and
# ``worker-<host>-<pid>`` use only these; anything else (spaces, quotes, control or
# non-ASCII characters) is refused at decode, so an id is safe in a log line, a metric
# label and a status column, and one identity has one spelling.
ID_CHARACTERS = "A-Za-z0-9._:-"
ID_PATTERN = f"[{ID_CHARACTERS}]+"
MODEL_NAME_MAX_LEN = 96
REASON_MAX_LEN = 160
# A report names at most this many models. A worker with more summarizes: it keeps
# the ones in the fastest tiers and counts the rest in `models_omitted`, so the
# datagram does not grow with the number of checkpoints on disk. A count cannot
# promise the byte cap by itself (24 names of 96 characters are 2.4 kB): 24 names of
# about 32 characters fit a signed report, and a worker whose report is still too
# big (EncodeError, reason "oversized") moves more models into `models_omitted`.
REPORT_MAX_MODELS = 24
# One cluster-state page holds at most this many workers; the client pages through.
# Four summaries with 36-character ids and one model each came to 1,374 bytes signed,
# and the `ready` flag adds 14 bytes to each: four no longer fit the 1,400-byte cap,
# three take 1,188. With long model lists the coordinator sends fewer
# (EncodeError, reason "oversized").
STATE_PAGE_MAX_WORKERS = 3
# A worker summary names its fastest-tier models only: the page is for `status`, the
# full picture is in the reports.
SUMMARY_MAX_MODELS = 4
TIER_MAX = 3
# The most GPUs one worker reports: 8 per host is common, 16 and 72 (NVL72) exist.
GPUS_MAX = 1024
# One day: no schedule estimate or latency beyond it is meaningful on this wire.
SECONDS_MAX = 3600.0 * 24
TOKENS_MAX = 1_000_000
COUNT_MAX = 2**53  # the largest integer a JSON peer of any language keeps exactly

ACTIONS = ("serve", "cold_start", "migrate", "reject", "hold")


def _bounded(low: float, high: float) -> dict[str, Any]:
    return {"min": low, "max": high}


def _text(max_len: int) -> dict[str, Any]:
    return {"max_len": max_len}


def _identity(*, optional: bool = False) -> dict[str, Any]:
    """A worker or node id: `ID_PATTERN`, at most `ID_MAX_LEN`; `optional` allows ""."""
    return {"max_len": ID_MAX_LEN, "pattern": f"(?:{ID_PATTERN})?" if optional else ID_PATTERN}


PORT = _bounded(0, 65535)
COUNT = _bounded(0, COUNT_MAX)
FRACTION = _bounded(0.0, 1.0)
SECONDS = _bounded(0.0, SECONDS_MAX)
TOKENS = _bounded(0, TOKENS_MAX)
# model name -> tier; names are bounded like every other model name on the wire.
# The largest disk bandwidth a report carries: 1 TB/s, far beyond any disk; a worker whose
# cost model says more (a benchmark's instant loads) reports this, which is instant enough.
DISK_BANDWIDTH_MAX_BPS = 1e12

MODEL_TIERS = {
    "max_len": REPORT_MAX_MODELS,
    "key_max_len": MODEL_NAME_MAX_LEN,
    "min": 0,
    "max": TIER_MAX,
}
# A report says when at most this many of its loads end: the next few are the ones that
# requests wait for, and each costs about 50 bytes. A report that no longer fits one
# datagram drops them with the models they name (`sllm.wire.fit`).
LOADS_REPORTED_MAX = 4


@record
class Message:
    """Base of every wire message; `TYPE` is its name on the wire."""

    TYPE: ClassVar[str] = ""


@record
class LoadEnd:
    """A load on a worker and the seconds until it should end (nested in WorkerReport).

    A load that waits for room on the GPU (the models there are in use) has no known end:
    it counts as waiting as long again as it has so far.
    """

    model: str = field(metadata=_text(MODEL_NAME_MAX_LEN))
    ready_in_s: float = field(metadata=SECONDS)


@record
class WorkerReport(Message):
    """A worker's soft state, sent every REPORT_INTERVAL; the coordinator's whole view."""

    TYPE: ClassVar[str] = "worker_report"
    node_id: str = field(metadata=_identity())
    host: str = field(metadata=_text(ID_MAX_LEN))
    port: int = field(metadata=PORT)
    http_port: int = field(metadata=PORT)
    models: dict[str, int] = field(metadata=MODEL_TIERS)
    models_omitted: int = field(metadata=COUNT)
    queue_depth: int = field(metadata=COUNT)
    queue_capacity: int = field(metadata=COUNT)
    running: int = field(metadata=COUNT)
    slots: int = field(metadata=COUNT)
    gpu_utilization: float = field(metadata=FRACTION)
    memory_used: int = field(metadata=COUNT)
    memory_total: int = field(metadata=COUNT)
    load_backlog_s: float = field(metadata=SECONDS)
    ready: bool
    seq: int = field(metadata=COUNT)
    timestamp: float = field(metadata=_bounded(0.0, 1e12))
    # GPUs of the worker: a model that runs on more (tensor parallelism) is not placed here.
    gpus: int = field(default=1, metadata=_bounded(1, GPUS_MAX))
    # The worker's own disk-to-GPU bandwidth (its cost model, `sllm calibrate`), so that a
    # scheduler estimates a cold start from its disk at its speed; 0: not said, the
    # scheduler's cost model applies. At most DISK_BANDWIDTH_MAX_BPS.
    disk_bandwidth_Bps: float = field(default=0.0, metadata=_bounded(0.0, DISK_BANDWIDTH_MAX_BPS))
    # The loads under way or queued, the next first, and when each should end: `models`
    # lists their models as on the GPU (their requests should come here, not start another
    # load), and the estimate of such a request counts the wait (admission judges it).
    # Empty while nothing loads.
    loads: tuple[LoadEnd, ...] = field(default=(), metadata={"max_len": LOADS_REPORTED_MAX})


@record
class ScheduleRequest(Message):
    """Asks a scheduler (coordinator or any node) where a request should run."""

    TYPE: ClassVar[str] = "schedule_request"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    model: str = field(metadata=_text(MODEL_NAME_MAX_LEN))
    priority: int = field(metadata=_bounded(0, 9))
    prompt_tokens: int = field(metadata=TOKENS)
    output_tokens: int = field(metadata=TOKENS)


@record
class ScheduleResponse(Message):
    """The decision. `action` is one of ACTIONS; on `reject` the worker fields are empty.
    On `hold` too: the request waits in the scheduler's held queue, and the decision itself
    follows, at the latest `estimated_wait_s` later (`sllm.core.coordinator`)."""

    TYPE: ClassVar[str] = "schedule_response"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    worker_id: str = field(metadata=_identity(optional=True))
    host: str = field(metadata=_text(ID_MAX_LEN))
    port: int = field(metadata=PORT)
    http_port: int = field(metadata=PORT)
    action: str = field(metadata={"choices": ACTIONS})
    estimated_wait_s: float = field(metadata=SECONDS)
    reason: str = field(metadata=_text(REASON_MAX_LEN))


@record
class ClusterStateRequest(Message):
    """Asks for one page of the cluster state; pages keep each reply under the size cap."""

    TYPE: ClassVar[str] = "cluster_state_request"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    offset: int = field(metadata=COUNT)
    limit: int = field(metadata=_bounded(1, STATE_PAGE_MAX_WORKERS))


@record
class WorkerSummary:
    """One worker as `status` shows it (nested inside ClusterStateResponse)."""

    worker_id: str = field(metadata=_identity())
    host: str = field(metadata=_text(ID_MAX_LEN))
    port: int = field(metadata=PORT)
    models: dict[str, int] = field(metadata=MODEL_TIERS)
    queue_depth: int = field(metadata=COUNT)
    running: int = field(metadata=COUNT)
    gpu_utilization: float = field(metadata=FRACTION)
    last_report_age_s: float = field(metadata=SECONDS)
    # Whether the worker's last report said it takes work (false while it stops), so that
    # `status` tells a stopping worker from a serving one.
    ready: bool


@record
class ClusterStateResponse(Message):
    """Cluster-wide counters plus one page of workers, sorted by worker id."""

    TYPE: ClassVar[str] = "cluster_state_response"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    policy: str = field(metadata=_text(ID_MAX_LEN))
    active_workers: int = field(metadata=COUNT)
    total_requests: int = field(metadata=COUNT)
    # Placements, not requests: warm placements (the model on, or arriving on, the GPU)
    # and cold placements (`sllm.core.measures`). Wire version 1 named them so, and a field
    # renamed on the wire is refused by every peer of that version, so the names stay;
    # everything that reads them (`sllm.runtime.client.state_as_dict`) shows the new ones.
    cache_hits: int = field(metadata=COUNT)
    cold_starts: int = field(metadata=COUNT)
    rejected: int = field(metadata=COUNT)
    queue_depth_mean: float = field(metadata=_bounded(0.0, float(COUNT_MAX)))
    queue_depth_max: int = field(metadata=COUNT)
    gpu_utilization_mean: float = field(metadata=FRACTION)
    uptime_s: float = field(metadata=_bounded(0.0, 1e12))
    offset: int = field(metadata=COUNT)
    workers: tuple[WorkerSummary, ...] = field(metadata={"max_len": STATE_PAGE_MAX_WORKERS})
    # The cap on workers and the new workers refused since start (the cap was reached, or
    # a source announced too many): so `status` shows when the view is not the cluster.
    # Like every field, required: the wire keeps no optional fields (a peer of another
    # release fails with ``missing_field``, loudly; docs/operations.md, upgrades).
    max_workers: int = field(metadata=COUNT)
    refused_workers: int = field(metadata=COUNT)


@record
class InferenceRequest(Message):
    """Runs one request on a worker (the sim engine's data path over UDP).

    The worker answers the datagram's source address with an InferenceResult.
    """

    TYPE: ClassVar[str] = "inference_request"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    model: str = field(metadata=_text(MODEL_NAME_MAX_LEN))
    prompt_tokens: int = field(metadata=TOKENS)
    output_tokens: int = field(metadata=TOKENS)


@record
class InferenceResult(Message):
    """How one request ended on a worker, with its latency breakdown in seconds."""

    TYPE: ClassVar[str] = "inference_result"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    worker_id: str = field(metadata=_identity(optional=True))
    ok: bool
    reason: str = field(metadata=_text(REASON_MAX_LEN))
    cold_start: bool
    queue_s: float = field(metadata=SECONDS)
    ttft_s: float = field(metadata=SECONDS)
    e2e_s: float = field(metadata=SECONDS)
    # Output tokens produced before the worker moved the request off (reason "migrated"):
    # its client places the rest, the prompt and these tokens as the new prompt.
    generated_tokens: int = field(default=0, metadata=TOKENS)


@record
class InferenceStarted(Message):
    """A worker began running a request sent by datagram (told to the same address).

    Why: when a worker dies, its client retries what had not started yet and fails what
    had (`sllm.core.outstanding`); this is how the client tells the two apart.
    """

    TYPE: ClassVar[str] = "inference_started"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    worker_id: str = field(metadata=_identity())


# -- gossip (decentralized mode; see sllm.core.membership) --------------------------------
#
# Member states on the wire, like tiers: 0 alive, 1 suspect, 2 dead, 3 left.
MEMBER_STATE_MAX = 3
# Piggyback lists are bounded by count here and by bytes in the sender (it fills a message
# up to the datagram cap). The smallest member update is about 70 bytes, so 24 cannot all
# fit a 1,400-byte datagram anyway; a report trimmed for gossip is 400-600 bytes, so at
# most two ride along in practice.
PIGGYBACK_MAX_MEMBERS = 24
PIGGYBACK_MAX_REPORTS = 4
# A member-state page for `status --node`: six summaries of ~150 bytes plus the counters
# fit a signed datagram with ids of 40 characters; longer ids make the node send fewer.
MEMBER_PAGE_MAX = 6
MEMBER_STATE = _bounded(0, MEMBER_STATE_MAX)
SEQ = COUNT
RATE = _bounded(0.0, 1e12)  # bytes per second


@record
class MemberUpdate:
    """What one node believes about one member (nested in gossip messages).

    `origin` names the node that declared a suspicion or a death (Lifeguard counts
    independent suspicions by it); it is empty for alive and left.
    """

    node_id: str = field(metadata=_identity())
    host: str = field(metadata=_text(ID_MAX_LEN))
    port: int = field(metadata=PORT)
    incarnation: int = field(metadata=COUNT)
    state: int = field(metadata=MEMBER_STATE)
    origin: str = field(metadata=_identity(optional=True))


_MEMBERS = {"max_len": PIGGYBACK_MAX_MEMBERS}
_REPORTS = {"max_len": PIGGYBACK_MAX_REPORTS}


@record
class GossipPing(Message):
    """SWIM direct probe of `target` (a node id: a restarted node at the address ignores it)."""

    TYPE: ClassVar[str] = "gossip_ping"
    seq: int = field(metadata=SEQ)
    source: str = field(metadata=_identity())
    target: str = field(metadata=_identity())
    members: tuple[MemberUpdate, ...] = field(metadata=_MEMBERS)
    reports: tuple[WorkerReport, ...] = field(metadata=_REPORTS)


@record
class GossipAck(Message):
    """Answers a ping with its `seq`; `source` is the member shown alive (the target)."""

    TYPE: ClassVar[str] = "gossip_ack"
    seq: int = field(metadata=SEQ)
    source: str = field(metadata=_identity())
    members: tuple[MemberUpdate, ...] = field(metadata=_MEMBERS)
    reports: tuple[WorkerReport, ...] = field(metadata=_REPORTS)


@record
class GossipPingReq(Message):
    """SWIM indirect probe: please ping `target` at its address and relay the ack."""

    TYPE: ClassVar[str] = "gossip_ping_req"
    seq: int = field(metadata=SEQ)
    source: str = field(metadata=_identity())
    target: str = field(metadata=_identity())
    target_host: str = field(metadata=_text(ID_MAX_LEN))
    target_port: int = field(metadata=PORT)
    members: tuple[MemberUpdate, ...] = field(metadata=_MEMBERS)
    reports: tuple[WorkerReport, ...] = field(metadata=_REPORTS)


@record
class GossipNack(Message):
    """Lifeguard: the relay of an indirect probe heard nothing from the target in time."""

    TYPE: ClassVar[str] = "gossip_nack"
    seq: int = field(metadata=SEQ)
    source: str = field(metadata=_identity())


@record
class GossipSync(Message):
    """Push-pull anti-entropy (and join): a bounded sample of members and load reports.

    The receiver merges it and, unless `reply` is set, answers with its own sample.
    """

    TYPE: ClassVar[str] = "gossip_sync"
    source: str = field(metadata=_identity())
    reply: bool
    members: tuple[MemberUpdate, ...] = field(metadata=_MEMBERS)
    reports: tuple[WorkerReport, ...] = field(metadata=_REPORTS)


@record
class GossipPush(Message):
    """memberlist's gossip round: queued updates pushed to a few random members, no reply."""

    TYPE: ClassVar[str] = "gossip_push"
    source: str = field(metadata=_identity())
    members: tuple[MemberUpdate, ...] = field(metadata=_MEMBERS)
    reports: tuple[WorkerReport, ...] = field(metadata=_REPORTS)


# -- joins: the full state for a joiner (decentralized mode at 1,000 nodes) ----------------


@record
class GossipJoin(Message):
    """A node that knows no other live member asks a seed for the whole cluster state.

    Carries the joiner's own entry (and report) like a sync; the seed merges it and
    answers with `GossipJoinState` pages instead of a bounded sample, so a joiner knows
    every member within a round trip and a few milliseconds of pacing, not in O(N)
    syncs.
    """

    TYPE: ClassVar[str] = "gossip_join"
    source: str = field(metadata=_identity())
    members: tuple[MemberUpdate, ...] = field(metadata=_MEMBERS)
    reports: tuple[WorkerReport, ...] = field(metadata=_REPORTS)


@record
class GossipJoinState(Message):
    """One page of a seed's member list and load reports, sent to a joiner.

    `page` counts from 0 and `pages` is how many the seed sends; the joiner merges each
    as it comes (pages are independent) without re-gossiping what it learns: the cluster
    knows it already.
    """

    TYPE: ClassVar[str] = "gossip_join_state"
    source: str = field(metadata=_identity())
    page: int = field(metadata=COUNT)
    pages: int = field(metadata=COUNT)
    members: tuple[MemberUpdate, ...] = field(metadata=_MEMBERS)
    reports: tuple[WorkerReport, ...] = field(metadata=_REPORTS)


@record
class LoadProbe(Message):
    """Sparrow-style probe: a scheduling node asks a candidate for its current load."""

    TYPE: ClassVar[str] = "load_probe"
    request_id: str = field(metadata=_text(ID_MAX_LEN))


@record
class LoadProbeReply(Message):
    """The candidate's fresh report: one, whole (shrunk only to fit the datagram)."""

    TYPE: ClassVar[str] = "load_probe_reply"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    reports: tuple[WorkerReport, ...] = field(metadata={"max_len": 1})


@record
class MemberStateRequest(Message):
    """Asks a node for its gossip counters and one page of its member list."""

    TYPE: ClassVar[str] = "member_state_request"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    offset: int = field(metadata=COUNT)
    limit: int = field(metadata=_bounded(1, MEMBER_PAGE_MAX))


@record
class MemberSummary:
    """One member as a node sees it; ages in seconds (nested in MemberStateResponse).

    `info_age_s`: since the node last heard from or about the member (a probe answered, a
    newer update accepted); `report_age_s`: since its last load report arrived, when
    `reported`.
    """

    node_id: str = field(metadata=_identity())
    host: str = field(metadata=_text(ID_MAX_LEN))
    port: int = field(metadata=PORT)
    state: int = field(metadata=MEMBER_STATE)
    incarnation: int = field(metadata=COUNT)
    info_age_s: float = field(metadata=SECONDS)
    reported: bool
    report_age_s: float = field(metadata=SECONDS)


@record
class MemberStateResponse(Message):
    """A node's membership counters and one page of members sorted by id."""

    TYPE: ClassVar[str] = "member_state_response"
    request_id: str = field(metadata=_text(ID_MAX_LEN))
    node_id: str = field(metadata=_identity())
    incarnation: int = field(metadata=COUNT)
    alive: int = field(metadata=COUNT)
    suspect: int = field(metadata=COUNT)
    dead: int = field(metadata=COUNT)
    left: int = field(metadata=COUNT)
    false_suspicions: int = field(metadata=COUNT)
    refuted: int = field(metadata=COUNT)
    local_health: int = field(metadata=COUNT)
    bytes_sent_per_s: float = field(metadata=RATE)
    bytes_received_per_s: float = field(metadata=RATE)
    rejected_datagrams: int = field(metadata=COUNT)
    offset: int = field(metadata=COUNT)
    members: tuple[MemberSummary, ...] = field(metadata={"max_len": MEMBER_PAGE_MAX})
    # The cap on members and the new members refused since start, as for workers above.
    max_members: int = field(metadata=COUNT)
    refused_members: int = field(metadata=COUNT)


# -- the model registry, spread by gossip (decentralized mode) -----------------------------

# A spec (a model's catalog entry as canonical JSON) travels in pieces of at most this many
# characters, and the sender cuts them so each also encodes to at most this many bytes
# (JSON escapes a quote in two): with the longest ids in its header, a part still fits
# the cap signed (1,140 bytes of 1,347).
SPEC_PART_MAX_LEN = 600
# 64 parts of up to 600 characters: ~38 kB, a model of ~250 checkpoint shards with their
# hashes.
SPEC_PARTS_MAX = 64
# Parts in one datagram: one full part and the small ones (tombstones) beside it; the
# sender packs as many as fit (`sllm.core.registry_gossip`).
ENTRY_PARTS_PER_MESSAGE_MAX = 8
# Lowercase hex, at most a sha256 (a wrong one only fails the check it is for).
HEX_PATTERN = "[0-9a-f]*"
SHA256_HEX = {"max_len": 64, "pattern": HEX_PATTERN}


@record
class RegistryEntryPart:
    """One piece of one versioned registry entry: last writer wins, by (version, writer)."""

    name: str = field(metadata=_text(MODEL_NAME_MAX_LEN))
    version: int = field(metadata=COUNT)
    writer: str = field(metadata=_identity())
    deleted: bool
    spec_sha256: str = field(metadata=SHA256_HEX)  # of the whole spec; "" for a tombstone
    part: int = field(metadata=_bounded(0, SPEC_PARTS_MAX - 1))
    parts: int = field(metadata=_bounded(1, SPEC_PARTS_MAX))
    text: str = field(metadata=_text(SPEC_PART_MAX_LEN))


@record
class RegistryEntries(Message):
    """Registry entries, whole or in parts: a rumor of a change, or an anti-entropy answer."""

    TYPE: ClassVar[str] = "registry_entries"
    source: str = field(metadata=_identity())
    entries: tuple[RegistryEntryPart, ...] = field(
        metadata={"max_len": ENTRY_PARTS_PER_MESSAGE_MAX}
    )


@record
class RegistryDigest(Message):
    """Anti-entropy: a hash of every entry's (name, version, writer, deleted) the sender
    holds. A receiver holding something else answers with its entries, and with its own
    digest unless `reply` is set, so the two exchange what differs."""

    TYPE: ClassVar[str] = "registry_digest"
    source: str = field(metadata=_identity())
    digest: str = field(metadata=SHA256_HEX)
    entries: int = field(metadata=COUNT)
    reply: bool


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        WorkerReport,
        ScheduleRequest,
        ScheduleResponse,
        ClusterStateRequest,
        ClusterStateResponse,
        InferenceRequest,
        InferenceResult,
        InferenceStarted,
        GossipPing,
        GossipAck,
        GossipPingReq,
        GossipNack,
        GossipSync,
        GossipPush,
        LoadProbe,
        LoadProbeReply,
        MemberStateRequest,
        MemberStateResponse,
        GossipJoin,
        GossipJoinState,
        RegistryEntries,
        RegistryDigest,
    )
}

"""The control-plane wire: message vocabulary (`messages`) and bytes <-> messages (`codec`)."""

from sllm.wire.codec import (
    MAX_DATAGRAM_BYTES,
    REJECT_REASONS,
    WIRE_VERSION,
    Codec,
    DecodeError,
    EncodeError,
    RejectCounter,
)
from sllm.wire.messages import (
    MESSAGE_TYPES,
    ClusterStateRequest,
    ClusterStateResponse,
    InferenceRequest,
    InferenceResult,
    Message,
    ScheduleRequest,
    ScheduleResponse,
    WorkerReport,
    WorkerSummary,
)

__all__ = [
    "MAX_DATAGRAM_BYTES",
    "MESSAGE_TYPES",
    "REJECT_REASONS",
    "WIRE_VERSION",
    "ClusterStateRequest",
    "ClusterStateResponse",
    "Codec",
    "DecodeError",
    "EncodeError",
    "InferenceRequest",
    "InferenceResult",
    "Message",
    "RejectCounter",
    "ScheduleRequest",
    "ScheduleResponse",
    "WorkerReport",
    "WorkerSummary",
]

"""The front door's answer to the coordinator's admission deadline: 429 with Retry-After."""

from __future__ import annotations

from sllm.api.gateway import _rejection
from sllm.core.coordinator import OVER_DEADLINE, OVER_DEADLINE_RETRY_MAX_S
from sllm.wire.messages import ScheduleResponse

MODEL = "llama-2-7b"


def test_the_front_door_answers_an_over_deadline_rejection_with_429_and_retry_after() -> None:
    def rejected(wait: float) -> ScheduleResponse:
        return ScheduleResponse(
            request_id="r",
            worker_id="",
            host="",
            port=0,
            http_port=0,
            action="reject",
            estimated_wait_s=wait,
            reason=OVER_DEADLINE,
        )

    error = _rejection(rejected(12.2), MODEL)
    assert (error.status, error.code, error.retry_after_s) == (429, "overloaded", 13)
    assert _rejection(rejected(5000.0), MODEL).retry_after_s == OVER_DEADLINE_RETRY_MAX_S

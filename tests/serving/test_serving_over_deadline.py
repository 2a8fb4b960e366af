"""The front door's answer to the coordinator's admission deadline: 429 with Retry-After."""

from __future__ import annotations

from sllm.api.gateway import _rejection
from sllm.core.coordinator import OVER_DEADLINE, OVER_DEADLINE_RETRY_MAX_S, refusal

MODEL = "llama-2-7b"


def test_the_front_door_answers_an_over_deadline_rejection_with_429_and_retry_after() -> None:
    error = _rejection(refusal("r", OVER_DEADLINE, 12.2), MODEL)
    assert (error.status, error.code, error.retry_after_s) == (429, "overloaded", 13)
    assert (
        _rejection(refusal("r", OVER_DEADLINE, 5000.0), MODEL).retry_after_s
        == OVER_DEADLINE_RETRY_MAX_S
    )

"""Admission of new workers and members: the cap and the rate per source, on a fake clock."""

from __future__ import annotations

import random

import pytest

from sllm.core import admission as admission_module
from sllm.core.admission import NOTICE_INTERVAL_S, Admission
from sllm.core.coordinator import Coordinator
from sllm.core.cost import CostModel
from sllm.wire.messages import ClusterStateRequest, WorkerReport


def test_the_cap_refuses_only_when_the_table_is_full() -> None:
    gate = Admission(capacity=3)
    assert gate.admit(size=2, source="127.0.0.1", now=0.0)
    assert not gate.admit(size=3, source="127.0.0.1", now=0.0)
    assert not gate.admit(size=3, source="", now=0.0)  # no source: the cap still holds
    assert (gate.refused_full, gate.refused_rate) == (2, 0)


def test_a_source_gets_its_burst_then_its_rate() -> None:
    gate = Admission(capacity=100, per_source_per_s=2.0, per_source_burst=3)
    assert [gate.admit(size=0, source="127.0.0.1", now=0.0) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert gate.admit(size=0, source="127.0.0.2", now=0.0)  # its own bucket
    assert not gate.admit(size=0, source="127.0.0.1", now=0.4)  # 0.8 of a token
    assert gate.admit(size=0, source="127.0.0.1", now=0.5)  # one token at 2 a second
    assert not gate.admit(size=0, source="127.0.0.1", now=0.5)
    assert gate.admit(size=0, source="127.0.0.1", now=0.0) is False  # the clock stepped back
    # A long silence refills the burst, never more.
    assert [gate.admit(size=0, source="127.0.0.1", now=100.0) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert gate.admit(size=0, source="", now=100.0)  # no source: no rate
    assert gate.refused_rate == 5


def test_the_table_of_sources_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_module, "SOURCES_MAX", 4)
    gate = Admission(capacity=100, per_source_per_s=0.0, per_source_burst=1)
    for host in range(10):
        assert gate.admit(size=0, source=f"127.0.0.{host}", now=0.0)
    assert len(gate._buckets) == 4


def test_refusals_are_noticed_at_most_once_per_interval() -> None:
    gate = Admission(capacity=1)
    assert gate.notice("worker", 0.0) is None  # nothing refused
    for _ in range(5):
        gate.admit(size=1, source="127.0.0.1", now=0.0)
    first = gate.notice("worker", 0.0)
    assert first is not None and first["refused"] == 5 and first["what"] == "worker"
    gate.admit(size=1, source="127.0.0.1", now=1.0)
    assert gate.notice("worker", 1.0) is None  # too soon
    later = gate.notice("worker", NOTICE_INTERVAL_S)
    assert later is not None and later["refused"] == 1 and later["refused_full"] == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity": 0},
        {"capacity": 1, "per_source_burst": 0},
        {"capacity": 1, "per_source_per_s": -1.0},
        {"capacity": 1, "per_source_per_s": float("nan")},
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Admission(**kwargs)  # type: ignore[arg-type]


# -- the coordinator ------------------------------------------------------------------

TIMEOUT = 10.0


def report(worker_id: str, seq: int = 1) -> WorkerReport:
    return WorkerReport(
        node_id=worker_id,
        host="127.0.0.1",
        port=9000 + seq % 100,
        http_port=0,
        models={},
        models_omitted=0,
        queue_depth=2,
        queue_capacity=8,
        running=1,
        slots=4,
        gpu_utilization=0.25,
        memory_used=3,
        memory_total=80,
        load_backlog_s=0.5,
        ready=True,
        seq=seq,
        timestamp=1000.0 + seq,
    )


def coordinator(capacity: int, burst: int = 1000) -> Coordinator:
    gate = Admission(capacity=capacity, per_source_per_s=1.0, per_source_burst=burst)
    return Coordinator(
        "least-loaded", {}, CostModel(), TIMEOUT, random.Random(1), 0.0, admission=gate
    )


def test_a_full_coordinator_refuses_new_workers_keeps_the_known_and_says_so() -> None:
    core = coordinator(capacity=2)
    for name in ("w-a", "w-b"):
        assert core.handle(report(name), 0.0, source="127.0.0.1").notices[0].event == (
            "worker_joined"
        )
    refused = core.handle(report("w-c"), 0.0, source="127.0.0.1")
    assert [notice.event for notice in refused.notices] == ["identities_refused"]
    assert core.handle(report("w-d"), 0.0, source="127.0.0.1").notices == ()  # rate-limited
    assert "w-c" not in core.view and len(core.view) == 2
    # Known workers keep reporting and stay.
    core.handle(report("w-a", seq=2), 5.0, source="127.0.0.1")
    state = core.cluster_state(ClusterStateRequest(request_id="r", offset=0, limit=4), 5.0)
    assert (state.active_workers, state.max_workers, state.refused_workers) == (2, 2, 2)
    # Expiry (the runtime's timer) makes room again: w-b went silent at 0.0.
    assert [notice.fields["worker"] for notice in core.expire(TIMEOUT + 1.0)] == ["w-b"]
    assert core.handle(report("w-c", seq=3), TIMEOUT + 1.0).notices[0].event == "worker_joined"
    assert sorted(entry.worker_id for entry in core.view.entries()) == ["w-a", "w-c"]


def test_one_source_cannot_register_more_than_its_burst_at_once() -> None:
    core = coordinator(capacity=100, burst=3)
    for index in range(10):
        core.handle(report(f"w-{index}"), 0.0, source="127.0.0.5")
    core.handle(report("w-other"), 0.0, source="127.0.0.6")
    assert len(core.view) == 4
    assert core.view.admission.refused_rate == 7

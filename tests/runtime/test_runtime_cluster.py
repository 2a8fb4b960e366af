"""Runtime tier: a coordinator and workers in one event loop, over real UDP on 127.0.0.1.

Covers the live data path end to end (reports -> view -> placement -> inference on the
sim engine), the goodbye report a stopping worker sends, and `get_cluster_state` paging
through more workers than one datagram holds.
"""

from __future__ import annotations

import time
from typing import Any

from sllm.core.tiers import Tier
from sllm.runtime.client import get_cluster_state
from sllm.wire import (
    ClusterStateRequest,
    ClusterStateResponse,
    InferenceRequest,
    InferenceResult,
    ScheduleRequest,
    ScheduleResponse,
    WorkerReport,
)
from sllm.wire.messages import MODEL_NAME_MAX_LEN, STATE_PAGE_MAX_WORKERS, SUMMARY_MAX_MODELS

MODEL = "llama-3.2-1b"
REPLY_TIMEOUT_S = 2.0
JOIN_TIMEOUT_S = 3.0


async def test_workers_join_and_a_placed_request_runs(local_cluster, eventually) -> None:
    async with local_cluster(workers=2, policy="least-loaded") as cluster:
        await eventually(lambda: cluster.known() == {"w1", "w2"}, JOIN_TIMEOUT_S, "both joined")

        decision = await cluster.client.request(
            ScheduleRequest(
                request_id="req-1", model=MODEL, priority=0, prompt_tokens=128, output_tokens=16
            ),
            cluster.address,
            ScheduleResponse,
            REPLY_TIMEOUT_S,
        )
        assert decision.request_id == "req-1"
        assert decision.worker_id in {"w1", "w2"}
        # Prestaged in host memory, not on the GPU: a cold start, from host memory.
        assert decision.action == "cold_start"
        chosen = next(w for w in cluster.workers if w.state.worker_id == decision.worker_id)
        # The worker let the coordinator fill in its host from the datagram's source.
        assert (decision.host, decision.port) == chosen.address

        started = time.monotonic()
        result = await cluster.client.request(
            InferenceRequest(request_id="req-1", model=MODEL, prompt_tokens=128, output_tokens=16),
            (decision.host, decision.port),
            InferenceResult,
            timeout=10.0,
        )
        elapsed = time.monotonic() - started

    assert result.ok, result.reason
    assert result.worker_id == decision.worker_id
    assert result.cold_start
    load_s = chosen.state.cost.load_time(chosen.state.catalog[MODEL].size_bytes, Tier.HOST)
    # A cold start waits for the load, then runs: queue <= ttft <= e2e, and e2e spans
    # the host->GPU load; the client saw at least what the worker measured.
    assert load_s * 0.9 <= result.queue_s <= result.ttft_s <= result.e2e_s
    assert result.e2e_s <= elapsed + 0.05
    assert elapsed < load_s + 2.0


async def test_least_loaded_spreads_a_burst(local_cluster, eventually) -> None:
    async with local_cluster(workers=2, policy="least-loaded") as cluster:
        await eventually(lambda: len(cluster.known()) == 2, JOIN_TIMEOUT_S, "both joined")
        decisions = [
            await cluster.client.request(
                ScheduleRequest(
                    request_id=f"burst-{i}",
                    model=MODEL,
                    priority=0,
                    prompt_tokens=64,
                    output_tokens=8,
                ),
                cluster.address,
                ScheduleResponse,
                REPLY_TIMEOUT_S,
            )
            for i in range(6)
        ]
    assert {d.worker_id for d in decisions} == {"w1", "w2"}
    assert cluster.coordinator.core.counters.requests == 6


async def test_a_stopping_worker_says_goodbye(local_cluster, eventually) -> None:
    async with local_cluster(workers=2, worker_timeout=30.0) as cluster:
        await eventually(lambda: len(cluster.known()) == 2, JOIN_TIMEOUT_S, "both joined")
        leaving = cluster.workers[0]
        await leaving.stop()
        cluster.workers.remove(leaving)

        def marked_not_ready() -> bool:
            entry = cluster.coordinator.core.view.get("w1")
            return entry is not None and not entry.report.ready

        # Long before the 30 s timeout, the goodbye report stops placements on w1.
        await eventually(marked_not_ready, 2.0, "w1 reported ready=false")
        decisions = [
            await cluster.client.request(
                ScheduleRequest(
                    request_id=f"after-{i}",
                    model=MODEL,
                    priority=0,
                    prompt_tokens=64,
                    output_tokens=8,
                ),
                cluster.address,
                ScheduleResponse,
                REPLY_TIMEOUT_S,
            )
            for i in range(4)
        ]
    assert {d.worker_id for d in decisions} == {"w2"}


def synthetic_report(index: int, models: dict[str, int], node_id: str = "") -> WorkerReport:
    return WorkerReport(
        node_id=node_id or f"synthetic-{index:02d}",
        host="127.0.0.1",
        port=20_000 + index,
        http_port=0,
        models=models,
        models_omitted=0,
        queue_depth=index,
        queue_capacity=64,
        running=index % 3,
        slots=8,
        gpu_utilization=index / 10,
        memory_used=0,
        memory_total=141 * 10**9,
        load_backlog_s=0.0,
        ready=True,
        seq=1,
        timestamp=time.time(),
    )


def count_pages(server: Any) -> list[int]:
    """Record the offset of every cluster-state page `server` answers."""
    offsets: list[int] = []
    answer = server.core.cluster_state

    def counting(request: ClusterStateRequest, now: float) -> ClusterStateResponse:
        offsets.append(request.offset)
        page: ClusterStateResponse = answer(request, now)
        return page

    server.core.cluster_state = counting
    return offsets


async def test_cluster_state_pages_through_every_worker(local_cluster, check_status) -> None:
    async with local_cluster(workers=0, worker_timeout=30.0) as cluster:
        server = cluster.coordinator
        for index in range(10):
            server.core.handle(synthetic_report(index, {MODEL: 0}), time.monotonic())
        # One placement: least-loaded picks synthetic-00 (load 0), which has MODEL on its
        # GPU, so the request is a warm placement.
        decision = await cluster.client.request(
            ScheduleRequest(
                request_id="one", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
            ),
            cluster.address,
            ScheduleResponse,
            2.0,
        )
        assert (decision.worker_id, decision.action) == ("synthetic-00", "serve")

        offsets = count_pages(server)
        state = await get_cluster_state(cluster.client, cluster.address, REPLY_TIMEOUT_S)

    ids = [f"synthetic-{i:02d}" for i in range(10)]
    check_status(state, ids)
    assert offsets == list(range(0, 10, STATE_PAGE_MAX_WORKERS))  # full pages, in order
    assert state["total_requests"] == 1
    assert (state["warm_placements"], state["cold_placements"]) == (1, 0)
    assert state["warm_placement_rate"] == state["cache_hit_rate"] == 1.0
    assert state["queue_depth"]["per_worker"] == {f"synthetic-{i:02d}": i for i in range(10)}
    assert state["queue_depth"]["mean"] == 4.5
    assert state["queue_depth"]["max"] == 9
    assert state["gpu_utilization"]["mean"] == 0.45
    assert state["gpu_utilization"]["per_worker"]["synthetic-07"] == 0.7
    first = state["workers"][0]
    assert first["address"] == "127.0.0.1:20000"
    assert first["models"] == {MODEL: "gpu"}
    assert first["last_report_age_s"] < 5.0


async def test_cluster_state_pages_shrink_to_fit_long_names(local_cluster, check_status) -> None:
    """Full pages of workers with long ids and model names do not fit one datagram: the
    coordinator sends fewer per page and the client still collects every worker."""
    models = {
        f"org-{j}/" + "m" * (MODEL_NAME_MAX_LEN - 6): j % 4 for j in range(SUMMARY_MAX_MODELS)
    }
    ids = [f"{i:02d}-" + "w" * 100 for i in range(10)]
    async with local_cluster(workers=0, worker_timeout=30.0) as cluster:
        for index, node_id in enumerate(ids):
            report = synthetic_report(index, models, node_id)
            cluster.coordinator.core.handle(report, time.monotonic())
        offsets = count_pages(cluster.coordinator)
        state = await get_cluster_state(cluster.client, cluster.address, REPLY_TIMEOUT_S)

    check_status(state, ids)
    assert len(offsets) > 10 // STATE_PAGE_MAX_WORKERS + 1  # pages were shrunk
    assert offsets == sorted(set(offsets))  # each offset asked once, in order
    assert all(len(worker["models"]) == SUMMARY_MAX_MODELS for worker in state["workers"])

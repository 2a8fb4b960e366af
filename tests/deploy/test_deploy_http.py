"""The services' HTTP listener in the test's event loop: health, readiness, metrics, shutdown.

A coordinator and a worker run in-process on 127.0.0.1 with UDP and HTTP ports 0, and
httpx talks to them. Covers what the probes and Prometheus rely on: ``/healthz`` always
200, ``/readyz`` 503 until a worker is known, ``/metrics`` with the guide's metrics read
from the core, the worker's histograms fed by a real request, a bounded stop with a
connection open, and UDP service going on when HTTP cannot start (extra missing, port
taken).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from enum import Enum

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.runtime import monitoring
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.http import STOP_TIMEOUT_S, HttpListener
from sllm.runtime.metrics import GossipMembersCollector
from sllm.runtime.udp import Endpoint
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec, InferenceRequest, InferenceResult, ScheduleRequest, ScheduleResponse

CATALOG = served_catalog()
MODEL = "llama-3.2-1b"  # prestaged in host memory: a ~0.6 s cold start
JOIN_TIMEOUT_S = 3.0
REPORT_INTERVAL_S = 0.1
WORKER_TIMEOUT_S = 0.6


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@contextlib.asynccontextmanager
async def services(
    worker_http: bool = True,
) -> AsyncIterator[tuple[CoordinatorServer, WorkerServer, httpx.AsyncClient]]:
    cost = CostModel()
    coordinator = CoordinatorServer(
        "127.0.0.1", 0, Codec(), "least-loaded", CATALOG, cost, WORKER_TIMEOUT_S, http_port=0
    )
    await coordinator.start()
    worker = WorkerServer(
        "w1",
        "127.0.0.1",
        0,
        coordinator.address,
        Codec(),
        CATALOG,
        cost,
        WorkerResources(),
        REPORT_INTERVAL_S,
        prestage=Tier.HOST,
        http_port=0 if worker_http else None,
    )
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            yield coordinator, worker, client
    finally:
        await worker.stop()
        await coordinator.stop()


def url(server: CoordinatorServer | WorkerServer, path: str) -> str:
    assert server.http is not None
    return f"http://127.0.0.1:{server.http.port}{path}"


async def test_coordinator_is_live_at_once_and_ready_once_a_worker_reports(eventually) -> None:
    async with services() as (coordinator, worker, client):
        health = await client.get(url(coordinator, "/healthz"))
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        not_ready = await client.get(url(coordinator, "/readyz"))
        assert not_ready.status_code == 503
        assert not_ready.json()["reason"] == "no ready workers"

        await worker.start()

        async def ready() -> bool:
            return (await client.get(url(coordinator, "/readyz"))).status_code == 200

        await eventually(ready, JOIN_TIMEOUT_S, "coordinator ready")
        assert (await client.get(url(worker, "/readyz"))).status_code == 200
        # The worker advertises its HTTP port in its reports.
        entry = coordinator.core.view.get("w1")
        assert entry is not None
        assert worker.http is not None
        assert entry.report.http_port == worker.http.port

        # A stopped worker goes out of the coordinator's readiness with its last report.
        await worker.stop()

        async def not_ready_again() -> bool:
            return (await client.get(url(coordinator, "/readyz"))).status_code == 503

        await eventually(not_ready_again, WORKER_TIMEOUT_S + 2.0, "coordinator not ready")


async def test_metrics_read_the_core_and_a_request_feeds_the_histograms(eventually) -> None:
    async with services() as (coordinator, worker, client):
        await worker.start()
        await eventually(lambda: "w1" in coordinator.core.view, JOIN_TIMEOUT_S, "w1 joined")
        endpoint = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        try:
            decision = await endpoint.request(
                ScheduleRequest(
                    request_id="m-1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
                ),
                coordinator.address,
                ScheduleResponse,
                2.0,
            )
            assert decision.action == "cold_start"
            result = await endpoint.request(
                InferenceRequest(request_id="m-1", model=MODEL, prompt_tokens=64, output_tokens=8),
                worker.address,
                InferenceResult,
                10.0,
            )
            assert result.ok, result.reason
            endpoint.send(
                ScheduleRequest(
                    request_id="m-2", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
                ),
                coordinator.address,
            )
            # One bad datagram, counted by reason.
            assert endpoint.transport is not None
            endpoint.transport.sendto(b"not a datagram", coordinator.address)
            await eventually(
                lambda: (
                    coordinator.endpoint is not None and coordinator.endpoint.rejects.total == 1
                ),
                2.0,
                "reject counted",
            )
        finally:
            endpoint.close()

        response = await client.get(url(coordinator, "/metrics"))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        counters = coordinator.core.counters
        assert found[("sllm_requests_total", (("action", "cold_start"), ("model", MODEL)))] == 1
        assert found[("sllm_cache_hits_total", ())] == counters.warm_placements
        assert found[("sllm_cold_placements_total", ())] == counters.cold_placements == 1
        assert found[("sllm_worker_reports_total", ())] == counters.reports > 0
        assert found[("sllm_active_workers", ())] == 1
        assert ("sllm_worker_queue_depth", (("worker", "w1"),)) in found
        assert 0.0 <= found[("sllm_worker_slot_busy_ratio", (("worker", "w1"),))] <= 1.0
        assert found[("sllm_ready_workers", ())] == 1
        assert found[("sllm_datagrams_rejected_total", (("reason", "bad_encoding"),))] == 1
        assert found[("sllm_placement_policy_info", (("policy", "least-loaded"),))] == 1

        text = (await client.get(url(worker, "/metrics"))).text
        mine = samples(text)
        cold = (("cold_start", "true"),)
        assert mine[("sllm_request_ttft_seconds_count", cold)] == 1
        assert mine[("sllm_request_ttft_seconds_sum", cold)] == pytest.approx(result.ttft_s)
        assert mine[("sllm_request_duration_seconds_sum", cold)] == pytest.approx(result.e2e_s)
        assert mine[("sllm_request_ttft_seconds_count", (("cold_start", "false"),))] == 0
        assert mine[("sllm_model_load_seconds_count", (("tier", "host"),))] == 1
        assert mine[("sllm_model_load_seconds_count", (("tier", "remote"),))] == 0
        assert mine[("sllm_worker_requests_accepted_total", ())] == 1
        assert mine[("sllm_worker_requests_completed_total", ())] == 1
        assert mine[("sllm_worker_requests_migrated_total", ())] == 0
        assert mine[("sllm_worker_info", (("worker", "w1"),))] == 1
        assert mine[("sllm_worker_ready", ())] == 1

        # OpenMetrics for a scraper that asks for it.
        accept = "application/openmetrics-text; version=1.0.0"
        open_metrics = await client.get(url(coordinator, "/metrics"), headers={"accept": accept})
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.rstrip().endswith("# EOF")


async def test_stop_is_bounded_with_a_connection_open() -> None:
    async with services(worker_http=False) as (coordinator, _, client):
        # A kept-alive connection, as Prometheus holds one between scrapes.
        assert (await client.get(url(coordinator, "/healthz"))).status_code == 200
        assert coordinator.http is not None
        port = coordinator.http.port
        started = time.monotonic()
        await coordinator.stop()
        assert time.monotonic() - started < STOP_TIMEOUT_S
        with pytest.raises(httpx.TransportError):
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_uvicorn_parses_with_httptools() -> None:
    async with services(worker_http=False) as (coordinator, _, client):
        assert isinstance(coordinator.http, HttpListener)
        assert coordinator.http.http_parser == "HttpToolsProtocol"
        assert (await client.get(url(coordinator, "/healthz"))).status_code == 200


@pytest.mark.parametrize("module", ["fastapi", "httptools"])
async def test_without_the_serve_extra_udp_goes_on_and_it_says_so_once(
    module: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import it -> ImportError
    monkeypatch.setattr(monitoring, "_disabled_logged", False)
    caplog.set_level(logging.INFO, logger="sllm.http")
    async with services() as (coordinator, worker, _):
        await worker.start()
        assert coordinator.http is None
        assert worker.http is None
        assert coordinator.address[1] > 0
        disabled = [r for r in caplog.records if r.getMessage() == "http_disabled"]
        assert len(disabled) == 1
        assert module in str(getattr(disabled[0], "fields", {}).get("missing"))


async def test_a_taken_http_port_is_logged_and_udp_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sllm.http")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        coordinator = CoordinatorServer(
            "127.0.0.1", 0, Codec(), "least-loaded", CATALOG, CostModel(), 5.0, http_port=port
        )
        await coordinator.start()
        try:
            assert coordinator.http is None
            assert coordinator.address[1] > 0
            assert any(r.getMessage() == "http_failed" for r in caplog.records)
        finally:
            await coordinator.stop()


class MemberState(Enum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2


def test_gossip_members_collector_labels_states_by_name() -> None:
    registry = CollectorRegistry()
    counts = {MemberState.ALIVE: 4, MemberState.SUSPECT: 1, MemberState.DEAD: 0}
    registry.register(GossipMembersCollector(lambda: counts))
    found = samples(generate_latest(registry).decode())
    assert found[("sllm_gossip_members", (("state", "alive"),))] == 4
    assert found[("sllm_gossip_members", (("state", "suspect"),))] == 1
    assert found[("sllm_gossip_members", (("state", "dead"),))] == 0

"""A real Prometheus scrapes a real coordinator and workers; promtool lints every /metrics.

The services run as child processes (`ServiceProcess`) with UDP and HTTP ports 0; their
HTTP ports come from the ``http_listening`` log events. Prometheus (Debian's package) gets
a static scrape config pointing at them, and the test reads the series back through
Prometheus's HTTP API: the guide's metrics as Prometheus stores them, not as we print
them. Every PromQL expression of the Grafana dashboard is evaluated there too, so a
dashboard that names a missing metric or has a syntax error fails here.

Skipped, with the reason, where ``prometheus`` or ``promtool`` is not installed (.ci/run
installs both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sllm.experiments.launcher import ServiceProcess
from sllm.runtime.udp import Endpoint
from sllm.wire import Codec, InferenceRequest, InferenceResult, ScheduleRequest, ScheduleResponse

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sllm-overview.json"
MODEL = "llama-3.2-1b"
PROMETHEUS_READY_S = 20.0
# Scrapes every second: a series is in Prometheus about a second after it exists.
SCRAPE_S = 1
SERIES_TIMEOUT_S = 15.0

pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus; .ci/run does)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_port(service: ServiceProcess) -> int:
    events = service.events("http_listening")
    assert events, f"{service.name} logged no http_listening:\n" + "\n".join(service.lines)
    return int(events[0]["port"])


@contextlib.asynccontextmanager
async def prometheus(config: dict[str, Any], workdir: Path, eventually: Any) -> AsyncIterator[str]:
    """Run Prometheus with `config`; yield its base URL once it says it is ready."""
    binary = _tool("prometheus")
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    address = f"127.0.0.1:{free_port()}"
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={address}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    base = f"http://{address}"
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:

            async def ready() -> bool:
                if process.returncode is not None:
                    pytest.fail(f"prometheus exited:\n{log_path.read_text()}")
                try:
                    return (await client.get(f"{base}/-/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, PROMETHEUS_READY_S, "prometheus ready")
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()


async def query(client: httpx.AsyncClient, base: str, expr: str) -> list[dict[str, Any]]:
    response = await client.get(f"{base}/api/v1/query", params={"query": expr})
    body = response.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_prometheus_scrapes_the_guides_metrics(live_env, eventually, tmp_path) -> None:
    promtool = _tool("promtool")
    _tool("prometheus")
    services: list[ServiceProcess] = []
    try:
        coordinator = await ServiceProcess.start(
            "coordinator",
            ["coordinator", "--host", "127.0.0.1", "--port", "0", "--http-port", "0"],
            live_env,
        )
        services.append(coordinator)
        worker_args = ["--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
        worker_args += ["--coordinator-host", "127.0.0.1"]
        worker_args += ["--coordinator-port", str(coordinator.port), "--prestage", "host"]
        workers = await asyncio.gather(
            *(
                ServiceProcess.start(name, ["worker", "--node-id", name, *worker_args], live_env)
                for name in ("w1", "w2")
            )
        )
        services.extend(workers)
        targets = {service.name: f"127.0.0.1:{http_port(service)}" for service in services}

        # One placed and served request, so counters and histograms have data.
        endpoint = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        try:

            async def placed() -> ScheduleResponse | None:
                decision = await endpoint.request(
                    ScheduleRequest("p-1", MODEL, 0, 64, 8),
                    ("127.0.0.1", coordinator.port),
                    ScheduleResponse,
                    1.0,
                )
                return decision if decision.action != "reject" else None

            decision = await eventually(placed, 5.0, "request placed")
            result = await endpoint.request(
                InferenceRequest("p-1", MODEL, 64, 8),
                (decision.host, decision.port),
                InferenceResult,
                10.0,
            )
            assert result.ok, result.reason
        finally:
            endpoint.close()

        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "scrape_configs": [
                {
                    "job_name": "sllm",
                    "static_configs": [
                        {"targets": [target], "labels": {"service": name}}
                        for name, target in targets.items()
                    ],
                }
            ],
        }
        async with (
            prometheus(config, tmp_path, eventually) as base,
            httpx.AsyncClient(timeout=5.0) as client,
        ):

            async def value(expr: str) -> float | None:
                result = await query(client, base, expr)
                return float(result[0]["value"][1]) if result else None

            async def all_up() -> bool:
                return await value('sum(up{job="sllm"})') == len(targets)

            await eventually(all_up, SERIES_TIMEOUT_S, "every target up")
            await eventually(
                lambda: _equals(value("sllm_active_workers"), 2), SERIES_TIMEOUT_S, "2 workers"
            )
            expectations = {
                f'sllm_requests_total{{model="{MODEL}",action="cold_start"}}': 1,
                "sllm_cold_placements_total": 1,
                "sllm_cache_hits_total": 0,
                "sum(sllm_request_ttft_seconds_count)": 1,
                "sum(sllm_request_duration_seconds_count)": 1,
                'sum(sllm_model_load_seconds_count{tier="host"})': 1,
                "count(sllm_worker_queue_depth)": 2,
                "count(sllm_gpu_utilization)": 2,
                "sum(sllm_worker_requests_completed_total)": 1,
                'count(sllm_datagrams_rejected_total{reason="bad_signature"})': 3,
            }
            for expr, expected in expectations.items():
                await eventually(
                    lambda expr=expr, expected=expected: _equals(value(expr), expected),
                    SERIES_TIMEOUT_S,
                    expr,
                )
            assert await value("sllm_worker_reports_total") > 0

            # Every expression of the Grafana dashboard is valid PromQL over these series.
            for expr in dashboard_expressions():
                await query(client, base, expr)

            # promtool lints every service's exposition.
            for name, target in targets.items():
                body = (await client.get(f"http://{target}/metrics")).content
                lint = subprocess.run(
                    [promtool, "check", "metrics"], input=body, capture_output=True, timeout=10
                )
                assert lint.returncode == 0, (name, lint.stdout, lint.stderr)
    finally:
        await asyncio.gather(*(service.stop() for service in services))


async def _equals(pending: Any, expected: float) -> bool:
    return (await pending) == expected


def dashboard_expressions() -> list[str]:
    """The dashboard's PromQL, with Grafana's rate-interval macro made concrete."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"].replace("$__rate_interval", "1m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_covers_the_guides_metrics() -> None:
    exprs = " ".join(dashboard_expressions())
    for metric in (
        "sllm_active_workers",
        "sllm_requests_total",
        "sllm_cache_hits_total",
        "sllm_cold_placements_total",
        "sllm_worker_queue_depth",
        "sllm_gpu_utilization",
        "sllm_request_ttft_seconds_bucket",
        'sllm_request_duration_seconds_count{cold_start="false"}',  # the warm start rate
    ):
        assert metric in exprs, metric
    titles = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert {
        "Active workers",
        "Warm placement rate (cache hit rate)",
        "Warm placement rate and warm start rate",
        "Queue depth distribution",
    } <= titles

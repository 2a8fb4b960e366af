"""A real Prometheus scrapes a real coordinator and workers; promtool lints every /metrics.

The services run as child processes (`ServiceProcess`) with UDP and HTTP ports 0; their
HTTP ports come from the ``http_listening`` log events. Prometheus (Debian's package) gets
a static scrape config pointing at them, and the test reads the series back through
Prometheus's HTTP API: the guide's metrics as Prometheus stores them, not as we print
them. After the guide's metrics, the official `openai` client sends requests through the
coordinator's front door, and its series (requests by model and status, tokens, TTFT,
inter-token and end-to-end histograms) must reach Prometheus with those labels; no GPU
series may appear on a host without a GPU. Every PromQL expression of the Grafana
dashboard is evaluated there too, so a dashboard that names a missing metric or has a
syntax error fails here, and promtool lints every service's exposition.

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
import openai
import pytest

from sllm.experiments.launcher import ServiceProcess
from sllm.runtime.gpu import Nvml
from sllm.runtime.udp import Endpoint
from sllm.wire import Codec, InferenceRequest, InferenceResult, ScheduleRequest, ScheduleResponse

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sllm-overview.json"
MODEL = "llama-3.2-1b"
PROMETHEUS_READY_S = 20.0
# Scrapes every second: a series is in Prometheus about a second after it exists.
SCRAPE_S = 1
SERIES_TIMEOUT_S = 15.0
STREAMED_TOKENS = 4

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
                    ScheduleRequest(
                        request_id="p-1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
                    ),
                    ("127.0.0.1", coordinator.port),
                    ScheduleResponse,
                    1.0,
                )
                return decision if decision.action != "reject" else None

            decision = await eventually(placed, 5.0, "request placed")
            result = await endpoint.request(
                InferenceRequest(request_id="p-1", model=MODEL, prompt_tokens=64, output_tokens=8),
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
                "count(sllm_worker_slot_busy_ratio)": 2,
                "sllm_ready_workers": 2,
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

            # Through the front door: one streamed chat, one request for no catalog model.
            api = openai.AsyncOpenAI(
                base_url=f"http://{targets['coordinator']}/v1", api_key="x", max_retries=0
            )
            stream = await api.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=STREAMED_TOKENS,
                stream=True,
            )
            assert [chunk async for chunk in stream]
            with pytest.raises(openai.NotFoundError):
                await api.completions.create(model="no-such-model", prompt="x", max_tokens=1)
            served = f'model="{MODEL}"'
            front_door = {
                f'sllm_frontdoor_requests_total{{{served},status="200"}}': 1,
                'sllm_frontdoor_requests_total{model="other",status="404"}': 1,
                f"sllm_frontdoor_generation_tokens_total{{{served}}}": STREAMED_TOKENS,
                f"sllm_frontdoor_time_to_first_token_seconds_count{{{served}}}": 1,
                f"sllm_frontdoor_e2e_request_latency_seconds_count{{{served}}}": 1,
                f"sllm_frontdoor_request_queue_time_seconds_count{{{served}}}": 1,
                'count(sllm_frontdoor_retries_total{reason="worker_failed"})': 1,
            }
            for expr, expected in front_door.items():
                await eventually(
                    lambda expr=expr, expected=expected: _equals(value(expr), expected),
                    SERIES_TIMEOUT_S,
                    expr,
                )
            assert await value(f"sllm_frontdoor_prompt_tokens_total{{{served}}}") > 0
            gaps = f"sllm_frontdoor_inter_token_latency_seconds_count{{{served}}}"
            assert await value(gaps) >= 1
            if Nvml.start() is None:  # no GPU: no GPU series at all, not zeros
                assert await query(client, base, '{__name__=~"sllm_worker_gpu_.*"}') == []

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
    concrete = {"$__rate_interval": "1m", "$model": ".*", "$instance": ".*"}
    expressions = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in concrete.items():
                expr = expr.replace(variable, value)
            expressions.append(expr)
    return expressions


def raw_exprs() -> str:
    """The dashboard's PromQL as written, variables and all."""
    dashboard = json.loads(DASHBOARD.read_text())
    return " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )


def test_the_dashboard_covers_the_guides_metrics() -> None:
    exprs = " ".join(dashboard_expressions())
    for metric in (
        "sllm_active_workers",
        "sllm_requests_total",
        "sllm_cache_hits_total",
        "sllm_cold_placements_total",
        "sllm_worker_queue_depth",
        "sllm_worker_slot_busy_ratio",
        "sllm_request_ttft_seconds_bucket",
        'sllm_request_duration_seconds_count{cold_start="false"}',  # the warm start rate
        "sllm_held_queue_length",  # the held queue (ADMISSION_HOLD)
        "sllm_held_requests_total",
    ):
        assert metric in exprs, metric
    # The front door's metrics, each filtered by the model and instance variables.
    for metric in (
        "sllm_frontdoor_requests_total",
        "sllm_frontdoor_prompt_tokens_total",
        "sllm_frontdoor_generation_tokens_total",
        "sllm_frontdoor_time_to_first_token_seconds_bucket",
        "sllm_frontdoor_inter_token_latency_seconds_bucket",
        "sllm_frontdoor_e2e_request_latency_seconds_bucket",
        "sllm_frontdoor_request_queue_time_seconds_bucket",
        "sllm_frontdoor_cold_start_wait_seconds_bucket",
    ):
        assert f'{metric}{{model=~"$model",instance=~"$instance"}}' in raw_exprs(), metric
    for metric in ("sllm_frontdoor_retries_total", "sllm_frontdoor_requests_rejected_total"):
        assert f'{metric}{{instance=~"$instance"}}' in raw_exprs(), metric
    variables = {v["name"] for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert {"model", "instance"} <= variables
    titles = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert {
        "Active workers",
        "Warm placement rate (cache hit rate)",
        "Warm placement rate and warm start rate",
        "Queue depth distribution",
    } <= titles

"""The host-memory tier of a live transformers worker, at the bytes its engine measured.

A worker process serves the session's tiny model with a 1 s keep-alive: once the model is
idle it leaves the device for host memory, the engine measures the copy (the loader's one
allocation, the safetensors file's bytes page-aligned, and a few buffers the checkpoint
does not hold), and the worker counts that, not
the catalog's size (which also counts the tokenizer and config files), in its report and
in its Prometheus gauge.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

pytest.importorskip("torch", reason="the real engine needs the torch extra")

PAGE = 4096


def _gauge(text: str, name: str) -> float:
    [value] = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    return value


def test_an_evicted_model_is_counted_in_host_memory_at_its_measured_bytes(
    real, serving_helpers, tmp_path: Path
) -> None:
    model = real.model
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [model.entry]}), encoding="utf-8")
    file_bytes = (model.directory / "model.safetensors").stat().st_size
    aligned = -(-file_bytes // PAGE) * PAGE
    catalog_bytes = sum(entry["size"] for entry in model.entry["files"])
    # So the gauge tells which was counted: the network's storages (the one allocation, and
    # a few bytes of buffers the checkpoint does not hold), or the catalog's files.
    assert aligned + PAGE < catalog_bytes
    workers = {"w1": {"MODEL_CACHE_DIR": str(tmp_path / "cache"), "PRESTAGE_TIER": "disk"}}
    env = {"MODEL_CATALOG": str(catalog), "KEEP_ALIVE": "1"}
    with serving_helpers.background_cluster(workers, **env) as cluster:
        with openai.OpenAI(base_url=cluster.api_url, api_key="x", max_retries=0) as client:
            client.completions.create(model=model.entry["name"], prompt="x", max_tokens=1)
        metrics_url = cluster.worker_url("w1") + "/metrics"

        async def measured_in_host() -> float | None:
            async with httpx.AsyncClient(timeout=5) as http:
                text = (await http.get(metrics_url)).text
            used = _gauge(text, "sllm_worker_host_memory_used_bytes")
            return used if aligned <= used < catalog_bytes else None

        used = cluster.run(
            serving_helpers.wait_for(measured_in_host, 30, "the host copy counted as measured"),
            timeout=40,
        )

        async def reported_in_host() -> bool:
            state = await cluster.state()
            tiers = [worker["models"] for worker in (state or {}).get("workers", [])]
            return tiers == [{model.entry["name"]: "host"}]

        cluster.run(serving_helpers.wait_for(reported_in_host, 10, "reported in host memory"))
    assert aligned <= used < aligned + PAGE

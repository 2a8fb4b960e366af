"""The front door while an autoscaler holds no worker (KEDA's scale to zero).

A coordinator with no worker answers a completion with 503 in OpenAI's error shape, with
``Retry-After`` (`NO_WORKER_RETRY_AFTER_S`) so that clients come back once a worker may
have started, and counts it under the rejection that wakes the autoscaler
(``sllm_frontdoor_requests_rejected_total{status="503",reason="no_worker"}``, the query of
k8s/overlays/gpu/autoscaling/keda-scaledobject.yaml). When a worker joins, the same client
is served.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sllm.core.coordinator import NO_WORKER_RETRY_AFTER_S

pytestmark = pytest.mark.integration

MODEL = "llama-3.2-1b"


def rejected_no_worker(exposition: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "sllm_frontdoor_requests_rejected_total" and sample.labels == {
                "status": "503",
                "reason": "no_worker",
            }:
                return sample.value
    return 0.0


async def test_no_worker_answers_503_with_retry_after_then_a_started_worker_serves(
    serving_cluster,
) -> None:
    async with serving_cluster(()) as cluster:
        client = openai.AsyncOpenAI(base_url=cluster.api_url, api_key="x", max_retries=0)
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as refused:
                await client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
            assert refused.value.status_code == 503
            assert refused.value.response.headers["retry-after"] == str(NO_WORKER_RETRY_AFTER_S)
            assert refused.value.code == "no_worker"
            assert "retry after" in refused.value.message
        async with httpx.AsyncClient(timeout=5) as http:
            exposition = (await http.get(cluster.base_url + "/metrics")).text
        assert rejected_no_worker(exposition) == 2

        await cluster.start_worker("w1")  # what the autoscaler does on that signal
        await cluster.wait_joined({"w1"})
        served = await client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        assert served.usage is not None and served.usage.completion_tokens == 2

"""The front door's own metrics, read from a live coordinator's ``/metrics``.

A coordinator starts with no worker, so its first request is refused with a 503; then a
worker joins, and the official `openai` client sends a streamed chat and a non-streamed
completion, plus one request for a model that is not in the catalog. The exposition,
parsed by `prometheus_client`'s own parser, must then hold exactly those requests by
model and status, the tokens the worker reported, one TTFT, queue-time and end-to-end
observation per served request, one cold start waited on (the first served request
loads the model; the second finds it warm), the inter-token gaps of both streams and
the 503 as a rejection. The worker's ``/metrics`` has no GPU series on a host without a
GPU, and the coordinator names the slot ratio for what it is.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sllm.runtime.gpu import Nvml

pytestmark = pytest.mark.integration

MODEL = "llama-3.2-1b"
STREAMED_TOKENS = 4
FOLDED_TOKENS = 3
# Spreads a stream's tokens over time, so each arrives as a run of its own.
DECODE_OVERHEAD_S = 0.02

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in found.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


async def test_the_front_door_exports_requests_tokens_and_latencies(
    serving_cluster, tmp_path
) -> None:
    cost_model = tmp_path / "cost-model.json"
    cost_model.write_text(json.dumps({"decode_overhead_s": DECODE_OVERHEAD_S}), encoding="utf-8")
    async with serving_cluster((), COST_MODEL=str(cost_model)) as cluster:
        client = openai.AsyncOpenAI(base_url=cluster.api_url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert refused.value.status_code == 503

        await cluster.start_worker("w1")
        await cluster.wait_joined({"w1"})
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello there"}],
            max_tokens=STREAMED_TOKENS,
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        assert chunks
        # Not asked for: no usage chunk reaches the client, though the metrics count it.
        assert all(chunk.usage is None and chunk.choices for chunk in chunks)
        # One token: the whole answer, usage chunk included, may come in the first read.
        single = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1, stream=True
        )
        assert [chunk async for chunk in single]
        folded = await client.completions.create(
            model=MODEL, prompt="once upon a time", max_tokens=FOLDED_TOKENS
        )
        assert folded.usage is not None
        assert folded.usage.completion_tokens == FOLDED_TOKENS
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="no-such-model", prompt="x", max_tokens=1)

        async with httpx.AsyncClient(timeout=5) as http:
            coordinator = samples((await http.get(cluster.base_url + "/metrics")).text)
            worker = (await http.get(cluster.worker_url("w1") + "/metrics")).text

    served = {"model": MODEL, "status": "200"}
    assert total(coordinator, "sllm_frontdoor_requests_total", **served) == 3
    assert total(coordinator, "sllm_frontdoor_requests_total", model="other", status="404") == 1
    assert total(coordinator, "sllm_frontdoor_requests_total", model=MODEL, status="503") == 1
    assert total(coordinator, "sllm_frontdoor_requests_total") == 5
    rejected = {"status": "503", "reason": "no_worker"}
    assert total(coordinator, "sllm_frontdoor_requests_rejected_total", **rejected) == 1

    generated = total(coordinator, "sllm_frontdoor_generation_tokens_total", model=MODEL)
    assert generated == STREAMED_TOKENS + FOLDED_TOKENS + 1
    assert total(coordinator, "sllm_frontdoor_prompt_tokens_total", model=MODEL) > 0

    for histogram in (
        "time_to_first_token_seconds",
        "request_queue_time_seconds",
        "e2e_request_latency_seconds",
    ):
        name = f"sllm_frontdoor_{histogram}"
        assert total(coordinator, f"{name}_count", model=MODEL) == 3, name
        assert total(coordinator, f"{name}_sum", model=MODEL) > 0, name
    cold = "sllm_frontdoor_cold_start_wait_seconds"
    assert total(coordinator, f"{cold}_count", model=MODEL) == 1
    # Every token after each stream's first comes as a run of its own.
    gaps = total(coordinator, "sllm_frontdoor_inter_token_latency_seconds_count", model=MODEL)
    # One gap per token after the first, none for the finish, usage or [DONE] alone (fewer
    # only if two tokens ever came in one read).
    assert 1 <= gaps <= STREAMED_TOKENS - 1 + FOLDED_TOKENS - 1
    assert total(coordinator, "sllm_frontdoor_inter_token_latency_seconds_sum") > 0

    assert total(coordinator, "sllm_ready_workers") == 1
    assert ("sllm_worker_slot_busy_ratio", (("worker", "w1"),)) in coordinator
    assert not [name for name, _ in coordinator if name == "sllm_gpu_utilization"]  # renamed
    if Nvml.start() is None:  # no GPU here: no GPU metric, not zeros
        assert "sllm_worker_gpu_" not in worker
        assert "sllm_worker_model_memory_budget_bytes" in worker

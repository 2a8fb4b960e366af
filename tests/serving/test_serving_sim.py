"""The official `openai` client against a live front door and two sim-engine workers.

The sim engine generates placeholder words, one token each, always `max_tokens` of them
(it ignores `stop`, `temperature` and `seed`; the transformers tests check those). What
these tests prove is the protocol: chat and legacy completions, streamed and not, parse
in the real client, with `usage` and `finish_reason`, through placement and the proxy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from sllm.catalog import served_catalog

pytestmark = pytest.mark.integration

SIM_MODEL = "llama-3.2-1b"
API_KEY = "serving-test-key-1"  # the `sim_cluster` fixture's key


@pytest.fixture
def client(sim_cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim_cluster.api_url, api_key=API_KEY, max_retries=0, timeout=20)


def test_models_lists_the_catalog(client) -> None:
    names = {model.id for model in client.models.list()}
    assert names == set(served_catalog())


def test_chat_completion_returns_max_tokens_with_usage(client) -> None:
    response = client.chat.completions.create(
        model=SIM_MODEL,
        messages=[{"role": "user", "content": "Say twelve words, please."}],
        max_tokens=12,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert len(choice.message.content.split()) == 12
    assert choice.finish_reason == "length"
    assert response.model == SIM_MODEL
    usage = response.usage
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens >= 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.id.startswith("req-")


def test_chat_completion_streams_one_chunk_per_token(client) -> None:
    stream = client.chat.completions.create(
        model=SIM_MODEL,
        messages=[{"role": "user", "content": "stream"}],
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    *chunks, usage = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(texts) == 7  # one chunk per generated token, as it was generated
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)
    assert usage.choices == [] and usage.usage is not None  # asked for: a chunk of its own
    assert usage.usage.completion_tokens == 7
    assert len({c.id for c in [*chunks, usage]}) == 1


def test_legacy_completion_streamed_and_not(client) -> None:
    whole = client.completions.create(
        model=SIM_MODEL, prompt="Once upon a time", max_tokens=5, temperature=0
    )
    assert len(whole.choices[0].text.split()) == 5
    assert whole.usage.completion_tokens == 5
    assert whole.usage.prompt_tokens == len("Once upon a time") // 4  # the sim's estimate
    assert whole.choices[0].finish_reason == "length"

    pieces = list(
        client.completions.create(
            model=SIM_MODEL, prompt="Once", max_tokens=4, stream=True, temperature=0
        )
    )
    assert "".join(p.choices[0].text for p in pieces).split() == whole.choices[0].text.split()[:4]
    assert pieces[-1].choices[0].finish_reason == "length"


def test_the_default_max_tokens_is_openais(client) -> None:
    response = client.completions.create(model=SIM_MODEL, prompt="no limit given")
    assert response.usage.completion_tokens == 16


def test_a_burst_spreads_over_both_workers(sim_cluster, client) -> None:
    ids = [f"spread-{index}" for index in range(8)]

    def send(request_id: str) -> None:
        client.completions.create(
            model=SIM_MODEL, prompt="x", max_tokens=1, extra_headers={"x-request-id": request_id}
        )

    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(send, ids))
    workers = {sim_cluster.logged_now("request_routed", rid)[0]["worker"] for rid in ids}
    assert workers == {"w1", "w2"}

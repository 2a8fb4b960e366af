"""The model registry: deploys checked whole, statuses, persistence across a restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sllm.catalog import CatalogModel, CheckpointFile, catalog_entry_json, model_from_entry_json
from sllm.engines.registry import REGISTERED
from sllm.registry import Description, ModelRegistry, RegistryError, Status

SIM_SEED = {"seeded-7b": CatalogModel("seeded-7b", 7.0, 14_000_000_000)}


def _registry(path: Path, seed: dict[str, CatalogModel] | None = None) -> ModelRegistry:
    return ModelRegistry(path, engines=REGISTERED, seed=SIM_SEED if seed is None else seed)


def _checkpoint(directory: Path) -> dict[str, bytes]:
    files = {"config.json": b'{"hidden": 8}', "model.safetensors": b"\x01" * 4096}
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return files


def test_an_empty_registry_is_seeded_once_and_a_restart_keeps_every_change(tmp_path) -> None:
    path = tmp_path / "registry.sqlite3"
    registry = _registry(path)
    assert list(registry.served) == ["seeded-7b"]
    registry.deploy("extra-1b", {"engine": "sim", "size_bytes": 2_000_000_000})
    registry.delete("seeded-7b")
    version = registry.version
    registry.close()

    reopened = _registry(path)  # the seed is not applied again: the deleted model stays gone
    assert list(reopened.served) == ["extra-1b"]
    assert reopened.served["extra-1b"].size_bytes == 2_000_000_000
    assert reopened.version == version


def test_a_checkpoint_model_is_ready_once_its_directory_is_described(tmp_path) -> None:
    files = _checkpoint(tmp_path / "ckpt")
    registry = _registry(tmp_path / "r.sqlite3")
    entry = registry.deploy("tiny", {"engine": "transformers", "source": str(tmp_path / "ckpt")})
    assert entry.status is Status.REGISTERED
    assert "tiny" not in registry.served
    assert registry.not_ready("tiny") is not None

    (outcome,) = registry.describe_pending()

    assert outcome.status is Status.READY
    model = registry.served["tiny"]
    assert {f.path: f.sha256 for f in model.files} == {
        name: hashlib.sha256(content).hexdigest() for name, content in files.items()
    }
    assert model.size_bytes == sum(len(content) for content in files.values())


def test_a_wrong_given_hash_fails_the_model_with_the_reason_and_a_redeploy_replaces_it(
    tmp_path,
) -> None:
    _checkpoint(tmp_path / "ckpt")
    registry = _registry(tmp_path / "r.sqlite3")
    wrong = [{"path": "model.safetensors", "size": 4096, "sha256": "0" * 64}]
    registry.deploy(
        "tiny", {"engine": "transformers", "source": str(tmp_path / "ckpt"), "files": wrong}
    )
    (outcome,) = registry.describe_pending()
    assert outcome.status is Status.FAILED
    assert "sha256" in outcome.error and "model.safetensors" in outcome.error
    assert "tiny" not in registry.served

    registry.deploy("tiny", {"engine": "transformers", "source": str(tmp_path / "ckpt")})
    (outcome,) = registry.describe_pending()
    assert outcome.status is Status.READY


@pytest.mark.parametrize(
    ("name", "fields", "status", "words"),
    [
        ("bad name!", {"engine": "sim", "size_bytes": 10}, 400, "name"),
        ("seeded-7b", {"engine": "sim", "size_bytes": 10}, 409, "already deployed"),
        ("m", {"engine": "nope", "size_bytes": 10}, 400, "nope"),
        ("m", {"engine": "sim"}, 400, "size_bytes"),
        ("m", {"engine": "transformers", "source": "/does/not/exist"}, 400, "does not exist"),
        ("m", {"engine": "transformers"}, 400, "source"),
        ("m", {"engine": "sim", "size_bytes": 10, "colour": "red"}, 400, "colour"),
        ("m", {"engine": "vllm", "source": "/", "options": {"dtype": "float7"}}, 400, "dtype"),
    ],
)
def test_a_bad_deploy_is_refused_whole_and_stores_nothing(
    tmp_path, name, fields, status, words
) -> None:
    registry = _registry(tmp_path / "r.sqlite3")
    before = (registry.version, [e.name for e in registry.entries()])
    with pytest.raises(RegistryError) as refused:
        registry.deploy(name, fields)
    assert refused.value.status == status
    assert words in str(refused.value)
    assert (registry.version, [e.name for e in registry.entries()]) == before
    registry.close()
    assert [e.name for e in _registry(tmp_path / "r.sqlite3").entries()] == before[1]


def test_update_changes_engine_settings_and_keep_alive_only_and_checks_them(tmp_path) -> None:
    registry = _registry(tmp_path / "r.sqlite3")
    with pytest.raises(RegistryError, match="only keep_alive_s, options"):
        registry.update("seeded-7b", {"source": "/elsewhere"})
    with pytest.raises(RegistryError, match="keep_alive_s"):
        registry.update("seeded-7b", {"keep_alive_s": -3})
    updated = registry.update("seeded-7b", {"keep_alive_s": 30})
    assert updated.entry["keep_alive_s"] == 30.0
    assert registry.served["seeded-7b"].keep_alive_s == 30.0
    with pytest.raises(RegistryError) as unknown:
        registry.update("nobody", {"options": {}})
    assert unknown.value.status == 404
    registry.deploy("v", {"engine": "vllm", "source": "/", "files": [], "size_bytes": 10})
    with pytest.raises(RegistryError, match="max_model_len"):
        registry.update("v", {"options": {"max_model_len": -1}})
    updated = registry.update("v", {"options": {"max_model_len": 512}})
    assert updated.entry["options"] == {"max_model_len": 512}


def test_a_model_caught_describing_by_a_restart_is_described_again(tmp_path) -> None:
    _checkpoint(tmp_path / "ckpt")
    path = tmp_path / "r.sqlite3"
    registry = _registry(path)
    registry.deploy("tiny", {"engine": "transformers", "source": str(tmp_path / "ckpt")})
    (pending,) = registry.pending()
    assert registry.start_describing(pending)
    registry.close()  # the coordinator stops while the source is read

    reopened = _registry(path)
    assert reopened.get("tiny").status is Status.REGISTERED
    (outcome,) = reopened.describe_pending()
    assert outcome.status is Status.READY


def test_a_result_for_a_model_deleted_meanwhile_is_dropped(tmp_path) -> None:
    _checkpoint(tmp_path / "ckpt")
    registry = _registry(tmp_path / "r.sqlite3")
    registry.deploy("tiny", {"engine": "transformers", "source": str(tmp_path / "ckpt")})
    (pending,) = registry.pending()
    registry.start_describing(pending)
    registry.delete("tiny")
    found = Description(files=(CheckpointFile("a", 1, "0" * 64),), source=str(tmp_path / "ckpt"))
    assert registry.described("tiny", found) is None
    assert registry.get("tiny") is None


def test_the_entry_json_round_trips_a_model_exactly() -> None:
    model = CatalogModel(
        "org/m",
        0.5,
        12,
        engine="transformers",
        source="/srv/m",
        files=(CheckpointFile("a.bin", 5, "a" * 64), CheckpointFile("b/c.json", 7, "b" * 64)),
        options={"dtype": "float32"},
    )
    text = catalog_entry_json(model)
    assert model_from_entry_json(text, engines=REGISTERED) == model
    assert catalog_entry_json(model_from_entry_json(text, engines=REGISTERED)) == text

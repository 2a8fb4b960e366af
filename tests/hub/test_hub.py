"""Hugging Face sources through the real `huggingface_hub` client, against a hub on
127.0.0.1 (`conftest.FakeHub`): what is described, what is fetched, and every failure."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fakehub import COMMIT, FakeHub
from sllm import hub
from sllm.catalog import CatalogModel
from sllm.sources import SourceError, describe_source
from sllm.store import ModelStore, StoreError

REPO = "acme/tiny"
WEIGHTS = os.urandom(300_000)
FILES = {
    "model.safetensors": WEIGHTS,
    "config.json": b'{"hidden_size": 8}',
    "tokenizer.json": b'{"model": {}}',
    "pytorch_model.bin": b"old weights, not needed beside safetensors",
    "README.md": b"# tiny",
    "images/logo.png": b"\x89PNG",
}
NEEDED = ["config.json", "model.safetensors", "tokenizer.json"]


@pytest.fixture
def repo(tmp_path: Path, fake_hub: FakeHub) -> Path:
    directory = tmp_path / "repo"
    for name, data in FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    fake_hub.add(REPO, directory)
    return directory


def _model(files) -> CatalogModel:
    return CatalogModel(
        "tiny", 0.001, sum(f.size for f in files), "transformers", f"hf://{REPO}", tuple(files)
    )


def test_hub_ids_are_told_apart_from_paths_and_urls(tmp_path: Path) -> None:
    assert hub.is_hub_id("hf://acme/tiny@v1")
    assert hub.is_hub_id("acme/tiny")
    assert hub.is_hub_id("meta-llama/Llama-3.2-1B@main")
    assert not hub.is_hub_id("/srv/models/tiny")
    assert not hub.is_hub_id("http://example.invalid/acme/tiny")
    assert not hub.is_hub_id("./acme/tiny")
    (tmp_path / "acme" / "tiny").mkdir(parents=True)
    os.chdir(tmp_path)  # a relative directory that exists is a directory, not a hub id
    assert not hub.is_hub_id("acme/tiny")


def test_describe_lists_only_needed_files_with_the_hubs_lfs_hash(repo, fake_hub) -> None:
    files = describe_source(f"hf://{REPO}")
    assert sorted(f.path for f in files) == NEEDED
    by_path = {f.path: f for f in files}
    weights = by_path["model.safetensors"]
    assert (weights.size, weights.sha256) == (len(WEIGHTS), hashlib.sha256(WEIGHTS).hexdigest())
    # the weights were not downloaded to describe them: their hash is the hub's
    assert fake_hub.downloads("model.safetensors") == []
    config = by_path["config.json"]  # not in LFS: fetched once and hashed here
    assert config.sha256 == hashlib.sha256(FILES["config.json"]).hexdigest()


def test_a_missing_repository_or_revision_is_a_clear_error(repo) -> None:
    with pytest.raises(SourceError, match=r"acme/nothing.*no such repository"):
        describe_source("hf://acme/nothing")
    with pytest.raises(SourceError, match="no such repository or revision"):
        describe_source(f"hf://{REPO}@no-such-branch")


def test_the_token_is_sent_and_a_wrong_one_is_refused(repo, fake_hub, monkeypatch) -> None:
    fake_hub.token = "hf_secret_token"
    with pytest.raises(SourceError, match="HF_TOKEN"):
        describe_source(f"hf://{REPO}")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    assert len(describe_source(f"hf://{REPO}")) == len(NEEDED)
    assert {r.authorization for r in fake_hub.requests[-3:]} == {"Bearer hf_secret_token"}


def test_fetch_downloads_only_the_needed_files_and_checks_them(repo, fake_hub, tmp_path) -> None:
    model = _model(describe_source(f"hf://{REPO}"))
    fake_hub.requests.clear()
    store = ModelStore(tmp_path / "cache")
    folder = store.fetch(model)
    assert store.is_cached(model)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    downloaded = {r.path.split("/", 5)[5] for r in fake_hub.requests if r.method == "GET"}
    assert downloaded == set(NEEDED)


def test_a_dropped_connection_resumes_where_it_stopped(repo, fake_hub, tmp_path) -> None:
    # The client writes in 10 MiB pieces, so a resumable cut falls past the first one.
    weights = os.urandom(12 << 20)
    (repo / "model.safetensors").write_bytes(weights)
    model = _model(describe_source(f"hf://{REPO}"))
    fake_hub.drop_after["model.safetensors"] = 11 << 20
    folder = ModelStore(tmp_path / "cache").fetch(model)
    assert (folder / "model.safetensors").read_bytes() == weights
    ranges = [r.range for r in fake_hub.downloads("model.safetensors")]
    assert ranges[0] == "", ranges
    resumed_at = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:] if r]
    assert resumed_at and resumed_at[0] >= 10 << 20, ranges  # not from the start


def test_a_transient_5xx_is_retried(repo, fake_hub, tmp_path, monkeypatch) -> None:
    model = _model(describe_source(f"hf://{REPO}"))
    monkeypatch.setattr(hub, "BACKOFF_BASE_S", 0.0)
    fake_hub.unavailable["model.safetensors"] = 2
    folder = ModelStore(tmp_path / "cache").fetch(model)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert fake_hub.unavailable["model.safetensors"] == 0


def test_a_file_that_does_not_match_the_hubs_hash_is_refused(repo, fake_hub, tmp_path) -> None:
    model = _model(describe_source(f"hf://{REPO}"))
    fake_hub.corrupt.add("model.safetensors")
    store = ModelStore(tmp_path / "cache")
    with pytest.raises(StoreError, match=r"model\.safetensors.*sha256"):
        store.fetch(model)
    assert not store.is_cached(model)
    assert not (store.model_dir(model) / "model.safetensors").exists()

    fake_hub.corrupt.clear()  # the next fetch starts that file over
    assert (store.fetch(model) / "model.safetensors").read_bytes() == WEIGHTS


def test_the_registry_describes_a_hub_model_and_fails_a_missing_one(repo, tmp_path) -> None:
    from sllm.engines.registry import REGISTERED
    from sllm.registry import ModelRegistry, Status

    registry = ModelRegistry(tmp_path / "r.sqlite3", engines=REGISTERED, seed={})
    registry.deploy("tiny", {"engine": "transformers", "source": f"hf://{REPO}"})
    registry.deploy("gone", {"engine": "transformers", "source": "hf://acme/gone"})
    outcomes = {entry.name: entry for entry in registry.describe_pending()}
    assert outcomes["tiny"].status is Status.READY
    # pinned to the commit its hashes describe, whatever the branch does later
    assert registry.served["tiny"].source == f"hf://{REPO}@{COMMIT}"
    assert sorted(f.path for f in registry.served["tiny"].files) == NEEDED
    assert outcomes["gone"].status is Status.FAILED
    assert "no such repository" in outcomes["gone"].error


def test_a_model_larger_than_the_disk_cache_is_refused_with_the_sizes(repo, tmp_path) -> None:
    model = _model(describe_source(f"hf://{REPO}"))
    store = ModelStore(tmp_path / "cache", capacity_bytes=model.size_bytes - 1)
    with pytest.raises(StoreError, match="does not fit the disk cache"):
        store.fetch(model)
    assert not store.is_cached(model)


def test_a_full_disk_is_a_clear_error_and_nothing_is_marked_complete(tmp_path, monkeypatch) -> None:
    import errno

    import sllm.store

    source = tmp_path / "source"
    source.mkdir()
    (source / "model.safetensors").write_bytes(WEIGHTS)
    model = _model(describe_source(str(source)))
    model = CatalogModel("tiny", 0.001, model.size_bytes, "transformers", str(source), model.files)

    class FullDisk:
        def __init__(self, *args, **kwargs) -> None:
            self.real = open(*args, **kwargs)  # noqa: SIM115  (closed in __exit__)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.real.close()

        def read(self, size: int = -1) -> bytes:
            return self.real.read(size)

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sllm.store, "open", FullDisk, raising=False)
    store = ModelStore(tmp_path / "cache")
    with pytest.raises(StoreError, match="the disk is full"):
        store.fetch(model)
    assert not store.is_cached(model)
    assert not [p for p in store.model_dir(model).rglob("*") if p.is_file()]

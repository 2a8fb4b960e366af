"""The model store and the catalog file, without processes: downloads checked and atomic.

A fake checkpoint (random bytes in a few files, one in a subfolder) is fetched from a
directory and from a stdlib HTTP server on 127.0.0.1. A download whose size or sha256
does not match the catalog, or whose connection breaks, is rejected and leaves nothing a
later fetch could take for the model: no file under its final name, no ``.complete``
marker, no temporary file. The disk tier's LRU eviction by bytes is the worker state
machine's; the store carries it out.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sllm.catalog import CatalogError, CatalogModel, CheckpointFile, load_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import Evict, WorkerResources, WorkerState
from sllm.engines.registry import REGISTERED
from sllm.store import COMPLETE_MARKER, ModelStore, StoreError
from sllm.wire import InferenceRequest

FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": os.urandom(300_000),
    "tokenizer/tokenizer.json": os.urandom(5_000),
}


def _checkpoint(source: str, name: str = "fake-model") -> CatalogModel:
    files = tuple(
        CheckpointFile(path, len(data), hashlib.sha256(data).hexdigest())
        for path, data in FILES.items()
    )
    size = sum(f.size for f in files)
    return CatalogModel(name, 0.001, size, "transformers", source, files)


def _with_file(model: CatalogModel, path: str, **changes: object) -> CatalogModel:
    files = tuple(dataclasses.replace(f, **changes) if f.path == path else f for f in model.files)
    return dataclasses.replace(model, files=files)


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    root = tmp_path / "remote"
    for path, data in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "cache")


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str]  # paths answered with half their bytes, then a closed connection

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.lstrip("/") in self.truncate:
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def http_source(source_dir: Path) -> Iterator[tuple[str, set[str]]]:
    """(URL of `source_dir` over HTTP, the set of paths to truncate)."""
    truncate: set[str] = set()
    handler = type("Handler", (_Handler,), {"truncate": truncate})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(source_dir))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", truncate
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _left_behind(store: ModelStore, model: CatalogModel) -> list[str]:
    """Files under the model's cache folder."""
    folder = store.model_dir(model)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _assert_fetched(store: ModelStore, model: CatalogModel) -> None:
    folder = store.model_dir(model)
    for path, data in FILES.items():
        assert (folder / path).read_bytes() == data
    assert store.is_cached(model)
    assert _left_behind(store, model) == sorted([*FILES, COMPLETE_MARKER])


# -- verified downloads --------------------------------------------------------------------


def test_a_fetch_from_a_directory_is_verified_and_complete(store, source_dir) -> None:
    model = _checkpoint(str(source_dir))
    assert not store.is_cached(model)
    assert store.fetch(model) == store.model_dir(model)
    _assert_fetched(store, model)
    assert store.cached({model.name: model}) == [model.name]


def test_a_file_url_source_works_like_a_directory(store, source_dir) -> None:
    model = _checkpoint(source_dir.as_uri())
    store.fetch(model)
    _assert_fetched(store, model)


def test_a_fetch_over_http_is_verified_and_complete(store, http_source) -> None:
    url, _ = http_source
    model = _checkpoint(url)
    progress: list[int] = []
    store.fetch(model, progress.append)
    _assert_fetched(store, model)
    assert sum(progress) == model.size_bytes


def test_a_cached_model_is_not_fetched_again(store, source_dir) -> None:
    model = _checkpoint(str(source_dir))
    store.fetch(model)
    for path in FILES:
        (source_dir / path).unlink()  # the remote tier is gone; the disk tier suffices
    assert store.fetch(model) == store.model_dir(model)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"size": len(FILES["model.safetensors"]) + 1}, "the catalog says"),
        ({"size": len(FILES["model.safetensors"]) - 1}, "larger than the catalog"),
        ({"sha256": "0" * 64}, "sha256 mismatch"),
    ],
)
@pytest.mark.parametrize("over", ["directory", "http"])
def test_a_mismatch_is_rejected_and_leaves_nothing_usable(
    store, source_dir, http_source, change, why, over
) -> None:
    source = str(source_dir) if over == "directory" else http_source[0]
    good = _checkpoint(source)
    bad = _with_file(good, "model.safetensors", **change)
    with pytest.raises(StoreError, match=why):
        store.fetch(bad)
    assert not store.is_cached(bad)
    assert store.cached({bad.name: bad}) == []
    left = _left_behind(store, bad)
    assert "model.safetensors" not in left
    assert COMPLETE_MARKER not in left
    assert not [name for name in left if "partial" in name]
    # The next fetch, with the right catalog, starts over and succeeds.
    store.fetch(good)
    _assert_fetched(store, good)


def test_a_broken_download_is_a_store_error_and_leaves_nothing_usable(store, http_source) -> None:
    url, truncate = http_source
    model = _checkpoint(url)
    truncate.add("model.safetensors")
    with pytest.raises(StoreError):
        store.fetch(model)
    left = _left_behind(store, model)
    assert "model.safetensors" not in left and COMPLETE_MARKER not in left
    assert not [name for name in left if "partial" in name]
    truncate.clear()
    store.fetch(model)
    _assert_fetched(store, model)


def test_missing_files_and_bad_sources_are_store_errors(store, source_dir, http_source) -> None:
    with pytest.raises(StoreError):
        store.fetch(_checkpoint(str(source_dir / "nowhere")))
    with pytest.raises(StoreError):
        store.fetch(_checkpoint(http_source[0] + "nowhere/"))  # 404
    with pytest.raises(StoreError, match="unsupported source scheme"):
        store.fetch(_checkpoint("ftp://127.0.0.1/model"))
    with pytest.raises(StoreError, match="no source or files"):
        store.fetch(CatalogModel("sim-only", 1.0, 2_000_000_000))


def test_a_partial_copy_from_a_crash_is_not_taken_for_the_model(store, source_dir) -> None:
    model = _checkpoint(str(source_dir))
    folder = store.model_dir(model)
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(FILES["config.json"])  # a crash after one file
    (folder / ".model.safetensors.partial-99999").write_bytes(b"half")
    assert not store.is_cached(model)
    assert store.cached({model.name: model}) == []
    store.fetch(model)
    assert store.is_cached(model)


# -- eviction ------------------------------------------------------------------------------


def test_evict_deletes_the_model_from_the_disk_cache(store, source_dir) -> None:
    model = _checkpoint(str(source_dir))
    other = _checkpoint(str(source_dir), "other-model")
    store.fetch(model)
    store.fetch(other)
    store.evict(model)
    assert not store.is_cached(model)
    assert not store.model_dir(model).exists()
    assert store.cached({m.name: m for m in (model, other)}) == ["other-model"]
    store.evict(model)  # evicting what is gone is a no-op


def test_the_disk_tier_evicts_least_recently_used_by_bytes(store, source_dir) -> None:
    """The state machine decides (LRU by bytes); the store carries out its `Evict`s."""
    models = {name: _checkpoint(str(source_dir), name) for name in ("a", "b", "c")}
    size = models["a"].size_bytes
    resources = WorkerResources(
        gpu_bytes=size, host_bytes=size, disk_bytes=2 * size, slots=1, keep_alive_s=0
    )
    state = WorkerState("w", resources, models, CostModel())
    evicted: list[str] = []
    for index, name in enumerate(["a", "b", "c"]):
        state.submit(
            InferenceRequest(request_id=f"r{index}", model=name, prompt_tokens=1, output_tokens=1),
            0.0,
        )
        store.fetch(models[name])  # what the engine's load does for a remote model
        for action in state.load_done(name, 0.0):
            if isinstance(action, Evict) and action.source == Tier.DISK:
                store.evict(models[action.model])
                evicted.append(action.model)
        state.request_done(f"r{index}", 0.0)
        state.tick(1.0)  # keep-alive 0: the model leaves the GPU
    assert evicted == ["a"]  # room for two on disk; the least recently used went
    assert store.cached(models) == ["b", "c"]
    assert state.tier_of("a") == Tier.REMOTE


# -- catalog files -------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_toml_catalog_is_read(tmp_path, source_dir) -> None:
    model = _checkpoint(str(source_dir))
    files = ",\n".join(
        f'  {{ path = "{f.path}", size = {f.size}, sha256 = "{f.sha256}" }}' for f in model.files
    )
    path = _write(
        tmp_path,
        "catalog.toml",
        f"""
[[models]]
name = "fake-model"
source = "{source_dir}"
engine = "transformers"
params_b = 0.001
options = {{ dtype = "float32" }}
files = [
{files}
]

[[models]]
name = "sim-model"
size_bytes = 2_000_000_000
""",
    )
    catalog = load_catalog(path, engines=REGISTERED)
    assert catalog["fake-model"] == dataclasses.replace(model, options={"dtype": "float32"})
    assert catalog["sim-model"].engine == "sim"
    assert catalog["sim-model"].params_b == 1.0  # 2 bytes a parameter unless given


BAD_MODELS = [
    {"name": "bad name!", "size_bytes": 10},
    {"name": "no-size"},
    {"name": "x", "engine": "sglang", "size_bytes": 10},
    {"name": "real-without-files", "engine": "transformers", "source": "/srv/m"},
    {
        "name": "bad-files",
        "engine": "transformers",
        "source": "/srv/m",
        "files": [{"path": "../escape", "size": -1, "sha256": "nothex"}],
    },
    {"name": "dup", "size_bytes": 10},
    {"name": "dup", "size_bytes": 10, "colour": "red"},
]


def test_every_problem_of_a_json_catalog_is_listed_at_once(tmp_path) -> None:
    path = _write(tmp_path, "catalog.json", json.dumps({"models": BAD_MODELS}))
    with pytest.raises(CatalogError) as raised:
        load_catalog(path, engines=REGISTERED)
    problems = "\n".join(raised.value.problems)
    for expected in [
        "models[0].name",
        "models[1].size_bytes",
        "models[2].engine",
        "models[3]: a transformers model needs a source and its files",
        "models[4].files[0].path",
        "models[4].files[0].size",
        "models[4].files[0].sha256",
        "models[6]: unknown key 'colour'",
    ]:
        assert expected in problems, problems
    assert str(path) in str(raised.value)


def test_every_problem_of_a_toml_catalog_is_listed_at_once(tmp_path) -> None:
    path = _write(
        tmp_path,
        "catalog.toml",
        """
[[models]]
name = "ok"
size_bytes = 10

[[models]]
name = "bad name!"
size_bytes = 0

[[models]]
name = "ok"
size_bytes = 10
engine = "sglang"
""",
    )
    with pytest.raises(CatalogError) as raised:
        load_catalog(path, engines=REGISTERED)
    problems = raised.value.problems
    assert len(problems) == 3, problems
    assert any("models[1].name" in p for p in problems)
    assert any("models[1].size_bytes" in p for p in problems)
    assert any("models[2].engine" in p for p in problems)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("catalog.json", "{not json", "not valid JSON"),
        ("catalog.toml", "models = [", "not valid TOML"),
        ("catalog.json", '{"models": []}', "non-empty list 'models'"),
        ("catalog.json", "[1, 2]", "non-empty list 'models'"),
    ],
)
def test_an_unreadable_catalog_says_why(tmp_path, name, text, expected) -> None:
    with pytest.raises(CatalogError, match=expected):
        load_catalog(_write(tmp_path, name, text), engines=REGISTERED)


def test_a_missing_catalog_file_says_so(tmp_path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.json", engines=REGISTERED)

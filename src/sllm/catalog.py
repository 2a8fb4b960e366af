"""The models a cluster serves, by name: the default simulated set, or a catalog file.

Coordinator and workers must agree on the catalog: the coordinator estimates load times
from checkpoint sizes, the workers budget GPU memory with them and fetch checkpoints
from the sources it names.

Without a file (MODEL_CATALOG unset), every process serves the first `SERVED_MODELS`
entries of the default catalog of real model sizes, all on the sim engine; any smaller
workload's models are a prefix of it.

A catalog file is JSON (``.json``) or TOML (``.toml``) with a list of models::

    [[models]]
    name = "tiny-llama"
    source = "/srv/models/tiny-llama"       # a directory, or an http(s):// URL of one
    engine = "transformers"                 # a registered engine; default "sim"
    params_b = 0.001                        # optional for real models
    options = { dtype = "float32" }         # engine options (settings), checked by the engine
    files = [
      { path = "model.safetensors", size = 4194304, sha256 = "ab12..." },
      { path = "config.json", size = 612, sha256 = "cd34..." },
    ]

An ``engine`` must be registered, and a model of an engine that needs checkpoints
(transformers) must name its source and files. The catalog is plain data below the
engines (`tests/test_layering.py`), so a file is checked against the rules of engines it
is handed (`EngineRules`; the services hand it the registry,
`sllm.engines.registry.REGISTERED`). An engine may check its models' ``options`` too: a
vllm model takes ``dtype``, ``max_model_len``, ``gpu_memory_utilization``,
``tensor_parallel_size``, ``enforce_eager`` and ``kv_cache_bytes``
(`sllm.engines.vllm_engine.OPTIONS`), and a bad or unknown one is a problem naming it.
A model's size is the sum of its files (or
``size_bytes`` for a sim model with no files). `sllm make-test-model DIR` writes such an
entry for the tiny test model. Every problem in a file is reported at once, in one
`CatalogError`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sllm.workload.catalog import ModelSpec, default_catalog

# Enough for every demo and test workload: 64 = the 11 base sizes and their fine-tunes.
SERVED_MODELS = 64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,95}$")
# A model's own keep-alive is at most a day: longer is "always loaded", which a fleet
# gets by not evicting (KEEP_ALIVE), not per model.
KEEP_ALIVE_MAX_S = 86_400.0
# Files are hashed in 4 MiB reads: large enough to run at disk speed, small enough to
# stay in cache.
DIGEST_CHUNK_BYTES = 4 << 20
# What a catalog entry that names no engine runs on.
DEFAULT_ENGINE = "sim"


class EngineRules(Protocol):
    """What checking a catalog file asks of the engines (`sllm.engines.registry.REGISTERED`)."""

    def needs_checkpoint(self, engine: str, *, model: str) -> bool:
        """Whether `engine` loads a checkpoint (so `model` must name its source and files);
        raises ValueError, naming `model` and `engine`, for an engine not registered."""
        ...

    def option_problems(
        self, engine: str, *, model: str, options: Mapping[str, object]
    ) -> list[str]:
        """Every problem with `model`'s ``options`` for registered `engine` (none for an
        engine that takes its options as given)."""
        ...


class CatalogError(ValueError):
    """A catalog file that cannot be used; `problems` lists every one of them."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: invalid model catalog:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class CheckpointFile:
    path: str  # relative to the model's source
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """One servable model: what it is, where its checkpoint lives, which engine runs it."""

    name: str
    params_b: float
    size_bytes: int
    engine: str = DEFAULT_ENGINE
    source: str = ""
    files: tuple[CheckpointFile, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    keep_alive_s: float | None = None  # None: the worker's KEEP_ALIVE

    @property
    def gpus(self) -> int:
        """GPUs one copy runs on: the engine's ``tensor_parallel_size`` option (vllm), else 1."""
        size = self.options.get("tensor_parallel_size", 1)
        return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 1


def file_digest(path: str | Path) -> tuple[int, str]:
    """The size and sha256 of a checkpoint file, as a catalog entry records them (every
    fetch and description checks files with this); raises OSError."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(DIGEST_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def served_catalog(count: int = SERVED_MODELS) -> dict[str, CatalogModel]:
    """The default catalog: `count` models of real sizes, all on the sim engine."""
    return {spec.name: _simulated(spec) for spec in default_catalog(count)}


def _simulated(spec: ModelSpec) -> CatalogModel:
    return CatalogModel(spec.name, spec.params_b, spec.size_bytes)


def catalog_for(path: str | None, *, engines: EngineRules) -> dict[str, CatalogModel]:
    """The catalog a process serves: the file at `path`, its models' engines checked
    against `engines`, or the default one."""
    return load_catalog(path, engines=engines) if path else served_catalog()


def load_catalog(path: str | Path, *, engines: EngineRules) -> dict[str, CatalogModel]:
    """Read a JSON or TOML catalog file and check it, its models' engines against `engines`;
    raises CatalogError listing all problems."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CatalogError(name, [f"cannot read: {error.strerror or error}"]) from None
    try:
        document: Any = tomllib.loads(text) if name.endswith(".toml") else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise CatalogError(
            name, [f"not valid {'TOML' if name.endswith('.toml') else 'JSON'}: {error}"]
        ) from None
    problems: list[str] = []
    models: dict[str, CatalogModel] = {}
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CatalogError(name, ["expected a non-empty list 'models'"])
    for index, entry in enumerate(entries):
        model = _parse_model(entry, f"models[{index}]", problems, engines)
        if model is None:
            continue
        if model.name in models:
            problems.append(f"models[{index}]: duplicate name {model.name!r}")
        models[model.name] = model
    if problems:
        raise CatalogError(name, problems)
    return models


def parse_model(entry: object, *, engines: EngineRules, where: str = "model") -> CatalogModel:
    """One catalog entry (the dict a file's ``[[models]]`` table holds), checked against
    `engines`; raises CatalogError listing every problem. The model registry takes what
    users deploy through this, so a deployed model obeys the rules a file's does."""
    problems: list[str] = []
    model = _parse_model(entry, where, problems, engines)
    if model is None or problems:
        raise CatalogError(where, problems)
    return model


def entry_of(model: CatalogModel) -> dict[str, Any]:
    """`model` as a catalog entry: `parse_model` of it gives `model` back, field for field."""
    return {
        "name": model.name,
        "engine": model.engine,
        "source": model.source,
        "params_b": model.params_b,
        "size_bytes": model.size_bytes,
        "options": dict(model.options),
        "files": [
            {"path": file.path, "size": file.size, "sha256": file.sha256} for file in model.files
        ],
        **({} if model.keep_alive_s is None else {"keep_alive_s": model.keep_alive_s}),
    }


def catalog_entry_json(model: CatalogModel) -> str:
    """The canonical JSON text of `model`'s entry (sorted keys, no spaces): equal models
    give equal text, so a registry replica can compare and hash it."""
    return json.dumps(entry_of(model), sort_keys=True, separators=(",", ":"))


def model_from_entry_json(text: str, *, engines: EngineRules) -> CatalogModel:
    """The model `catalog_entry_json` wrote; raises CatalogError if the text is not one."""
    try:
        entry = json.loads(text)
    except ValueError as error:
        raise CatalogError("model", [f"not valid JSON: {error}"]) from None
    return parse_model(entry, engines=engines)


def _parse_model(
    entry: object, where: str, problems: list[str], engines: EngineRules
) -> CatalogModel | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a table/object")
        return None
    known = {
        "name",
        "source",
        "engine",
        "params_b",
        "size_bytes",
        "options",
        "files",
        "keep_alive_s",
    }
    for key in sorted(set(entry) - known):
        problems.append(f"{where}: unknown key {key!r}")
    before = len(problems)
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"{where}.name: expected a model name (letters, digits, ._/-), got {name!r}"
        )
    engine = entry.get("engine", DEFAULT_ENGINE)
    needs_checkpoint = False
    registered = False
    if not isinstance(engine, str):
        problems.append(f"{where}.engine: expected an engine's name, got {engine!r}")
    else:
        try:
            needs_checkpoint = engines.needs_checkpoint(engine, model=str(name))
            registered = True
        except ValueError as error:  # not registered
            problems.append(f"{where}.engine: {error}")
    source = entry.get("source", "")
    if not isinstance(source, str):
        problems.append(f"{where}.source: expected a directory or URL string")
    options = entry.get("options", {})
    if not isinstance(options, dict):
        problems.append(f"{where}.options: expected a table/object")
    elif registered:
        assert isinstance(engine, str)
        found = engines.option_problems(engine, model=str(name), options=options)
        problems.extend(f"{where}.options: {problem}" for problem in found)
    files = _parse_files(entry.get("files", []), f"{where}.files", problems)
    size = entry.get("size_bytes", sum(f.size for f in files))
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        problems.append(f"{where}.size_bytes: expected a positive integer (or files), got {size!r}")
    elif files and size != sum(f.size for f in files):
        problems.append(f"{where}.size_bytes: {size} is not the sum of its files")
    # Unless given, two bytes a parameter; a bad size is reported once, not again here.
    size_ok = isinstance(size, int) and not isinstance(size, bool) and size > 0
    params = entry.get("params_b", size / 2e9 if size_ok else 1.0)
    if isinstance(params, bool) or not isinstance(params, int | float) or params <= 0:
        problems.append(f"{where}.params_b: expected a positive number, got {params!r}")
    keep_alive = entry.get("keep_alive_s")
    if keep_alive is not None and (
        isinstance(keep_alive, bool)
        or not isinstance(keep_alive, int | float)
        or not 0 <= keep_alive <= KEEP_ALIVE_MAX_S
    ):
        problems.append(
            f"{where}.keep_alive_s: expected seconds in 0..{KEEP_ALIVE_MAX_S:g}, got {keep_alive!r}"
        )
    if needs_checkpoint and (not source or not files):
        problems.append(f"{where}: a {engine} model needs a source and its files")
    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(size, int) and isinstance(source, str)
    return CatalogModel(
        name=name,
        params_b=float(params),
        size_bytes=size,
        engine=str(engine),
        source=source,
        files=files,
        options=dict(options),
        keep_alive_s=None if keep_alive is None else float(keep_alive),
    )


def _parse_files(raw: object, where: str, problems: list[str]) -> tuple[CheckpointFile, ...]:
    if not isinstance(raw, list):
        problems.append(f"{where}: expected a list")
        return ()
    files: list[CheckpointFile] = []
    for index, item in enumerate(raw):
        spot = f"{where}[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{spot}: expected a table/object")
            continue
        path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
        ok = True
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            problems.append(f"{spot}.path: expected a relative path inside the model, got {path!r}")
            ok = False
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            problems.append(f"{spot}.size: expected a byte count, got {size!r}")
            ok = False
        if not isinstance(digest, str) or not _SHA256.match(digest):
            problems.append(f"{spot}.sha256: expected 64 lowercase hex digits")
            ok = False
        if ok:
            assert isinstance(path, str) and isinstance(size, int) and isinstance(digest, str)
            files.append(CheckpointFile(path, size, digest))
    return tuple(files)

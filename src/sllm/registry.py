"""The model registry: the models a cluster serves, deployed, updated and deleted at runtime.

Why it exists: a catalog file fixes the models at start, must be shared by every process and
needs each file's size and sha256 written by hand. The registry holds them instead, on the
coordinator, persisted in one SQLite file (REGISTRY_PATH), so a restart keeps every
deployed model. A catalog file (MODEL_CATALOG), or the default simulated catalog, only seeds
an empty registry.

Each entry is a model's catalog entry (`sllm.catalog.entry_of`: name, source, engine, engine
options, files) with a status:

- ``registered``: accepted, its files not yet described (a model with a checkpoint);
- ``downloading``: its source is being described (a directory hashed, the hub asked;
  `sllm.sources`);
- ``ready``: servable; it is in `served`, the live catalog the coordinator places with;
- ``failed``: describing its source failed; ``error`` says why. Deploying the same name
  again replaces it.

A deploy is checked whole before anything is stored (the name, the engine and its options,
the source's form), so a refused one leaves nothing behind; what can only be found by
reading the source (a missing file, a wrong hash) ends in ``failed`` with the error. A sim
model has no checkpoint and is ready at once.

Every change bumps the registry's ``version``, which workers poll as an ETag
(`sllm.runtime.registry_sync`). Not thread-safe: the coordinator's event loop owns it, and
describing a source runs in a thread that hands its result back (`describe_pending`).

Not handled yet: a per-model slot count (a worker's slots are shared by its models).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sllm.catalog import (
    DEFAULT_ENGINE,
    CatalogError,
    CatalogModel,
    CheckpointFile,
    EngineRules,
    entry_of,
    parse_model,
)
from sllm.sources import SourceError, describe_source, pin_source


class Status(StrEnum):
    REGISTERED = "registered"
    DOWNLOADING = "downloading"
    READY = "ready"
    FAILED = "failed"


class RegistryError(ValueError):
    """A deploy, update or delete that cannot be done; `status` is the HTTP status it maps
    to (400 bad input, 404 unknown model, 409 a conflict) and `code` OpenAI's error code."""

    def __init__(self, message: str, *, status: int, code: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryEntry:
    """One model of the registry as the admin API lists it."""

    name: str
    entry: Mapping[str, Any]  # the catalog entry (`sllm.catalog.entry_of` of the model)
    status: Status
    error: str
    version: int
    updated_at: float  # wall-clock seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "error": self.error or None,
            "version": self.version,
            "updated_at": self.updated_at,
            **{key: value for key, value in self.entry.items() if key != "name"},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingSource:
    """A model whose source must be described before it can be ready."""

    name: str
    source: str
    listed: tuple[CheckpointFile, ...]  # files the user gave, checked against the source
    version: int  # the entry's version when it was taken: a later change supersedes it


_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    entry TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Where workers read the registry's ready models (`sllm.api.admin` serves it,
# `sllm.runtime.registry_sync` reads it).
INTERNAL_MODELS_PATH = "/internal/v1/models"
# A registry kept in memory only (REGISTRY_PATH unset): seeded at every start.
IN_MEMORY = ":memory:"
# What a deploy may name besides the name itself (`sllm.catalog` checks each).
DEPLOY_FIELDS = frozenset(
    {"source", "engine", "options", "files", "params_b", "size_bytes", "keep_alive_s"}
)
# What an update may change: the engine's settings and the keep-alive. A new source or
# engine is a new deploy.
UPDATE_FIELDS = frozenset({"options", "keep_alive_s"})


class ModelRegistry:
    """The registry in its SQLite file, and `served`: its ready models, by name."""

    def __init__(
        self,
        path: str | Path,
        *,
        engines: EngineRules,
        seed: Mapping[str, CatalogModel],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.engines = engines
        self.clock = clock
        if str(path) != IN_MEMORY:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)  # autocommit; see _write
        self.db.executescript(_SCHEMA)
        self.served: dict[str, CatalogModel] = {}  # the live catalog: ready models
        # Names this registry's versions: an in-memory one restarts its count, so a
        # worker's ETag from before a restart must not match after it.
        self.instance = uuid.uuid4().hex[:12]
        # Told of every change made here (a model ready, updated or deleted), not of those
        # `adopt`ed or `forget`ed: a decentralized node gossips them (`sllm.runtime.node`).
        self.on_change: Callable[[str, CatalogModel | None], None] | None = None
        self._entries: dict[str, RegistryEntry] = {}
        self.version = 0
        self._load()
        if self._get_meta("seeded") is None:
            self._seed(seed)

    # -- reading ---------------------------------------------------------------------

    def entries(self) -> list[RegistryEntry]:
        """Every model, by name."""
        return [self._entries[name] for name in sorted(self._entries)]

    def get(self, name: str) -> RegistryEntry | None:
        return self._entries.get(name)

    def not_ready(self, name: str) -> RegistryEntry | None:
        """`name`'s entry when it is registered but not (or no longer) servable."""
        found = self._entries.get(name)
        return found if found is not None and found.status is not Status.READY else None

    def pending(self) -> list[PendingSource]:
        """Models whose source is still to be described, oldest change first."""
        waiting = [e for e in self._entries.values() if e.status is Status.REGISTERED]
        return [
            PendingSource(
                name=entry.name,
                source=str(entry.entry.get("source", "")),
                listed=tuple(
                    CheckpointFile(f["path"], f["size"], f["sha256"])
                    for f in entry.entry.get("files", ())
                ),
                version=entry.version,
            )
            for entry in sorted(waiting, key=lambda entry: entry.version)
        ]

    # -- changing --------------------------------------------------------------------

    def deploy(self, name: str, fields: Mapping[str, Any]) -> RegistryEntry:
        """Register `name` with `fields` (a catalog entry's, less the name); raises
        RegistryError, storing nothing, when the name is taken or the entry is invalid."""
        unknown = sorted(set(fields) - DEPLOY_FIELDS)
        if unknown:
            raise RegistryError(
                f"unknown field(s) {', '.join(unknown)}; a model takes "
                f"{', '.join(sorted(DEPLOY_FIELDS))}",
                status=400,
                code="invalid_value",
                param=unknown[0],
            )
        existing = self._entries.get(name)
        if existing is not None and existing.status is not Status.FAILED:
            raise RegistryError(
                f"model {name!r} is already deployed ({existing.status.value}); update or "
                "delete it first",
                status=409,
                code="model_exists",
                param="name",
            )
        entry = {"name": name, "engine": DEFAULT_ENGINE, **fields}
        checkpointed = self._check(entry, needs_files=False)
        if checkpointed:
            _check_source_form(str(entry.get("source", "")))
            return self._write(name, entry, Status.REGISTERED, "")
        model = self._parse(entry)
        return self._write(name, entry_of(model), Status.READY, "", model=model)

    def update(self, name: str, changes: Mapping[str, Any]) -> RegistryEntry:
        """Change `name`'s engine settings; raises RegistryError when it is unknown or the
        result is invalid (nothing changes then)."""
        current = self.require(name)
        unknown = sorted(set(changes) - UPDATE_FIELDS)
        if unknown:
            raise RegistryError(
                f"cannot update {', '.join(unknown)}: only {', '.join(sorted(UPDATE_FIELDS))} "
                "change in place (deploy again under a new name for a new source or engine)",
                status=400,
                code="invalid_value",
                param=unknown[0],
            )
        entry = {**current.entry, **changes}
        if current.status is not Status.READY:
            self._check(entry, needs_files=False)
            return self._write(name, entry, current.status, current.error)
        model = self._parse(entry)
        return self._write(name, entry_of(model), Status.READY, "", model=model)

    def delete(self, name: str) -> RegistryEntry:
        """Remove `name`; raises RegistryError when it is unknown. Draining its requests
        first is the caller's (`sllm.api.admin`)."""
        removed = self.require(name)
        self.version += 1
        with self._transaction():
            self.db.execute("DELETE FROM models WHERE name = ?", (name,))
            self._set_meta("version", str(self.version))
        del self._entries[name]
        self.served.pop(name, None)
        if self.on_change is not None:
            self.on_change(name, None)
        return removed

    @property
    def etag(self) -> str:
        """What workers compare: this registry's instance and version."""
        return f'"{self.instance}-{self.version}"'

    def withdraw(self, name: str) -> CatalogModel | None:
        """Stop serving `name` for now (a delete draining its requests); `restore` undoes
        it. The version moves, so workers see the change."""
        model = self.served.pop(name, None)
        if model is not None:
            self.version += 1
        return model

    def restore(self, name: str, model: CatalogModel) -> None:
        """Serve `name` again after a drain that did not end in its delete."""
        if name in self._entries and name not in self.served:
            self.served[name] = model
            self.version += 1

    def adopt(self, name: str, model: CatalogModel) -> None:
        """Serve `model` as ready, as another node deployed it (no `on_change`)."""
        if self.served.get(name) != model:
            self._write(name, entry_of(model), Status.READY, "", model=model, quiet=True)

    def forget(self, name: str) -> None:
        """Remove `name`, as another node deleted it (no `on_change`)."""
        if name in self._entries:
            hook, self.on_change = self.on_change, None
            try:
                self.delete(name)
            finally:
                self.on_change = hook

    def start_describing(self, pending: PendingSource) -> bool:
        """Mark `pending` as being described; False if it changed since it was taken."""
        current = self._entries.get(pending.name)
        if current is None or current.version != pending.version:
            return False
        self._write(pending.name, dict(current.entry), Status.DOWNLOADING, "")
        return True

    def described(self, name: str, outcome: Description) -> RegistryEntry | None:
        """The outcome of describing `name`'s source: its files and pinned source (then
        it is ready) or the error (then it failed). None if the model was deleted or
        redeployed meanwhile."""
        current = self._entries.get(name)
        if current is None or current.status is not Status.DOWNLOADING:
            return None
        if outcome.error:
            return self._write(name, dict(current.entry), Status.FAILED, outcome.error)
        entry = {
            **current.entry,
            "source": outcome.source or current.entry.get("source", ""),
            "files": [_file_dict(f) for f in outcome.files],
        }
        entry.pop("size_bytes", None)  # the sum of the files now
        try:
            model = self._parse(entry)
        except RegistryError as problem:
            return self._write(name, dict(current.entry), Status.FAILED, str(problem))
        return self._write(name, entry_of(model), Status.READY, "", model=model)

    def describe_pending(self) -> list[RegistryEntry]:
        """Describe every pending source here and now (blocking: for tools and tests; the
        services do it in a thread, `sllm.runtime.registry_sync.describe_pending`)."""
        done = []
        for pending in self.pending():
            if not self.start_describing(pending):
                continue
            entry = self.described(pending.name, describe(pending))
            if entry is not None:
                done.append(entry)
        return done

    def close(self) -> None:
        self.db.close()

    # -- inside ----------------------------------------------------------------------

    def require(self, name: str) -> RegistryEntry:
        """`name`'s entry; raises RegistryError (404) when the registry does not know it."""
        found = self._entries.get(name)
        if found is None:
            raise RegistryError(
                f"the model {name!r} does not exist", status=404, code="model_not_found"
            )
        return found

    def _check(self, entry: Mapping[str, Any], *, needs_files: bool) -> bool:
        """Check `entry` as a catalog would (its files aside, unless `needs_files`); return
        whether its engine loads a checkpoint."""
        engine = entry.get("engine")
        try:
            checkpointed = self.engines.needs_checkpoint(str(engine), model=str(entry["name"]))
        except ValueError as error:
            raise RegistryError(
                str(error), status=400, code="invalid_value", param="engine"
            ) from None
        if checkpointed and not needs_files:
            # Parse with a placeholder file, so every other problem is found now.
            placeholder = {"path": "placeholder", "size": 1, "sha256": "0" * 64}
            given = entry.get("files") or [placeholder]
            checked = {**entry, "files": given, "source": entry.get("source") or "."}
            if not entry.get("files"):
                checked.pop("size_bytes", None)  # the files' sum, once they are known
            self._parse(checked)
        else:
            self._parse(entry)
        return checkpointed

    def _parse(self, entry: Mapping[str, Any]) -> CatalogModel:
        try:
            return parse_model(dict(entry), engines=self.engines, where=str(entry.get("name")))
        except CatalogError as error:
            raise RegistryError(
                "; ".join(error.problems), status=400, code="invalid_value"
            ) from None

    def _write(
        self,
        name: str,
        entry: Mapping[str, Any],
        status: Status,
        error: str,
        *,
        model: CatalogModel | None = None,
        quiet: bool = False,
    ) -> RegistryEntry:
        self.version += 1
        stored = RegistryEntry(
            name=name,
            entry=dict(entry),
            status=status,
            error=error,
            version=self.version,
            updated_at=self.clock(),
        )
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO models (name, entry, status, error, version, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    name,
                    json.dumps(stored.entry, sort_keys=True),
                    status.value,
                    error,
                    stored.version,
                    stored.updated_at,
                ),
            )
            self._set_meta("version", str(self.version))
        self._entries[name] = stored
        if model is not None:
            self.served[name] = model
            if self.on_change is not None and not quiet:
                self.on_change(name, model)
        else:
            self.served.pop(name, None)
        return stored

    def _load(self) -> None:
        """Read every stored entry; a model caught mid-description is described again."""
        self.version = int(self._get_meta("version") or 0)
        query = "SELECT name, entry, status, error, version, updated_at FROM models"
        with closing(self.db.execute(query)) as rows:
            stored = list(rows)
        for name, text, status_text, error, version, updated_at in stored:
            entry = json.loads(text)
            status = Status(status_text)
            if status is Status.DOWNLOADING:  # interrupted by a restart
                status = Status.REGISTERED
            self._entries[name] = RegistryEntry(
                name=name,
                entry=entry,
                status=status,
                error=error,
                version=version,
                updated_at=updated_at,
            )
            if status is Status.READY:
                try:
                    self.served[name] = self._parse(entry)
                except RegistryError as problem:  # an engine since unregistered, say
                    self._entries[name] = RegistryEntry(
                        name=name,
                        entry=entry,
                        status=Status.FAILED,
                        error=f"no longer valid: {problem}",
                        version=version,
                        updated_at=updated_at,
                    )

    def _seed(self, seed: Mapping[str, CatalogModel]) -> None:
        with self._transaction():
            for name, model in seed.items():
                self._write(name, entry_of(model), Status.READY, "", model=model)
            self._set_meta("seeded", "1")

    def _get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """BEGIN ... COMMIT (ROLLBACK on an error), nestable: only the outermost commits."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outermost = not db.in_transaction

    def __enter__(self) -> None:
        if self.outermost:
            self.db.execute("BEGIN")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if self.outermost:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")


@dataclass(frozen=True, slots=True, kw_only=True)
class Description:
    """What describing a source found: its files and the source pinned (a hub id at its
    commit), or the error."""

    files: tuple[CheckpointFile, ...] = ()
    source: str = ""
    error: str = ""


def describe(pending: PendingSource) -> Description:
    """`pending`'s source pinned, and its files, or the error describing it ended in
    (blocking). Any error ends in ``failed`` with its message: none may leave a model
    ``downloading``."""
    try:
        source = pin_source(pending.source)
        return Description(files=describe_source(source, listed=pending.listed), source=source)
    except SourceError as error:
        return Description(error=str(error))
    except Exception as error:  # a client library's own error: still the source's failure
        return Description(error=f"{pending.source}: {type(error).__name__}: {error}")


def _check_source_form(source: str) -> None:
    """Refuse, before anything is stored, a source that cannot be one: empty, or a local
    directory that does not exist."""
    if not source:
        raise RegistryError(
            "a model with a checkpoint needs a source (a directory, a URL or a Hugging Face id)",
            status=400,
            code="invalid_value",
            param="source",
        )
    path = source.removeprefix("file://")
    if path.startswith("/") and not Path(path).is_dir():
        raise RegistryError(
            f"the source {source!r} does not exist (no such directory)",
            status=400,
            code="source_not_found",
            param="source",
        )


def _file_dict(file: CheckpointFile) -> dict[str, Any]:
    return {"path": file.path, "size": file.size, "sha256": file.sha256}

"""The model store: checkpoints fetched from a remote tier into a local disk cache.

The remote tier is a directory, an http(s) URL that serves a model's checkpoint files, or
a Hugging Face id (`sllm.hub`: downloads in parallel, resumed and retried).
`ModelStore.fetch` copies a model's files into ``CACHE_DIR/<model>/``, verifying each
file's size and sha256 against the catalog. Every file is written to a temporary name
and renamed only once it checks out, and the model is marked complete (a ``.complete``
file) only after all its files did, so a partial or corrupt download is never used: the
next fetch starts that model over.

What stays on disk is decided by the worker state machine (`sllm.core.worker`), which
keeps the disk tier as an LRU cache by bytes and emits ``Evict(model, DISK, REMOTE)``;
the runtime carries that out with `ModelStore.evict`. At start, `cached()` tells the
state machine what the disk already holds, so the tiers it reports are the truth.

Blocking I/O: call `fetch` from a worker thread, not the event loop.
A model larger than the disk tier (`capacity_bytes`, MODEL_CACHE_GB) is refused with the
sizes, and a full disk says so; either way nothing is marked complete.

Not handled yet for directory and http(s) sources (a hub source has all three):
resuming a partial download, parallel file downloads, authentication.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sllm import hub
from sllm.catalog import CatalogModel, CheckpointFile, file_digest

COMPLETE_MARKER = ".complete"
# Copy in 1 MiB pieces: large enough to stream at disk speed, small enough to hash as we go.
CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 60.0


class StoreError(RuntimeError):
    """A checkpoint could not be fetched or did not verify."""


class ModelStore:
    def __init__(
        self,
        cache_dir: str | Path,
        timeout_s: float = DOWNLOAD_TIMEOUT_S,
        *,
        capacity_bytes: int | None = None,
    ) -> None:
        """`capacity_bytes` is the disk tier's size (MODEL_CACHE_GB): a model larger than
        it is refused rather than fetched and evicted at once, again and again."""
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.capacity_bytes = capacity_bytes

    def model_dir(self, model: CatalogModel) -> Path:
        return self.cache_dir / model.name.replace("/", "--")

    def is_cached(self, model: CatalogModel) -> bool:
        return (self.model_dir(model) / COMPLETE_MARKER).exists()

    def cached(self, catalog: dict[str, CatalogModel]) -> list[str]:
        """Catalog models whose complete checkpoint is on disk."""
        return [name for name, model in catalog.items() if model.files and self.is_cached(model)]

    def fetch(self, model: CatalogModel, progress: Callable[[int], None] | None = None) -> Path:
        """Bring `model` into the disk cache (a no-op when already there); return its folder."""
        target = self.model_dir(model)
        if self.is_cached(model):
            return target
        if not model.source or not model.files:
            raise StoreError(f"{model.name}: no source or files in the catalog to fetch")
        if self.capacity_bytes is not None and model.size_bytes > self.capacity_bytes:
            raise StoreError(
                f"{model.name}: {model.size_bytes / 1e9:.2f} GB does not fit the disk cache "
                f"of {self.capacity_bytes / 1e9:.2f} GB (MODEL_CACHE_GB)"
            )
        target.mkdir(parents=True, exist_ok=True)
        if hub.is_hub_id(model.source):
            self._fetch_from_hub(model, target, progress)
        else:
            for checkpoint_file in model.files:
                self._fetch_file(model, checkpoint_file, target, progress)
        (target / COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
        return target

    def _fetch_from_hub(
        self, model: CatalogModel, target: Path, progress: Callable[[int], None] | None
    ) -> None:
        """Download `model`'s files from the hub into `target` (`sllm.hub`: parallel,
        resumed, retried), then check each against the registry's size and sha256; a file
        that does not match is deleted, so the next fetch downloads it again."""
        try:
            reference = hub.parse_hub_id(model.source)
            hub.fetch_hub_files(reference, [file.path for file in model.files], target)
        except hub.HubError as error:
            raise StoreError(f"{model.name}: {error}") from None
        except OSError as error:
            raise StoreError(f"{model.name}: {_described(error)}") from error
        for checkpoint_file in model.files:
            path = target / checkpoint_file.path
            size, digest = _size_and_sha256(path)
            if size != checkpoint_file.size or digest != checkpoint_file.sha256:
                path.unlink(missing_ok=True)
                raise StoreError(
                    f"{model.name}/{checkpoint_file.path}: {size} bytes with sha256 {digest}, "
                    f"expected {checkpoint_file.size} bytes with {checkpoint_file.sha256}"
                )
            if progress is not None:
                progress(size)

    def evict(self, model: CatalogModel) -> None:
        """Delete a model's cached files (the marker first, so a half-deleted copy is unused)."""
        target = self.model_dir(model)
        (target / COMPLETE_MARKER).unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)

    def _fetch_file(
        self,
        model: CatalogModel,
        checkpoint_file: CheckpointFile,
        target: Path,
        progress: Callable[[int], None] | None,
    ) -> None:
        final = target / checkpoint_file.path
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.partial-{os.getpid()}")
        digest = hashlib.sha256()
        written = 0
        try:
            with (
                self._open_source(model.source, checkpoint_file.path) as source,
                open(temporary, "wb") as sink,
            ):
                while chunk := source.read(CHUNK_BYTES):
                    written += len(chunk)
                    if written > checkpoint_file.size:
                        raise StoreError(
                            f"{model.name}/{checkpoint_file.path}: larger than the catalog's "
                            f"{checkpoint_file.size} bytes"
                        )
                    digest.update(chunk)
                    sink.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                sink.flush()
                os.fsync(sink.fileno())
            if written != checkpoint_file.size:
                raise StoreError(
                    f"{model.name}/{checkpoint_file.path}: {written} bytes, "
                    f"the catalog says {checkpoint_file.size}"
                )
            if digest.hexdigest() != checkpoint_file.sha256:
                raise StoreError(f"{model.name}/{checkpoint_file.path}: sha256 mismatch")
            os.replace(temporary, final)
        except OSError as error:
            raise StoreError(f"{model.name}/{checkpoint_file.path}: {_described(error)}") from error
        finally:
            temporary.unlink(missing_ok=True)

    def _open_source(self, source: str, relative: str) -> BinaryIO:
        scheme = urllib.parse.urlsplit(source).scheme
        if scheme in ("http", "https"):
            url = source.rstrip("/") + "/" + urllib.parse.quote(relative)
            response = urllib.request.urlopen(url, timeout=self.timeout_s)
            return response  # type: ignore[no-any-return]
        if scheme not in ("", "file"):
            raise StoreError(f"unsupported source scheme {scheme!r} in {source!r}")
        root = urllib.parse.urlsplit(source).path if scheme == "file" else source
        return open(Path(root) / relative, "rb")


def _size_and_sha256(path: Path) -> tuple[int, str]:
    """`file_digest`, with a file the download did not leave as (0, "")."""
    try:
        return file_digest(path)
    except FileNotFoundError:
        return 0, ""


def _described(error: OSError) -> str:
    """An I/O error as an operator reads it: a full disk says so."""
    if error.errno == errno.ENOSPC:
        return "the disk is full (no space left for the checkpoint in MODEL_CACHE_DIR)"
    return str(error)

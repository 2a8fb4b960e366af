"""What a model's source holds: its checkpoint files, with sizes and sha256, before any fetch.

Why it exists: a catalog file names each file's size and sha256 by hand. A model deployed at
runtime (`sllm.registry`) names only its source; the registry asks this module for the files,
once, and from then on every worker's fetch checks them against those hashes
(`sllm.store.ModelStore`), so a source that changes or a download that breaks is caught.

- **A local directory** (an absolute path, or ``file://``): every regular file under it,
  hashed here. Hidden files (a cache's ``.complete`` marker, an editor's swap file) are
  skipped. Files the user listed are checked against what is there instead.
- **An http(s):// URL**: such a server lists nothing, so the user must list the files
  (path, size, sha256); they are taken as given, and the workers' fetch checks them.
- **A Hugging Face id** (``org/name[@revision]`` or ``hf://...``): the hub's own listing and
  LFS sha256 through `sllm.hub`.

Blocking I/O (hashing a directory reads every byte): call `describe_source` from a thread.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from sllm import hub
from sllm.catalog import CheckpointFile, file_digest


class SourceError(ValueError):
    """A source that does not exist, cannot be read, or does not hold what was listed."""


def pin_source(source: str) -> str:
    """`source` as the registry keeps it: a Hugging Face id at the commit its revision
    names now (`sllm.hub.pin_hub_model`), anything else as given."""
    if not hub.is_hub_id(source):
        return source
    try:
        return hub.pin_hub_model(source)
    except ImportError:
        raise SourceError(
            f"{source}: Hugging Face sources need huggingface_hub (pip install 'sllm[torch]')"
        ) from None
    except hub.HubError as error:
        raise SourceError(str(error)) from None


def describe_source(
    source: str, *, listed: Sequence[CheckpointFile] = ()
) -> tuple[CheckpointFile, ...]:
    """The checkpoint files `source` holds, each with its size and sha256; `listed` files
    (given by the user) are checked against a directory, or taken as given for a URL."""
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        if not listed:
            raise SourceError(
                f"{source}: an http(s) source lists no files; give them "
                "(path, size and sha256 of each) with the model"
            )
        return tuple(listed)
    if scheme == "file":
        return _describe_directory(Path(urllib.parse.urlsplit(source).path), listed)
    if scheme == "" and Path(source).is_absolute():
        return _describe_directory(Path(source), listed)
    if hub.is_hub_id(source):
        try:
            return hub.describe_hub_model(source)
        except ImportError:
            raise SourceError(
                f"{source}: Hugging Face sources need huggingface_hub (pip install 'sllm[torch]')"
            ) from None
        except hub.HubError as error:
            raise SourceError(str(error)) from None
    if scheme:
        raise SourceError(f"{source}: unsupported source scheme {scheme!r}")
    raise SourceError(
        f"{source}: not an absolute directory, an http(s):// URL or a Hugging Face id "
        "(org/name[@revision])"
    )


def _describe_directory(root: Path, listed: Sequence[CheckpointFile]) -> tuple[CheckpointFile, ...]:
    if not root.is_dir():
        raise SourceError(f"{root}: no such directory")
    if listed:
        return tuple(_checked(root, file) for file in listed)
    found: list[CheckpointFile] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            path = Path(directory) / name
            if name.startswith(".") or not path.is_file():
                continue
            relative = path.relative_to(root).as_posix()
            size, digest = _size_and_sha256(path)
            found.append(CheckpointFile(relative, size, digest))
    if not found:
        raise SourceError(f"{root}: the directory holds no files")
    return tuple(found)


def _checked(root: Path, file: CheckpointFile) -> CheckpointFile:
    path = root / file.path
    if not path.is_file():
        raise SourceError(f"{root}: no file {file.path!r}")
    size, digest = _size_and_sha256(path)
    if size != file.size:
        raise SourceError(f"{root}/{file.path}: {size} bytes, the model says {file.size}")
    if digest != file.sha256:
        raise SourceError(f"{root}/{file.path}: sha256 {digest} is not the given {file.sha256}")
    return file


def _size_and_sha256(path: Path) -> tuple[int, str]:
    try:
        return file_digest(path)
    except OSError as error:
        raise SourceError(f"{path}: {error.strerror or error}") from None

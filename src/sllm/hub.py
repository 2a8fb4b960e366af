"""Hugging Face Hub sources: a model named by its hub id, through the `huggingface_hub` client.

A source is a hub id when it reads ``hf://org/name[@revision]``, or ``org/name[@revision]``
that is neither a URL nor a path that exists here (`is_hub_id`). The revision defaults to
``main``.

- **Describing** (`describe_hub_model`, the registry's first look): the hub lists the
  repository's files with their sizes and, for each file stored in LFS (the weights), the
  sha256 the hub keeps for it. Only the files a model needs are kept (`NEEDED_PATTERNS`:
  safetensors weights, configs, tokenizer files; no other weight format when safetensors
  exist, no READMEs or images). A small file outside LFS has only a git blob id, not a
  sha256, so it is downloaded here once and hashed.
- **Fetching** (`fetch_hub_files`, a worker's cold start through `sllm.store.ModelStore`):
  each file with ``hf_hub_download`` into the worker's cache folder, `DOWNLOAD_WORKERS`
  files at a time. An interrupted file resumes where it stopped (the client keeps a
  ``.incomplete`` file and asks for the rest with a Range); a transient failure (a
  connection reset, a 5xx) is retried `FETCH_ATTEMPTS` times with backoff. The store then
  checks every file against the sha256 the registry holds.

``HF_ENDPOINT`` and ``HF_TOKEN`` are read here at each call, and handed to the client
explicitly (it reads them once, at import): a mirror or a private repository works, and
the tests point ``HF_ENDPOINT`` at a hub served on 127.0.0.1.

Blocking I/O: call from a thread.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sllm.catalog import CheckpointFile, file_digest

HUB_SCHEME = "hf://"
DEFAULT_REVISION = "main"
DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# What a model needs to load: its weights in safetensors, its configs and its tokenizer.
NEEDED_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "*.tiktoken",
    "chat_template.jinja",
)
# Weights in another format, fetched only when the repository has no safetensors.
FALLBACK_WEIGHT_PATTERNS = ("*.bin", "*.bin.index.json", "*.pt")
# Files at a time: a checkpoint's shards are 2-5 GB each; 8 streams fill a 10-25 Gbit/s
# link from the hub's CDN without one slow shard stalling the rest.
DOWNLOAD_WORKERS = 8
# Attempts per file, with the client resuming each from where the last one stopped.
FETCH_ATTEMPTS = 4
# Backoff between attempts: 1 s, 2 s, 4 s (a hub 5xx or a reset connection usually clears
# within seconds).
BACKOFF_BASE_S = 1.0


class HubError(RuntimeError):
    """A hub model that cannot be described or fetched; the message says which and why."""


@dataclass(frozen=True, slots=True)
class HubModel:
    repo_id: str
    revision: str


def is_hub_id(source: str) -> bool:
    """Whether `source` names a hub model (see the module's docstring for the rule)."""
    if source.startswith(HUB_SCHEME):
        return True
    if urllib.parse.urlsplit(source).scheme or source.startswith((".", "/", "~")):
        return False
    repo_id = source.partition("@")[0]
    return bool(_REPO_ID.match(repo_id)) and not Path(source).exists()


def parse_hub_id(source: str) -> HubModel:
    """`source` as a repository id and a revision; raises HubError when it is not one."""
    repo_id, _, revision = source.removeprefix(HUB_SCHEME).partition("@")
    if not _REPO_ID.match(repo_id):
        raise HubError(f"{source}: not a Hugging Face id (org/name[@revision])")
    return HubModel(repo_id, revision or DEFAULT_REVISION)


def endpoint() -> str:
    """The hub's address: HF_ENDPOINT, or the public hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    """HF_TOKEN, for private or gated repositories (None: anonymous)."""
    return os.environ.get("HF_TOKEN") or None


def needed_files(paths: Sequence[str]) -> list[str]:
    """The files of a repository (`paths`) a model needs, in the repository's order."""
    has_safetensors = any(fnmatch.fnmatch(Path(p).name, "*.safetensors") for p in paths)
    patterns = NEEDED_PATTERNS if has_safetensors else NEEDED_PATTERNS + FALLBACK_WEIGHT_PATTERNS
    return [p for p in paths if any(fnmatch.fnmatch(Path(p).name, pat) for pat in patterns)]


def pin_hub_model(source: str) -> str:
    """`source` at the commit its revision names now (``hf://org/name@<commit>``): the
    registry keeps this, so every worker fetches the very files whose hashes it holds,
    however the branch moves later. Raises HubError."""
    from httpx2 import TransportError
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    model = parse_hub_id(source)
    if _COMMIT.match(model.revision):
        return f"{HUB_SCHEME}{model.repo_id}@{model.revision}"
    try:
        info = HfApi(endpoint=endpoint(), token=token()).model_info(
            model.repo_id, revision=model.revision
        )
    except HfHubHTTPError as error:
        raise HubError(f"{source}: {_reason(error)}") from None
    except (OSError, TransportError) as error:
        raise HubError(f"{source}: the hub at {endpoint()} cannot be reached: {error}") from None
    if not info.sha:
        raise HubError(f"{source}: the hub named no commit for {model.revision!r}")
    return f"{HUB_SCHEME}{model.repo_id}@{info.sha}"


def describe_hub_model(source: str) -> tuple[CheckpointFile, ...]:
    """The files `source` needs, with sizes and sha256 (the hub's for LFS files, computed
    here for the others); raises HubError naming the repository and the reason."""
    from httpx2 import TransportError
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    model = parse_hub_id(source)
    api = HfApi(endpoint=endpoint(), token=token())
    try:
        info = api.model_info(model.repo_id, revision=model.revision, files_metadata=True)
    except HfHubHTTPError as error:
        raise HubError(f"{source}: {_reason(error)}") from None
    except (OSError, TransportError) as error:  # refused, reset, timed out
        raise HubError(f"{source}: the hub at {endpoint()} cannot be reached: {error}") from None
    siblings = {sibling.rfilename: sibling for sibling in info.siblings or ()}
    wanted = needed_files(list(siblings))
    if not any(fnmatch.fnmatch(p, "*.safetensors") or p.endswith((".bin", ".pt")) for p in wanted):
        raise HubError(f"{source}: the repository holds no model weights")
    described: list[CheckpointFile] = []
    unhashed: list[str] = []
    for path in wanted:
        sibling = siblings[path]
        if sibling.lfs is not None:
            described.append(CheckpointFile(path, int(sibling.lfs.size), str(sibling.lfs.sha256)))
        else:
            unhashed.append(path)
    if unhashed:
        revision = info.sha or model.revision  # the commit just listed, not a moving branch
        with tempfile.TemporaryDirectory(prefix="sllm-hub-") as scratch:
            fetch_hub_files(HubModel(model.repo_id, revision), unhashed, Path(scratch))
            for path in unhashed:
                size, digest = file_digest(Path(scratch) / path)
                described.append(CheckpointFile(path, size, digest))
    order = {path: index for index, path in enumerate(wanted)}
    return tuple(sorted(described, key=lambda file: order[file.path]))


def fetch_hub_files(
    model: HubModel,
    paths: Sequence[str],
    target: Path,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Download `paths` of `model` into `target` (same relative paths), in parallel, each
    resumed and retried on a transient failure; raises HubError naming the file."""
    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS, thread_name_prefix="hub") as pool:
        list(pool.map(lambda path: _fetch_one(model, path, target, sleep), paths))


def _fetch_one(model: HubModel, path: str, target: Path, sleep: Callable[[float], None]) -> None:
    from httpx2 import TransportError
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(FETCH_ATTEMPTS):
        try:
            hf_hub_download(
                model.repo_id,
                path,
                revision=model.revision,
                local_dir=target,
                endpoint=endpoint(),
                token=token(),
            )
            return
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else 0
            if status < 500 or attempt + 1 == FETCH_ATTEMPTS:
                raise HubError(f"{model.repo_id}/{path}: {_reason(error)}") from None
        except (OSError, TransportError) as error:  # a reset connection, a timeout
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise  # a full disk is not transient (the store says so)
            if attempt + 1 == FETCH_ATTEMPTS:
                raise HubError(f"{model.repo_id}/{path}: {error}") from None
        sleep(BACKOFF_BASE_S * 2**attempt)


def _reason(error: Exception) -> str:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status == 401:
        return "the hub refused the token (HF_TOKEN) or the repository is private"
    if status == 404:
        return "no such repository or revision on the hub"
    return str(error).splitlines()[0]

"""A Hugging Face hub on 127.0.0.1, for the real `huggingface_hub` client to talk to (the
`fake_hub` fixture; tests/conftest.py makes it available to every test).

`FakeHub` serves repositories from directories laid out as the hub serves them: the model
API (``GET /api/models/{repo}/revision/{rev}``, with each file's size, blob id and, for LFS
files, sha256) and file downloads (``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with the
headers the client reads: ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``,
``X-Linked-Size``, and ``Range`` for resuming). It can require a token, drop a connection
in the middle of a file, or answer 503 a given number of times, and it records every
request, so tests see what the client asked for.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Files stored in LFS on the hub (the weights); the rest are plain git blobs.
LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class Repository:
    directory: Path
    revisions: tuple[str, ...] = ("main", COMMIT)


@dataclass
class Request:
    method: str
    path: str
    range: str
    authorization: str


@dataclass
class FakeHub:
    url: str = ""
    repositories: dict[str, Repository] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    token: str | None = None  # when set, every request must carry it
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, once
    unavailable: dict[str, int] = field(default_factory=dict)  # path -> 503s to answer
    corrupt: set[str] = field(default_factory=set)  # paths served with a flipped byte

    def add(self, repo_id: str, directory: Path) -> None:
        self.repositories[repo_id] = Repository(directory)

    def downloads(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + path)]


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        hub = self.hub
        path = urllib.parse.urlsplit(self.path).path
        hub.requests.append(
            Request(
                self.command,
                path,
                self.headers.get("Range", ""),
                self.headers.get("Authorization", ""),
            )
        )
        if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
            self._error(401, "Invalid credentials", "")
            return
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if api:
            self._model_info(urllib.parse.unquote(api[1]), urllib.parse.unquote(api[2]))
            return
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if resolve:
            repo_id, revision, name = (urllib.parse.unquote(part) for part in resolve.groups())
            self._file(repo_id, revision, name, body=body)
            return
        self._error(404, "no such route", "EntryNotFound")

    def _repository(self, repo_id: str, revision: str) -> Repository | None:
        repository = self.hub.repositories.get(repo_id)
        if repository is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if revision not in repository.revisions:
            self._error(404, "Invalid rev id", "RevisionNotFound")
            return None
        return repository

    def _model_info(self, repo_id: str, revision: str) -> None:
        repository = self._repository(repo_id, revision)
        if repository is None:
            return
        siblings = []
        for file in _files(repository.directory):
            data = file.read_bytes()
            sibling: dict[str, object] = {
                "rfilename": file.relative_to(repository.directory).as_posix(),
                "size": len(data),
                "blobId": _blob_id(data),
            }
            if file.name.endswith(LFS_SUFFIXES):
                sibling["lfs"] = {"sha256": _sha256(data), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        self._json({"id": repo_id, "modelId": repo_id, "sha": COMMIT, "siblings": siblings})

    def _file(self, repo_id: str, revision: str, name: str, *, body: bool) -> None:
        hub = self.hub
        repository = self._repository(repo_id, revision)
        if repository is None:
            return
        file = repository.directory / name
        if not file.is_file():
            self._error(404, "Entry not found", "EntryNotFound")
            return
        if body and hub.unavailable.get(name, 0) > 0:
            hub.unavailable[name] -= 1
            self._error(503, "Service unavailable", "")
            return
        data = file.read_bytes()
        etag = _sha256(data) if name.endswith(LFS_SUFFIXES) else _blob_id(data)
        if name in hub.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        requested = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if body and requested:
            start = int(requested[1])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag}"')
        if name.endswith(LFS_SUFFIXES):
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        cut = hub.drop_after.pop(name, None)
        if cut is not None:
            self.wfile.write(data[start : start + cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the client sees the stream end early
            return
        self.wfile.write(data[start:])

    def _json(self, document: object) -> None:
        payload = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str, code: str) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A hub on 127.0.0.1; HF_ENDPOINT points at it and HF_TOKEN is unset."""
    hub = FakeHub()
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

"""Fixtures of the serving tests: a coordinator with the front door and HTTP workers, live.

Every service is a real child process (`ServiceProcess`) on 127.0.0.1 with port 0; the
ports come from their ``listening`` and ``http_listening`` log events. A cluster is used
either inside a test (``async with serving_cluster(...) as cluster``), or, for the tests
that only send requests, shared by a module or the session: then it runs on an event loop
of its own in a background thread (`BackgroundCluster`), and the tests are plain functions
with the synchronous `openai` and `httpx` clients. Either way, leaving it kills every
process it started and checks that none is left.

Also here (`real`): the tiny real model, written once per session by ``sllm
make-test-model``, a stdlib HTTP server on 127.0.0.1 that serves its directory (the
store's remote HTTP tier), and two transformers workers serving it. That setup costs tens
of seconds of CPU (torch and transformers imports), so it starts in a thread as the
session starts, when a selected test needs it, and overlaps the other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from sllm.experiments.launcher import ServiceProcess, child_environment, isolated_environment
from sllm.runtime.client import get_cluster_state
from sllm.runtime.udp import Endpoint
from sllm.wire import Codec

T = TypeVar("T")

# llama-3.2-1b (2.5 GB) prestaged in host memory cold-starts in about 0.6 s.
SIM_MODEL = "llama-3.2-1b"
API_KEY = "serving-test-key-1"
# Worker processes import the HTTP stack (and torch for the real engine) before they report.
JOIN_TIMEOUT_S = 30.0
# Fast reports, so the coordinator learns a load or a queue within a tenth of a second.
REPORT_INTERVAL_S = 0.1
WORKER_TIMEOUT_S = 2.0
MARKER_VARIABLE = "SLLM_TEST_MARKER"  # as in tests/conftest.py


def base_env(**extra: str) -> dict[str, str]:
    """Everything the services read from the environment, so the developer's own is not used."""
    return isolated_environment(
        {
            "LOG_FORMAT": "json",
            "REPORT_INTERVAL": str(REPORT_INTERVAL_S),
            "WORKER_TIMEOUT": str(WORKER_TIMEOUT_S),
            "BIND_HOST": "127.0.0.1",
            "COORDINATOR_HOST": "127.0.0.1",
            "PRESTAGE_TIER": "host",
            "KEEP_ALIVE": "600",
            "QUEUE_CAPACITY": "64",
            "WORKER_SLOTS": "8",
            MARKER_VARIABLE: uuid.uuid4().hex,
            **extra,
        }
    )


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment carries this test's marker (see tests/conftest.py)."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def events_of(service: ServiceProcess, name: str) -> list[dict[str, Any]]:
    """The log events `name` of `service`; safe while another thread appends lines."""
    found = []
    for line in list(service.lines):  # list() copies the deque in one step
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
    return found


@dataclass
class ServingCluster:
    """A coordinator with the front door on HTTP, and workers with HTTP, as child processes."""

    env: dict[str, str]
    policy: str = "least-loaded"
    coordinator: ServiceProcess | None = None
    workers: dict[str, ServiceProcess] = field(default_factory=dict)
    background: BackgroundCluster | None = None  # set when it runs on a loop of its own
    _udp: Endpoint | None = None
    # Each service's HTTP port, read from its log once: only the last lines are kept, and
    # a test that sends many requests pushes the ``http_listening`` line out.
    _http_ports: dict[str, int] = field(default_factory=dict)

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `work` (such as `state()`) on the background cluster's loop, from a test."""
        assert self.background is not None, "only for a cluster from `background_cluster`"
        return self.background.run(work, timeout)

    @property
    def marker(self) -> str:
        return self.env[MARKER_VARIABLE]

    def _http_port_of(self, service: ServiceProcess) -> int:
        if service.name not in self._http_ports:
            listening = events_of(service, "http_listening")
            self._http_ports[service.name] = int(listening[0]["port"])
        return self._http_ports[service.name]

    @property
    def http_port(self) -> int:
        assert self.coordinator is not None
        return self._http_port_of(self.coordinator)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def worker_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._http_port_of(self.workers[name])}"

    def coordinator_events(self, name: str, request_id: str | None = None) -> list[dict[str, Any]]:
        assert self.coordinator is not None
        found = events_of(self.coordinator, name)
        if request_id is not None:
            found = [event for event in found if event.get("request_id") == request_id]
        return found

    async def logged(
        self, name: str, request_id: str, count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The coordinator's events `name` for `request_id`, once `count` of them are read.

        A response can reach the client before the line logged ahead of it reaches us.
        """
        await wait_for(
            lambda: len(self.coordinator_events(name, request_id)) >= count,
            timeout,
            f"{name} logged for {request_id}",
        )
        return self.coordinator_events(name, request_id)

    def logged_now(self, name: str, request_id: str, count: int = 1) -> list[dict[str, Any]]:
        """`logged` for a test outside the background cluster's loop."""
        return self.run(self.logged(name, request_id, count))

    async def start(self, workers: Mapping[str, Mapping[str, str]]) -> None:
        """The coordinator, then `workers` (name -> extra environment); wait until all joined."""
        self._udp = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        args = ["coordinator", "--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
        self.coordinator = await ServiceProcess.start(
            "coordinator", [*args, "--policy", self.policy], self.env
        )
        await asyncio.gather(*(self.start_worker(name, env) for name, env in workers.items()))
        await self.wait_joined(set(workers))
        services = [self.coordinator, *self.workers.values()]
        await wait_for(
            lambda: all(events_of(service, "http_listening") for service in services),
            JOIN_TIMEOUT_S,
            "every service listening on HTTP",
        )
        for service in services:
            self._http_port_of(service)  # read now, while the line is kept

    async def start_worker(self, name: str, env: Mapping[str, str] | None = None) -> None:
        assert self.coordinator is not None
        args = ["worker", "--node-id", name, "--host", "127.0.0.1", "--port", "0"]
        args += ["--http-port", "0", "--coordinator-port", str(self.coordinator.port)]
        self.workers[name] = await ServiceProcess.start(
            name, args, {**self.env, **(env or {})}, ready_timeout=JOIN_TIMEOUT_S
        )

    async def gauges(self, name: str) -> tuple[float, float]:
        """(running, queued) requests on worker `name`, from its /metrics."""
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(self.worker_url(name) + "/metrics")).text
        values = {}
        for line in text.splitlines():
            metric, _, value = line.partition(" ")
            if metric in ("sllm_worker_running_requests", "sllm_worker_queued_requests"):
                values[metric] = float(value)
        return values["sllm_worker_running_requests"], values["sllm_worker_queued_requests"]

    async def idle(self, name: str) -> bool:
        return await self.gauges(name) == (0.0, 0.0)

    async def state(self) -> dict[str, Any] | None:
        """The coordinator's cluster state over UDP (as `sllm status`), or None."""
        assert self._udp is not None and self.coordinator is not None
        try:
            return await get_cluster_state(self._udp, ("127.0.0.1", self.coordinator.port), 0.5)
        except TimeoutError:
            return None

    async def wait_joined(self, names: set[str], timeout: float = JOIN_TIMEOUT_S) -> None:
        async def joined() -> bool:
            state = await self.state()
            return state is not None and {w["id"] for w in state["workers"]} >= names

        await wait_for(joined, timeout, f"workers {sorted(names)} joined")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        services = [*self.workers.values(), *([self.coordinator] if self.coordinator else [])]
        await asyncio.gather(*(service.kill() for service in services))

    def tails(self) -> str:
        services = [*([self.coordinator] if self.coordinator else []), *self.workers.values()]
        return "\n".join(
            f"--- {s.name} (exit {s.process.returncode}) ---\n" + "\n".join(list(s.lines)[-25:])
            for s in services
        )


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` (sync or async) until truthy, failing the test after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            pytest.fail(f"not true within {timeout:g} s: {what} (last value {value!r})")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _serving_cluster(
    workers: Mapping[str, Mapping[str, str]] | Sequence[str] = ("w1", "w2"),
    policy: str = "least-loaded",
    **env: str,
) -> AsyncIterator[ServingCluster]:
    """``async with serving_cluster(workers, policy, **ENV) as cluster:`` inside a test."""
    if not isinstance(workers, Mapping):
        workers = {name: {} for name in workers}
    cluster = ServingCluster(base_env(**env), policy)
    try:
        await cluster.start(workers)
        yield cluster
    except BaseException:
        print(cluster.tails(), file=sys.stderr)
        raise
    finally:
        await cluster.stop()
    assert marked_pids(cluster.marker) == [], "processes left behind"


@pytest.fixture
def serving_cluster() -> Callable[..., contextlib.AbstractAsyncContextManager[ServingCluster]]:
    return _serving_cluster


class BackgroundCluster:
    """A `ServingCluster` on an event loop in a thread of its own, for module-wide use."""

    def __init__(self, cluster: ServingCluster) -> None:
        self.cluster = cluster
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.run(self.cluster.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
        assert marked_pids(self.cluster.marker) == [], "processes left behind"


@contextlib.contextmanager
def background_cluster(
    workers: Mapping[str, Mapping[str, str]], **env: str
) -> Iterator[ServingCluster]:
    """A started cluster for a module- or session-scoped fixture; stopped on exit."""
    background = BackgroundCluster(ServingCluster(base_env(**env)))
    background.cluster.background = background
    try:
        background.run(background.cluster.start(workers), timeout=JOIN_TIMEOUT_S + 30)
        yield background.cluster
    except BaseException:
        print(background.cluster.tails(), file=sys.stderr)
        raise
    finally:
        background.close()


@pytest.fixture(scope="session")
def sim_cluster() -> Iterator[ServingCluster]:
    """Two sim-engine workers behind a front door that requires `API_KEY`."""
    with background_cluster({"w1": {}, "w2": {}}, API_KEYS=API_KEY) as cluster:
        yield cluster
        # Every request the session sent has ended on the workers too: nothing leaked.
        for name in cluster.workers:
            cluster.run(wait_for(lambda n=name: cluster.idle(n), 5, f"{name} idle"))


# -- the tiny real model, and a cluster serving it ------------------------------------------
#
# Writing the model (``make-test-model``) and starting workers that import torch and
# transformers take tens of seconds of CPU. When the session has a test that needs them,
# that work starts in a thread as the session starts, and runs while the other tests do.

REAL_MODEL = "tiny-llama"
REAL_HTTP_MODEL = "tiny-llama-http"  # the same checkpoint, fetched over HTTP
REAL_SETUP_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class TinyModel:
    directory: Path
    catalog: dict[str, Any]  # catalog.json as make-test-model wrote it

    @property
    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.catalog["models"][0]
        return entry


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    served: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.served.append(self.path)
        super().do_GET()


@dataclass(frozen=True)
class FileServer:
    url: str
    served: list[str]  # the paths requested, in order


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[FileServer]:
    """`directory` over HTTP on 127.0.0.1 (stdlib `http.server`, in a thread)."""
    served: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"served": served})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield FileServer(f"http://127.0.0.1:{server.server_address[1]}", served)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class RealSetup:
    """The tiny model, its directory over HTTP, and two transformers workers serving it."""

    model: TinyModel
    server: FileServer
    cluster: ServingCluster
    caches: dict[str, Path]  # each worker's MODEL_CACHE_DIR


def _prepare_real(stack: contextlib.ExitStack, tmp: pytest.TempPathFactory) -> RealSetup:
    directory = tmp.mktemp("tiny-model")
    subprocess.run(
        [sys.executable, "-m", "sllm", "make-test-model", str(directory)],
        check=True,
        env=child_environment(),
        capture_output=True,
        timeout=REAL_SETUP_TIMEOUT_S,
    )
    catalog = json.loads((directory / "catalog.json").read_text(encoding="utf-8"))
    model = TinyModel(directory, catalog)
    server = stack.enter_context(serve_directory(directory))
    over_http = {**model.entry, "name": REAL_HTTP_MODEL, "source": server.url}
    catalog_path = tmp.mktemp("catalog") / "catalog.json"
    catalog_path.write_text(json.dumps({"models": [model.entry, over_http]}), encoding="utf-8")
    caches = {name: tmp.mktemp(f"cache-{name}") for name in ("w1", "w2")}
    workers = {name: {"MODEL_CACHE_DIR": str(path)} for name, path in caches.items()}
    cluster = stack.enter_context(background_cluster(workers, MODEL_CATALOG=str(catalog_path)))
    return RealSetup(model, server, cluster, caches)


class _EarlyStart:
    """`_prepare_real` running in a thread from the moment this is made."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.stack = contextlib.ExitStack()
        self.done = threading.Event()
        self.value: RealSetup | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, args=(tmp,), daemon=True).start()

    def _run(self, tmp: pytest.TempPathFactory) -> None:
        try:
            self.value = _prepare_real(self.stack, tmp)
        except BaseException as error:  # handed to the first test that needs it
            self.error = error
        finally:
            self.done.set()

    def get(self) -> RealSetup:
        if not self.done.wait(REAL_SETUP_TIMEOUT_S):
            pytest.fail(f"the real-engine cluster did not start in {REAL_SETUP_TIMEOUT_S:g} s")
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value

    def close(self) -> None:
        self.done.wait(REAL_SETUP_TIMEOUT_S)
        self.stack.close()


@pytest.fixture(scope="session")
def _real_early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_EarlyStart]:
    early = _EarlyStart(tmp_path_factory)
    yield early
    early.close()


@pytest.fixture(scope="session", autouse=True)
def _start_real_early(request: pytest.FixtureRequest) -> None:
    """Start the real setup now if a selected test will need it and torch is installed."""
    needed = any("real" in item.fixturenames for item in request.session.items)
    if needed and importlib.util.find_spec("torch") is not None:
        request.getfixturevalue("_real_early")


@pytest.fixture(scope="session")
def real(request: pytest.FixtureRequest) -> RealSetup:
    """The tiny model served by two transformers workers (skipped without the torch extra)."""
    pytest.importorskip("torch", reason="the real engine needs the torch extra")
    early: _EarlyStart = request.getfixturevalue("_real_early")
    return early.get()


@dataclass(frozen=True)
class ServingHelpers:
    """This module's helpers, for a test module that builds its own cluster (the vllm
    tests: a module-scoped cluster of their own), since test modules cannot import a
    conftest."""

    background_cluster: Callable[..., contextlib.AbstractContextManager[ServingCluster]]
    events_of: Callable[[ServiceProcess, str], list[dict[str, Any]]]
    marked_pids: Callable[[str], list[int]]
    wait_for: Callable[..., Coroutine[Any, Any, Any]]
    tiny_model: Callable[[Path, dict[str, Any]], TinyModel]
    base_env: Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def serving_helpers() -> ServingHelpers:
    return ServingHelpers(background_cluster, events_of, marked_pids, wait_for, TinyModel, base_env)

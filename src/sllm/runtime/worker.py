"""The live worker: a `WorkerState` on the real clock, reporting to the coordinator over UDP.

It reports its state every REPORT_INTERVAL (and once at start, so a coordinator learns it
at once), runs inference requests that arrive as datagrams (telling the sender with an
``inference_started`` when each starts, and an ``inference_result`` when it ends), and
carries out the state machine's actions with an engine. With the sim engine a load or a
request is a timer on the event loop; its length comes from the same cost model the
simulator uses.

The coordinator's name is resolved again before every report, so a coordinator that
comes back at a new address (a restarted container) is found without restarting workers.
On stop, the worker sends one last report with ``ready = false`` so that the coordinator
stops placing work on it before the timeout would tell it so.

With an `http_port` it also serves health, readiness and metrics
(`sllm.runtime.monitoring`), advertises that port in its reports, and tells its `observer`
(the metrics' histograms) how long each request and each model load took.

Who reaches its HTTP side: with a cluster secret, its model routes serve only requests the
front door signed (`sllm.api.credential`), and it binds BIND_HOST. Without one, anyone who
reaches the port could use the models, so when BIND_HOST is every interface it binds only
the address the coordinator reaches it on, plus loopback for health checks inside the
container (`http_hosts`), and logs ``cluster_unauthenticated`` once at startup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from sllm.catalog import CatalogModel
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import (
    Action,
    Evict,
    Finished,
    StartLoad,
    StartRequest,
    WorkerResources,
    WorkerState,
    prestaged,
    result_message,
)
from sllm.engines.sim import SimEngine, Timer, TimerKind, fire
from sllm.logs import log_event
from sllm.runtime.generation import HttpRequests, RealEngine
from sllm.runtime.monitoring import DEFAULT_HTTP_LIMITS, HttpLimits, HttpService, start_worker_http
from sllm.runtime.udp import Address, Endpoint
from sllm.store import ModelStore
from sllm.wire import Codec, InferenceRequest, InferenceResult, InferenceStarted, Message

log = logging.getLogger("sllm.worker")

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "sllm", "models")


def _has_real(catalog: Mapping[str, CatalogModel]) -> bool:
    return any(model.engine != "sim" for model in catalog.values())


def _import_real_engine() -> None:
    """Import the real engine's libraries (several seconds of CPU for transformers)."""
    try:
        import transformers

        import sllm.engines.transformers_engine  # noqa: F401

        transformers.AutoModelForCausalLM  # noqa: B018 (a lazy module: this imports it)
    except ImportError as error:  # the first load reports it where it matters
        log_event(log, logging.WARNING, "real_engine_unavailable", error=str(error))


# A lookup failure is logged once per this many seconds, not once per report.
UNRESOLVED_LOG_PERIOD_S = 30.0
# BIND_HOST values that mean every interface.
EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
# Where health checks inside the container or pod reach the listener (the images' own
# HEALTHCHECK and Compose's ask 127.0.0.1).
LOOPBACK = "127.0.0.1"


def http_hosts(bind_host: str, *, signed: bool, reached_at: str) -> tuple[str, ...]:
    """The addresses an HTTP listener of a worker or a node binds, first one first.

    Signed (a cluster secret is set): `bind_host`, since every model route checks the
    front door's credential. Unsigned and bound to every interface: only `reached_at`, the
    address its peers reach it on, and loopback. An explicit `bind_host` is the operator's
    choice and is kept.
    """
    if signed or bind_host not in EVERY_INTERFACE:
        return (bind_host,)
    return tuple(dict.fromkeys((reached_at, LOOPBACK)))


def local_address_towards(address: Address) -> str:
    """This host's address on the route to `address` (a UDP socket's connect sends nothing:
    it only picks the route, and with it the source address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
        return str(probe.getsockname()[0])


def host_address() -> str:
    """This host's name resolved (the pod IP in Kubernetes), or loopback."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return LOOPBACK


def warn_unauthenticated(service: str, http: tuple[str, ...]) -> None:
    log_event(
        log,
        logging.WARNING,
        "cluster_unauthenticated",
        service=service,
        http_hosts=",".join(http),
        hint="set CLUSTER_SECRET, the same on every process, to sign datagrams and "
        "proxied requests",
    )


class WorkerObserver(Protocol):
    """Told what the worker did, as it happens (the metrics' histograms implement it)."""

    def finished(self, result: Finished) -> None: ...

    def model_loaded(self, model: str, source: Tier, seconds: float) -> None: ...


class WorkerServer:
    """Runs requests with the sim engine and reports to the coordinator until stopped."""

    name = "worker"

    def __init__(
        self,
        worker_id: str,
        host: str,
        port: int,
        coordinator: Address,
        codec: Codec,
        catalog: Mapping[str, CatalogModel],
        cost: CostModel,
        resources: WorkerResources,
        report_interval: float,
        advertise_host: str = "",
        prestage: Tier | None = Tier.DISK,
        http_port: int | None = None,
        model_cache_dir: str | None = None,
        http_limits: HttpLimits = DEFAULT_HTTP_LIMITS,
    ) -> None:
        self.host = host
        self.port = port
        self.http_port = http_port  # None: no HTTP; 0: any free port
        self.http: HttpService | None = None
        self.http_limits = http_limits
        self.observer: WorkerObserver | None = None
        self._loads: dict[str, tuple[float, Tier]] = {}  # model -> (started, source)
        self.coordinator = coordinator
        self.codec = codec
        self.report_interval = report_interval
        self.advertise_host = advertise_host
        self.catalog = catalog
        self.store = (
            ModelStore(model_cache_dir or DEFAULT_CACHE_DIR) if _has_real(catalog) else None
        )
        self.state = WorkerState(
            worker_id,
            resources,
            catalog,
            cost,
            self._found_at_start(resources, prestage),
            now=time.monotonic(),
        )
        self.engine = SimEngine(catalog, cost)
        self._real: RealEngine | None = None
        self._real_lock = threading.Lock()
        self.generation = HttpRequests(
            self.state, catalog, cost, self._carry_out, self._real_engine
        )
        self.endpoint: Endpoint | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._requesters: dict[str, Address] = {}
        self._keep_alive: asyncio.TimerHandle | None = None
        self._unresolved_logged_at = -UNRESOLVED_LOG_PERIOD_S

    @property
    def address(self) -> Address:
        assert self.endpoint is not None
        return self.endpoint.address

    def _found_at_start(self, resources: WorkerResources, prestage: Tier | None) -> dict[str, Tier]:
        """Where checkpoints are at start: sim models as prestaged, real ones as on disk."""
        simulated = {name: m for name, m in self.catalog.items() if m.engine == "sim"}
        found = prestaged(simulated, resources, prestage)
        if self.store is not None:
            found.update(dict.fromkeys(self.store.cached(dict(self.catalog)), Tier.DISK))
        return found

    def _real_engine(self) -> RealEngine:
        """The transformers engine, built on first use (from any thread, once)."""
        with self._real_lock:
            if self._real is None:
                from sllm.engines.transformers_engine import TransformersEngine

                assert self.store is not None
                self._real = TransformersEngine(self.catalog, self.store)
            return self._real

    def _is_real(self, model: str) -> bool:
        spec = self.catalog.get(model)
        return spec is not None and spec.engine != "sim"

    async def start(self) -> None:
        self.endpoint = await Endpoint.bind(self.codec, self.host, self.port, self._on_message)
        hosts = http_hosts(
            self.host, signed=self.codec.secret is not None, reached_at=await self._reached_at()
        )
        if self.codec.secret is None:
            warn_unauthenticated(self.name, hosts if self.http_port is not None else ())
        if self.http_port is not None:  # before `listening`, which launchers wait for
            self.http = await start_worker_http(
                self, hosts[0], self.http_port, hosts[1:], limits=self.http_limits
            )
        host, port = self.endpoint.address
        log_event(
            log,
            logging.INFO,
            "listening",
            service=self.name,
            worker=self.state.worker_id,
            host=host,
            port=port,
            coordinator=f"{self.coordinator[0]}:{self.coordinator[1]}",
        )
        self._reporter = asyncio.create_task(self._report_forever())
        if self.store is not None:
            # torch and transformers take seconds of CPU to import: do it now, off the event
            # loop, rather than in the first cold start (which would then time the import).
            # A daemon thread: a worker stopped meanwhile exits without waiting for it.
            threading.Thread(target=_import_real_engine, name="import-torch", daemon=True).start()

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
        if self._keep_alive is not None:
            self._keep_alive.cancel()
        self.state.ready = False
        await self._send_report()  # tell the coordinator at once that we are going
        if self.endpoint is not None:
            self.endpoint.close()
        if self.http is not None:
            await self.http.stop()

    # -- reports -----------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await self._send_report()
            await asyncio.sleep(self.report_interval)

    async def _send_report(self) -> None:
        if self.endpoint is None:
            return
        target = await self._resolve_coordinator()
        if target is None:
            return
        _, port = self.endpoint.address
        http_port = self.http.port if self.http is not None else 0
        report = self.state.report(
            time.monotonic(), self.advertise_host, port, http_port, timestamp=time.time()
        )
        self.endpoint.send(report, target)

    async def _reached_at(self) -> str:
        """The address the coordinator reaches this worker on: the source address of its
        reports (the coordinator takes that as the worker's address)."""
        if self.codec.secret is not None or self.host not in EVERY_INTERFACE:
            return self.host  # not needed: the bind address stays
        if self.advertise_host:
            return self.advertise_host
        target = await self._resolve_coordinator()
        if target is None:
            return host_address()
        try:
            return local_address_towards(target)
        except OSError:  # no route yet
            return host_address()

    async def _resolve_coordinator(self) -> Address | None:
        host, port = self.coordinator
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
        except OSError as error:
            now = time.monotonic()
            if now - self._unresolved_logged_at >= UNRESOLVED_LOG_PERIOD_S:
                self._unresolved_logged_at = now
                log_event(
                    log, logging.WARNING, "coordinator_unresolved", host=host, error=str(error)
                )
            return None
        address = infos[0][4]
        return str(address[0]), int(address[1])

    # -- requests ----------------------------------------------------------------------

    def _on_message(self, message: Message, sender: Address) -> None:
        if not isinstance(message, InferenceRequest):
            if self.endpoint is not None:
                self.endpoint.drop_unexpected(message.TYPE, sender, logger=log, level=logging.DEBUG)
            return
        if self._is_real(message.model):
            # Real models stream over HTTP; the UDP data path is the sim engine's.
            refusal = InferenceResult(
                message.request_id, self.state.worker_id, False, "use_http", False, 0.0, 0.0, 0.0
            )
            if self.endpoint is not None:
                self.endpoint.send(refusal, sender)
            return
        self._requesters[message.request_id] = sender
        self._carry_out(self.state.submit(message, time.monotonic()))

    def _carry_out(self, actions: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        for action in actions:
            if isinstance(action, Finished):
                if self.generation.owns(action.request_id):
                    self.generation.on_finished(action)
                else:
                    self._send_result(action)
                if self.observer is not None:
                    self.observer.finished(action)
                continue
            if isinstance(action, StartRequest):
                if self.generation.owns(action.request_id):
                    self.generation.on_start(action)  # the HTTP stream drives it from here
                    continue
                self._send_started(action.request_id)
            if isinstance(action, StartLoad):
                self._loads[action.model] = (time.monotonic(), action.source)
                if self._is_real(action.model):
                    self._load_for_real(action)
                    continue
            elif isinstance(action, Evict):
                log_event(
                    log,
                    logging.INFO,
                    "model_evicted",
                    model=action.model,
                    source=action.source.name,
                    destination=action.destination.name,
                )
                if self._is_real(action.model):
                    self._evict_for_real(action)
                continue
            for timer in self.engine.timers(action):
                loop.call_later(timer.delay_s, self._fire, timer)
        self._schedule_keep_alive()

    def _load_for_real(self, action: StartLoad) -> None:
        def load() -> None:  # in a thread: the first use imports torch
            self._real_engine().load(action.model, action.source)

        loading = asyncio.get_running_loop().run_in_executor(None, load)

        def done(future: asyncio.Future[None]) -> None:
            now = time.monotonic()
            error = future.exception()
            if error is None:
                self._carry_out(self._loaded(action.model, now))
                return
            self._loads.pop(action.model, None)
            log_event(log, logging.ERROR, "model_load_failed", model=action.model, error=str(error))
            self._carry_out(self.state.load_failed(action.model, now, str(error)[:100]))

        loading.add_done_callback(done)

    def _evict_for_real(self, action: Evict) -> None:
        def evict() -> None:
            self._real_engine().evict(action.model, action.source, action.destination)

        evicting = asyncio.get_running_loop().run_in_executor(None, evict)

        def done(future: asyncio.Future[None]) -> None:
            if future.exception() is not None:
                log_event(
                    log,
                    logging.ERROR,
                    "model_evict_failed",
                    model=action.model,
                    error=str(future.exception()),
                )

        evicting.add_done_callback(done)

    def _loaded(self, model: str, now: float) -> list[Action]:
        """A load finished: time it for the metrics, then tell the state machine."""
        started = self._loads.pop(model, None)
        if started is not None and self.observer is not None:
            self.observer.model_loaded(model, started[1], now - started[0])
        return self.state.load_done(model, now)

    def _fire(self, timer: Timer) -> None:
        now = time.monotonic()
        if timer.kind is TimerKind.LOAD_DONE:
            self._carry_out(self._loaded(timer.key, now))
            return
        self._carry_out(fire(self.state, timer, now))

    def _schedule_keep_alive(self) -> None:
        deadline = self.state.next_deadline()
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            self._keep_alive = None
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._keep_alive = asyncio.get_running_loop().call_later(delay, self._expire_idle)

    def _expire_idle(self) -> None:
        self._keep_alive = None
        self._carry_out(self.state.tick(time.monotonic()))

    def _send_started(self, request_id: str) -> None:
        """Tell the requester its request runs: if this worker dies now, it must not be
        placed again (`sllm.core.outstanding`)."""
        requester = self._requesters.get(request_id)
        if requester is None or self.endpoint is None:
            return
        self.endpoint.send(InferenceStarted(request_id, self.state.worker_id), requester)

    def _send_result(self, finished: Finished) -> None:
        requester = self._requesters.pop(finished.request_id, None)
        if requester is None or self.endpoint is None:
            return
        self.endpoint.send(result_message(self.state.worker_id, finished), requester)

"""The live worker: a `WorkerState` on the real clock, reporting to the coordinator over UDP.

The state machine is hosted by the worker host (`sllm.hosts.worker`, the simulator's too,
here on the asyncio driver `sllm.runtime.driver`): it reports the state every
REPORT_INTERVAL (and once at start, so a coordinator learns it at once), runs inference
requests that arrive as datagrams (telling the sender with an ``inference_started`` when
each starts, and an ``inference_result`` when it ends) as the sim engine's timers on the
event loop, its length from the same cost model the simulator uses, and keeps one
keep-alive timer. What only a live worker has is this module's `ServedWorker`, the
host's hooks: loads and evictions run with the engine each model's catalog entry names,
looked up in the registry (`sllm.engines.registry`), through the `Engine` protocol; HTTP
requests go through `sllm.runtime.generation`; the observer hears of each request and
load. A model whose engine is not registered stops the worker at construction
(`UnknownEngine`). Datagram requests carry no prompt, so only an engine that
``serves_datagrams`` (the sim engine) runs them; any other engine's model answers
``use_http``.

The coordinator's name is resolved again every report interval, so a coordinator that
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
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from sllm.api.credential import worker_http_key
from sllm.catalog import CatalogModel
from sllm.core.coordinator import Notice
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
)
from sllm.engines.base import Engine, EngineContext, Execution
from sllm.engines.registry import REGISTERED, build_engines, engines_for
from sllm.engines.sim import SimEngine
from sllm.hosts.worker import WorkerHost
from sllm.logs import log_event
from sllm.runtime.driver import AsyncioDriver
from sllm.runtime.generation import HttpRequests
from sllm.runtime.monitoring import DEFAULT_HTTP_LIMITS, HttpLimits, HttpService, start_worker_http
from sllm.runtime.registry_sync import RegistryFollower
from sllm.runtime.udp import Address, Endpoint
from sllm.store import ModelStore
from sllm.wire import Codec, InferenceRequest, InferenceResult, Message

log = logging.getLogger("sllm.worker")

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "sllm", "models")


def _warm_up(name: str, engine: Engine) -> None:
    """Run an engine's slow preparation (for transformers, seconds of imports)."""
    try:
        engine.warm_up()
    except Exception as error:  # the first load reports it where it matters
        log_event(log, logging.WARNING, "engine_unavailable", engine=name, error=str(error))


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


class ServedWorker(WorkerHost[Address]):
    """The shared worker host, with what only a live worker has: real engines' loads and
    evictions, HTTP requests, and the observer's metrics."""

    def __init__(self, server: WorkerServer, state: WorkerState, timers: SimEngine) -> None:
        super().__init__(server.driver, state, timers, report_interval_s=server.report_interval)
        self.server = server

    def start_request(self, action: StartRequest) -> None:
        generation = self.server.generation
        if generation.owns(action.request_id):
            generation.on_start(action)  # the HTTP stream drives it from here
        else:
            super().start_request(action)

    def start_load(self, action: StartLoad) -> None:
        self.server.load(action)

    def evict(self, action: Evict) -> None:
        log_event(
            log,
            logging.INFO,
            "model_evicted",
            model=action.model,
            source=action.source.name,
            destination=action.destination.name,
        )
        self.server.evict(action)

    def finished(self, action: Finished) -> None:
        generation = self.server.generation
        if generation.owns(action.request_id):
            generation.on_finished(action)
        else:
            super().finished(action)
        observer = self.server.observer
        if observer is not None:
            observer.finished(action)


class WorkerServer:
    """Runs requests with the catalog's engines and reports to the coordinator until stopped."""

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
        registry_url: str | None = None,
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
        # The models it serves, and the ones it still holds: a model deleted from the
        # registry leaves `catalog` at once and `known_models` once it is freed (`retire`).
        # Both are live: the state machine and the engines read `known_models`.
        self.catalog: dict[str, CatalogModel] = dict(catalog)
        self.known_models: dict[str, CatalogModel] = dict(catalog)
        self.cost = cost
        self.model_cache_dir = model_cache_dir or DEFAULT_CACHE_DIR
        classes = engines_for(catalog.values())  # raises UnknownEngine, naming the model
        checkpointed = {name for name, cls in classes.items() if cls.needs_checkpoint}
        self.disk_bytes = resources.disk_bytes
        self.store = self._new_store() if checkpointed else None
        # By engine name, one for each engine the catalog names; built before the state
        # machine, which asks them whether they keep host copies.
        self.engines = build_engines(classes, EngineContext(self.known_models, cost, self.store))
        state = WorkerState(
            worker_id,
            resources,
            self.known_models,
            cost,
            self._found_at_start(resources, prestage, checkpointed),
            now=time.monotonic(),
            keeps_host_copy=self._keeps_host_copy,
        )
        self._engine_calls: set[asyncio.Task[None]] = set()  # loads and evictions under way
        self.driver = AsyncioDriver(self.log_notices)
        # Datagram requests run as the sim engine's cost-model timers.
        self.hosting = ServedWorker(self, state, SimEngine(self.known_models, cost))
        self.generation = HttpRequests(
            state, self.catalog, self.engines, self.hosting.carry_out, self._refresh_models
        )
        # Following the coordinator's registry (`sllm.runtime.registry_sync`), when given
        # its HTTP address; otherwise the catalog is fixed.
        self.follower: RegistryFollower | None = None
        if registry_url is not None:
            self.follower = RegistryFollower(
                url=registry_url,
                credential_key=worker_http_key(codec.secret) if codec.secret else None,
                engines=REGISTERED,
                apply=self.apply_models,
                interval_s=report_interval,
            )
        self._following: asyncio.Task[None] | None = None
        self._retiring: set[str] = set()
        self.endpoint: Endpoint | None = None
        self._resolver: asyncio.Task[None] | None = None
        self._unresolved_logged_at = -UNRESOLVED_LOG_PERIOD_S

    @property
    def state(self) -> WorkerState:
        return self.hosting.state

    @property
    def address(self) -> Address:
        assert self.endpoint is not None
        return self.endpoint.address

    def _found_at_start(
        self, resources: WorkerResources, prestage: Tier | None, checkpointed: set[str]
    ) -> dict[str, Tier]:
        """Where checkpoints are at start: models of engines with checkpoint files as the
        disk cache holds them, the others (sizes only) as prestaged."""
        sized = {name: m for name, m in self.catalog.items() if m.engine not in checkpointed}
        found = prestaged(sized, resources, prestage)
        if self.store is not None:
            with_files = {n: m for n, m in self.catalog.items() if m.engine in checkpointed}
            found.update(dict.fromkeys(self.store.cached(with_files), Tier.DISK))
        return found

    def _keeps_host_copy(self, model: str) -> bool:
        """Whether `model`'s engine keeps it in host memory (the state machine asks)."""
        engine = self._engine_of(model)
        return engine is None or engine.keeps_host_copy()

    def _new_store(self) -> ModelStore:
        return ModelStore(self.model_cache_dir, capacity_bytes=self.disk_bytes)

    def _engine_of(self, model: str) -> Engine | None:
        spec = self.known_models.get(model)
        return None if spec is None else self.engines[spec.engine]

    # -- the registry ------------------------------------------------------------------

    def apply_models(self, models: dict[str, CatalogModel]) -> None:
        """Serve exactly `models` (the registry's ready ones): new ones become servable (an
        engine not built yet is built now), changed ones take effect at their next load,
        and the ones gone stop taking requests and are freed once idle (`_retire_idle`)."""
        for name, model in models.items():
            if model.engine not in self.engines and not self._build_engine(model):
                continue
            self.known_models[name] = model
            self.catalog[name] = model
            self._retiring.discard(name)
        for name in [name for name in self.catalog if name not in models]:
            del self.catalog[name]
            self._retiring.add(name)
            log_event(log, logging.INFO, "model_retiring", model=name)
        self._retire_idle()
        self.hosting.carry_out([])  # the keep-alive timer, for a model's new keep-alive

    def _build_engine(self, model: CatalogModel) -> bool:
        """Build the engine a newly served model names; False (logged) when this worker
        cannot (the engine's extra is not installed here, say): the model is not served
        here, and the other models are."""
        try:
            engine_class = engines_for([model])[model.engine]
            if engine_class.needs_checkpoint and self.store is None:
                self.store = self._new_store()
            context = EngineContext(self.known_models, self.cost, self.store)
            self.engines[model.engine] = engine_class.build(context)
        except Exception as error:
            log_event(
                log,
                logging.ERROR,
                "registry_model_refused",
                model=model.name,
                engine=model.engine,
                error=f"{type(error).__name__}: {error}",
            )
            return False
        return True

    def _retire_idle(self) -> None:
        """Free each model deleted from the registry whose requests have all ended."""
        for name in sorted(self._retiring):
            evictions = self.state.retire(name)
            if evictions is None:
                continue  # requests for it still wait or run: next time
            self._retiring.discard(name)
            self.hosting.carry_out(list(evictions))
            if not evictions:
                self.known_models.pop(name, None)
            else:
                self._forget_after_evictions(name)
            log_event(log, logging.INFO, "model_retired", model=name)

    def _forget_after_evictions(self, model: str) -> None:
        """Drop `model` from `known_models` once the evictions just started have ended
        (they read its entry: the store's folder, the engine's handle)."""
        running = [task for task in self._engine_calls if not task.done()]
        if not running:
            self.known_models.pop(model, None)
            return

        async def forget() -> None:
            await asyncio.gather(*running, return_exceptions=True)
            if model not in self.catalog:  # not deployed again meanwhile
                self.known_models.pop(model, None)

        self._engine_calls.add(asyncio.get_running_loop().create_task(forget()))

    async def _refresh_models(self, model: str) -> bool:
        """Asked for `model`, which this worker does not serve: read the registry now, in
        case it was just deployed; True if it is served now."""
        if self.follower is None:
            return False
        await self.follower.refresh_on_demand()
        return model in self.catalog

    async def _follow_registry(self) -> None:
        assert self.follower is not None
        while True:
            await self.follower.refresh()
            self._retire_idle()
            await asyncio.sleep(self.follower.interval_s)

    def log_notices(self, notices: Sequence[Notice], sender: Address | None = None) -> None:
        """A worker's host notices nothing; a node's does (`sllm.runtime.node`)."""

    async def _bind(self) -> None:
        """Bind the socket and bring the host up on it."""
        self.endpoint = await Endpoint.bind(self.codec, self.host, self.port, self._on_message)
        self.driver.endpoint = self.endpoint
        hosting = self.hosting
        hosting.come_up()
        hosting.advertise_host = self.advertise_host
        hosting.port = self.endpoint.address[1]
        hosting.wall_offset = time.time() - time.monotonic()

    async def start(self) -> None:
        await self._bind()
        hosts = http_hosts(
            self.host, signed=self.codec.secret is not None, reached_at=await self._reached_at()
        )
        if self.codec.secret is None:
            warn_unauthenticated(self.name, hosts if self.http_port is not None else ())
        if self.http_port is not None:  # before `listening`, which launchers wait for
            self.http = await start_worker_http(
                self, hosts[0], self.http_port, hosts[1:], limits=self.http_limits
            )
            if self.http is not None:
                self.hosting.http_port = self.http.port
        assert self.endpoint is not None
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
        self.hosting.report_to = await self._resolve_coordinator()
        self.hosting.start_reports(0.0)
        self._resolver = asyncio.create_task(self._resolve_forever())
        if self.follower is not None:
            self._following = asyncio.create_task(self._follow_registry())
        for name, engine in self.engines.items():
            if engine.execution is Execution.THREAD:
                # torch and transformers take seconds of CPU to import: do it now, off the
                # event loop, rather than in the first cold start (which would then time the
                # import). A daemon thread: a worker stopped meanwhile exits without waiting.
                threading.Thread(
                    target=_warm_up, args=(name, engine), name=f"warm-up-{name}", daemon=True
                ).start()

    async def stop(self) -> None:
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
        if self._resolver is not None:
            self._resolver.cancel()
            await asyncio.gather(self._resolver, return_exceptions=True)
        for call in list(self._engine_calls):
            call.cancel()  # a load sleeping its simulated time; a thread runs on to its end
        self.state.ready = False
        if self._resolver is not None:  # tell the coordinator at once that we are going
            self.hosting.report_to = await self._resolve_coordinator() or self.hosting.report_to
            self.hosting.send_report()
        self.hosting.kill()  # its timers go stale
        if self.endpoint is not None:
            self.endpoint.close()
        if self.http is not None:
            await self.http.stop()

    # -- reports -----------------------------------------------------------------------

    async def _resolve_forever(self) -> None:
        """Point the host's reports at the coordinator's address, resolved again every
        report interval."""
        while True:
            await asyncio.sleep(self.report_interval)
            target = await self._resolve_coordinator()
            if target is not None:
                self.hosting.report_to = target

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
        engine = self._engine_of(message.model)
        if engine is not None and not engine.serves_datagrams:
            # A datagram carries no prompt: this model's engine streams over HTTP only.
            refusal = InferenceResult(
                request_id=message.request_id,
                worker_id=self.state.worker_id,
                ok=False,
                reason="use_http",
                cold_start=False,
                queue_s=0.0,
                ttft_s=0.0,
                e2e_s=0.0,
            )
            if self.endpoint is not None:
                self.endpoint.send(refusal, sender)
            return
        self.hosting.submit(message, sender)

    def _call_engine(
        self,
        call: Coroutine[Any, Any, None],
        done: Callable[[BaseException | None], None],
    ) -> None:
        """Run an engine's load or eviction as a task; `done` gets its error, or None."""
        task = asyncio.get_running_loop().create_task(call)
        self._engine_calls.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._engine_calls.discard(task)
            if not task.cancelled():  # cancelled: the worker is stopping
                done(task.exception())

        task.add_done_callback(finished)

    def load(self, action: StartLoad) -> None:
        """Run a load with the model's engine; time it for the metrics."""
        engine = self._engine_of(action.model)
        assert engine is not None  # the state machine loads only catalog models
        self._loads[action.model] = (time.monotonic(), action.source)

        def done(error: BaseException | None) -> None:
            now = time.monotonic()
            if error is None:
                self.hosting.carry_out(self._loaded(action.model, now))
                return
            self._loads.pop(action.model, None)
            log_event(log, logging.ERROR, "model_load_failed", model=action.model, error=str(error))
            self.hosting.carry_out(self.state.load_failed(action.model, now, str(error)[:100]))

        self._call_engine(engine.load(action.model, action.source), done)

    def evict(self, action: Evict) -> None:
        """Run an eviction with the model's engine."""
        engine = self._engine_of(action.model)
        assert engine is not None

        def done(error: BaseException | None) -> None:
            if error is not None:
                log_event(
                    log, logging.ERROR, "model_evict_failed", model=action.model, error=str(error)
                )
                return
            if action.destination is Tier.HOST:
                self._count_host_copy(action.model)

        self._call_engine(engine.evict(action.model, action.source, action.destination), done)

    def _count_host_copy(self, model: str) -> None:
        """Count `model`'s new host copy at the bytes its engine measured, if it did."""
        engine = self._engine_of(model)
        measured = None if engine is None else engine.host_copy_bytes(model)
        if measured is not None:
            log_event(log, logging.DEBUG, "host_copy_measured", model=model, bytes=measured)
            self.hosting.carry_out(self.state.host_copy_measured(model, measured, time.monotonic()))

    def _loaded(self, model: str, now: float) -> list[Action]:
        """A load finished: time it for the metrics, then tell the state machine."""
        started = self._loads.pop(model, None)
        if started is not None and self.observer is not None:
            self.observer.model_loaded(model, started[1], now - started[0])
        return self.state.load_done(model, now)

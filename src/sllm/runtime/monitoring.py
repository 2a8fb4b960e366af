"""Optional HTTP health, readiness and metrics for the UDP services.

Why it exists: operators need ``/healthz`` and ``/readyz`` for container health checks and
Kubernetes probes, and ``/metrics`` for Prometheus, while the guide's scripts must still run
on a bare ``python3``. The HTTP stack (FastAPI on uvicorn, `prometheus_client`) is the
optional extra ``serve``; this module imports only the standard library, and imports that
stack only when a service asks for HTTP. Without it the service logs ``http_disabled`` once
and keeps serving UDP.

What it does: `start_http` builds a per-service Prometheus registry, lets the caller
register its collectors into it, and starts an `sllm.runtime.http.HttpListener` in the
running event loop. If the port cannot be bound, it logs ``http_failed`` and the service
keeps serving UDP: health checks and probes then fail, which is how an orchestrator learns
of it, while the control plane stays up.

A service hooks in with one call from its ``start`` (after its UDP socket is bound, before it
logs ``listening``, so a launcher that waits for ``listening`` finds ``http_listening``
already logged) and one ``await http.stop()`` from its ``stop``. The coordinator and the
worker use `start_coordinator_http` and `start_worker_http`; another service (the
decentralized node) calls `start_http` with its own readiness and collectors.

A service with the front door (the coordinator, a node) keeps it as ``front_door`` (a
`FrontDoor`): it tells it when the scheduler declares a worker lost, so that requests in
flight there are placed again or ended at once, and ``/metrics`` reads its counts. The
front door's per-request metrics (`sllm.runtime.metrics.FrontDoorMetrics`) are made with
the registry and given to the gateway as its ``observer`` once its routes are installed.

Which addresses a worker's or a node's listener binds is theirs to choose
(`sllm.runtime.worker.http_hosts`): without a cluster secret, not every interface.

Not handled yet: TLS, authentication of ``/metrics``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sllm.config import HTTP_BODY_TIMEOUT_S, HTTP_HEADER_TIMEOUT_S, HTTP_MAX_CONNECTIONS
from sllm.logs import log_event

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sllm.api.decisions import PendingDecisions
    from sllm.api.gateway import Gateway, Place
    from sllm.api.observer import FrontDoorObserver
    from sllm.core.coordinator import Coordinator
    from sllm.core.view import ClusterView
    from sllm.runtime.coordinator import CoordinatorServer
    from sllm.runtime.node import NodeServer
    from sllm.runtime.worker import WorkerServer

log = logging.getLogger("sllm.http")

# What the ``serve`` extra provides; one missing module disables HTTP. (httptools parses
# the front door's answers from workers, and requests in uvicorn.)
HTTP_MODULES: tuple[str, ...] = ("prometheus_client", "fastapi", "uvicorn", "httptools")

_disabled_logged = False


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether a service should get traffic now; `reason` says why not."""

    ready: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long an HTTP client may take to send a request, and how many may be connected
    (HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT, HTTP_MAX_CONNECTIONS; see `sllm.runtime.http`)."""

    header_timeout_s: float = HTTP_HEADER_TIMEOUT_S
    body_timeout_s: float = HTTP_BODY_TIMEOUT_S
    max_connections: int = HTTP_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if not (self.header_timeout_s > 0 and self.body_timeout_s > 0):
            raise ValueError("HTTP timeouts must be > 0")
        if self.max_connections < 1:
            raise ValueError("HTTP needs max_connections >= 1")


DEFAULT_HTTP_LIMITS = HttpLimits()


class FrontDoor(Protocol):
    """What a service holds of its front door (`sllm.api.gateway.Gateway`)."""

    @property
    def retries(self) -> Mapping[str, int]:
        """Requests placed again before their first byte, by reason."""
        ...

    @property
    def failed(self) -> Mapping[str, int]:
        """Requests that failed after placement, by reason."""
        ...

    def worker_lost(self, worker_id: str) -> int:
        """The scheduler declared `worker_id` lost: end the waits on it; how many."""
        ...


Register = Callable[["CollectorRegistry"], None]
# Adds routes to the service's FastAPI app before it serves; may return a coroutine function
# to await when the listener stops (to close what the routes opened, such as an HTTP client).
Routes = Callable[[Any], Callable[[], Awaitable[None]] | None]


class HttpService(Protocol):
    """A running HTTP listener, as a service holds it."""

    @property
    def port(self) -> int: ...

    async def stop(self) -> None: ...


def missing_http_modules() -> list[str]:
    """The modules of the ``serve`` extra that cannot be imported here (empty: all present)."""
    missing = []
    for name in HTTP_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _log_disabled(service: str, missing: list[str]) -> None:
    global _disabled_logged
    if _disabled_logged:
        return
    _disabled_logged = True
    log_event(
        log,
        logging.WARNING,
        "http_disabled",
        service=service,
        missing=",".join(missing),
        hint="pip install 'sllm[serve]' for /healthz, /readyz and /metrics",
    )


async def start_http(
    service: str,
    host: str,
    port: int,
    readiness: Callable[[], Readiness],
    register: Register,
    routes: Routes | None = None,
    also_on: Sequence[str] = (),
    *,
    limits: HttpLimits = DEFAULT_HTTP_LIMITS,
) -> HttpService | None:
    """Serve health, readiness and metrics on `host`:`port` (0: any free port), and on the
    same port of each address of `also_on`.

    `register` adds the service's collectors to a fresh registry of its own. Returns the
    running listener, or None when the ``serve`` extra is missing or the port cannot be
    bound (both logged).
    """
    missing = missing_http_modules()
    if missing:
        _log_disabled(service, missing)
        return None
    from prometheus_client import CollectorRegistry

    from sllm.runtime.http import HttpListener

    registry = CollectorRegistry()
    register(registry)
    listener = HttpListener(
        service, host, port, registry, readiness, also_on=also_on, limits=limits
    )
    if routes is not None:
        closer = routes(listener.app)
        if closer is not None:
            listener.add_closer(closer)
    try:
        await listener.start()
    except OSError as error:
        log_event(
            log,
            logging.ERROR,
            "http_failed",
            service=service,
            host=host,
            port=port,
            error=str(error),
        )
        return None
    return listener


def live_workers(view: ClusterView, now: float) -> int:
    """Workers whose last report is younger than the timeout, without changing the view.

    The coordinator expires silent workers on a timer; between two runs of it the view may
    still hold a worker that is already dead, which readiness and metrics must not count.
    """
    deadline = now - view.worker_timeout
    return sum(1 for entry in view.entries() if entry.last_seen > deadline)


def ready_workers(view: ClusterView, now: float) -> int:
    """Live workers whose last report says they take work (not stopping, not starting).

    A worker that stops says so in its last report (``ready = false``) and stays in the
    view until its timeout; counting it would keep the coordinator ready, and its front
    door refusing with 429, for a whole WORKER_TIMEOUT after the last worker went.
    """
    deadline = now - view.worker_timeout
    return sum(1 for entry in view.entries() if entry.last_seen > deadline and entry.report.ready)


async def start_coordinator_http(
    server: CoordinatorServer,
    host: str,
    port: int,
    api_keys: frozenset[str] = frozenset(),
    *,
    limits: HttpLimits = DEFAULT_HTTP_LIMITS,
) -> HttpService | None:
    """The coordinator's listener: the front door, ready while a live worker is ready."""

    def readiness() -> Readiness:
        if ready_workers(server.core.view, time.monotonic()) > 0:
            return Readiness(True)
        return Readiness(False, "no ready workers")

    observers: list[FrontDoorObserver] = []  # made with the registry, before the routes

    def register(registry: CollectorRegistry) -> None:
        from sllm.runtime.metrics import register_coordinator

        observers.append(register_coordinator(registry, server))

    def routes(app: Any) -> Callable[[], Awaitable[None]]:
        _require_credential(app, server.codec.secret, INTERNAL_PREFIX)
        held = server.held_here if server.core.hold_s is not None else None
        gateway = _install_serving(app, server, server.core, api_keys, held=held)
        return _front_door_of(server, gateway, observers)

    return await start_http(server.name, host, port, readiness, register, routes, limits=limits)


# The routes only the cluster's own processes use (workers reading the model registry).
INTERNAL_PREFIX = "/internal/"


def _install_serving(
    app: Any,
    server: CoordinatorServer | NodeServer,
    scheduler: Coordinator,
    api_keys: frozenset[str],
    upstream_prefix: str = "",
    place: Place | None = None,
    held: PendingDecisions | None = None,
) -> Gateway:
    """The front door (`/v1`, placing with `scheduler`, or with `place` where a node
    probes first) and the model registry's admin routes, as a coordinator and a
    decentralized node both serve them."""
    from sllm.api.admin import install_admin, not_ready_reason
    from sllm.api.frontdoor import install_front_door

    registry = server.registry
    gateway = install_front_door(
        app,
        scheduler,
        server.log_notices,
        api_keys,
        upstream_prefix=upstream_prefix,
        cluster_secret=server.codec.secret,
        not_ready=lambda model: not_ready_reason(registry, model),
        place=place,
        held=held,
    )
    install_admin(
        app,
        registry,
        admin_key=server.admin_key,
        running=lambda model: gateway.running_by_model.get(model, 0),
        deployed=server.sources.start,
    )
    return gateway


def _front_door_of(
    server: CoordinatorServer | NodeServer, gateway: Gateway, observers: list[FrontDoorObserver]
) -> Callable[[], Awaitable[None]]:
    """Make `gateway` the front door of `server`, observed by the metrics made with the
    registry (before the routes); return what closes it."""
    if observers:
        gateway.observer = observers[0]
    server.front_door = gateway
    return gateway.client.close


def _require_credential(app: Any, secret: bytes | None, prefix: str) -> None:
    """With a cluster secret, the model routes under `prefix` serve only the front door's
    signed requests (`sllm.api.worker_api.RequireCredential`); without one, nothing to add.

    Call it before the request-id middleware is added, so that it runs inside it.
    """
    if secret is None:
        return
    from sllm.api.credential import worker_http_key
    from sllm.api.worker_api import RequireCredential

    app.add_middleware(RequireCredential, key=worker_http_key(secret), prefix=prefix)


def _accepting_work(server: WorkerServer | NodeServer) -> Callable[[], Readiness]:
    """Readiness of a process whose worker state machine takes work while it is ready."""

    def readiness() -> Readiness:
        return Readiness(True) if server.state.ready else Readiness(False, "stopping")

    return readiness


async def start_worker_http(
    server: WorkerServer,
    host: str,
    port: int,
    also_on: Sequence[str] = (),
    *,
    limits: HttpLimits = DEFAULT_HTTP_LIMITS,
) -> HttpService | None:
    """A worker's listener: ready while its state machine accepts work. With a cluster
    secret its ``/v1`` routes serve only the front door's signed requests."""
    readiness = _accepting_work(server)

    def register(registry: CollectorRegistry) -> None:
        from sllm.runtime.metrics import register_worker

        register_worker(registry, server)

    def routes(app: Any) -> None:
        from sllm.api.request_id import RequestIdMiddleware
        from sllm.api.worker_api import worker_router

        _require_credential(app, server.codec.secret, "/v1/")
        app.add_middleware(RequestIdMiddleware)  # added last: outside the credential check
        app.include_router(worker_router(server.generation))

    return await start_http(
        server.name, host, port, readiness, register, routes, also_on, limits=limits
    )


async def start_node_http(
    server: NodeServer,
    host: str,
    port: int,
    api_keys: frozenset[str] = frozenset(),
    also_on: Sequence[str] = (),
    *,
    limits: HttpLimits = DEFAULT_HTTP_LIMITS,
) -> HttpService | None:
    """A decentralized node's listener: the front door on /v1 (placing with the node's own
    view), its worker routes under ``/worker`` (with a cluster secret, only for signed
    requests from the front doors), worker and gossip metrics. Ready while its
    worker accepts work: a node that has not met its peers yet still serves from its own
    worker, so readiness does not wait for them (seeds may include the node itself)."""
    assert server.core is not None, "start the node's core first"
    core = server.core
    readiness = _accepting_work(server)

    observers: list[FrontDoorObserver] = []  # made with the registry, before the routes

    def register(registry: CollectorRegistry) -> None:
        from sllm.runtime.metrics import (
            GossipMembersCollector,
            ProbingCollector,
            register_front_door,
            register_worker,
        )

        register_worker(registry, server)
        registry.register(GossipMembersCollector(core.membership.counts))
        registry.register(ProbingCollector(lambda: core.probing))
        observers.append(register_front_door(registry, lambda: server.front_door))

    def routes(app: Any) -> Callable[[], Awaitable[None]]:
        from sllm.api.frontdoor import WORKER_PREFIX
        from sllm.api.worker_api import worker_router

        app.include_router(worker_router(server.generation), prefix=WORKER_PREFIX)
        _require_credential(app, server.codec.secret, WORKER_PREFIX + "/")
        _require_credential(app, server.codec.secret, INTERNAL_PREFIX)
        gateway = _install_serving(
            app, server, core.scheduler, api_keys, upstream_prefix=WORKER_PREFIX, place=server.place
        )
        return _front_door_of(server, gateway, observers)

    return await start_http(
        server.name, host, port, readiness, register, routes, also_on, limits=limits
    )

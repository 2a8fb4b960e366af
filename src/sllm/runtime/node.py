"""The live decentralized node: the core `Node` behind one UDP socket on the real clock.

A node is a worker that also schedules: it runs the requests placed on it with the sim
engine (the very wiring of `WorkerServer`, which this class extends), gossips membership
and load with its peers, and answers ``schedule_request``, ``cluster_state_request`` and
``member_state_request`` from its own view. It reports to no coordinator.

Everything the protocol decides happens in the core (`sllm.core.node`), hosted by the node
host (`sllm.hosts.node`, the simulator's too, here on the asyncio driver), which moves
datagrams and keeps one timer armed at the core's `next_deadline`. This module resolves
seeds, measures the socket's traffic for `status`, and logs what the core noticed (logger
``sllm.gossip`` for membership, ``sllm.node`` for the rest).

Seed names are resolved at start and, for those that do not resolve yet (a StatefulSet
whose other pods are not up), again every `SEED_RETRY_S` until they do. The advertised
address is `advertise_host` when given, else the bound host, else (bound to 0.0.0.0) this
host's name resolved, which is the pod IP in Kubernetes.

On stop, the node announces a graceful leave to a few peers (the core picks them) before
closing its socket, so peers drop it at once instead of suspecting it.

With an `http_port` the node also serves the OpenAI front door on ``/v1`` (placing with
its own view, without probing), its worker routes under ``/worker``, health, readiness and
metrics including gossip members by state (`sllm.runtime.monitoring.start_node_http`).
A member declared dead (``member_dead``; suspicion only steers placement away) is told to
that front door (`front_door`), which ends the waits of its requests in flight there.
Without a cluster secret, a node bound to every interface serves HTTP only on its
advertised address (where peers proxy to it) and loopback, and logs
``cluster_unauthenticated`` (`sllm.runtime.worker.http_hosts`).

Not handled yet: re-resolving seeds that change address later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence

from sllm.api.decisions import PendingDecisions
from sllm.catalog import CatalogError, CatalogModel, catalog_entry_json, model_from_entry_json
from sllm.core.admission import Admission
from sllm.core.coordinator import Notice
from sllm.core.cost import CostModel
from sllm.core.membership import MEMBERSHIP_EVENTS
from sllm.core.node import LOCAL_REQUESTER, Node, NodeConfig, Traffic
from sllm.core.registry_gossip import SpecTooLarge
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.engines.registry import REGISTERED
from sllm.hosts.node import NodeHost
from sllm.logs import log_event
from sllm.registry import IN_MEMORY, ModelRegistry
from sllm.runtime.monitoring import DEFAULT_HTTP_LIMITS, FrontDoor, HttpLimits, start_node_http
from sllm.runtime.registry_sync import SourceDescriber
from sllm.runtime.udp import Address, Endpoint
from sllm.runtime.worker import (
    EVERY_INTERFACE,
    WorkerServer,
    host_address,
    http_hosts,
    warn_unauthenticated,
)
from sllm.wire import Codec, InferenceRequest, Message, ScheduleRequest, ScheduleResponse

log = logging.getLogger("sllm.node")
gossip_log = logging.getLogger("sllm.gossip")

SEED_RETRY_S = 5.0
# The longest the front door waits for a decision: the core decides at its probe timeout
# (50 ms by default), so this is reached only if the node stops in between.
DECISION_WAIT_S = 2.0
# Traffic rates are averaged over this window, sampled once a second.
TRAFFIC_WINDOW_S = 10
NOTICE_LEVELS: Mapping[str, int] = {
    "member_dead": logging.WARNING,
    "suspicion_refuted": logging.WARNING,
    "member_suspect": logging.INFO,
    "member_forgotten": logging.DEBUG,
    "unexpected_message": logging.DEBUG,
}


def _same_address(address: Address) -> Address:
    """The core's addresses are the socket's."""
    return address


class TrafficMeter:
    """Bytes per second in and out of a socket over a sliding window, and rejects."""

    def __init__(self, window: int = TRAFFIC_WINDOW_S) -> None:
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=window + 1)

    def sample(self, endpoint: Endpoint, now: float) -> Traffic:
        self._samples.append((now, endpoint.sent_bytes, endpoint.received_bytes))
        first, last = self._samples[0], self._samples[-1]
        span = last[0] - first[0]
        if span <= 0:
            return Traffic(rejected_datagrams=endpoint.rejects.total)
        return Traffic(
            bytes_sent_per_s=(last[1] - first[1]) / span,
            bytes_received_per_s=(last[2] - first[2]) / span,
            rejected_datagrams=endpoint.rejects.total,
        )


class NodeServer(WorkerServer):
    """A worker that gossips and schedules; runs until stopped."""

    name = "node"

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        codec: Codec,
        catalog: Mapping[str, CatalogModel],
        cost: CostModel,
        resources: WorkerResources,
        config: NodeConfig,
        seeds: Sequence[tuple[str, int]] = (),
        advertise_host: str = "",
        prestage: Tier | None = Tier.DISK,
        seed: int | None = None,
        http_port: int | None = None,
        api_keys: frozenset[str] = frozenset(),
        http_limits: HttpLimits = DEFAULT_HTTP_LIMITS,
        admission: Admission | None = None,
        registry: ModelRegistry | None = None,
        admin_key: str | None = None,
    ) -> None:
        # A node reports to no coordinator: its reports travel by gossip.
        super().__init__(
            node_id,
            host,
            port,
            ("", 0),
            codec,
            catalog,
            cost,
            resources,
            config.report_interval_s,
            advertise_host=advertise_host,
            prestage=prestage,
            http_port=http_port,
            http_limits=http_limits,
        )
        self.api_keys = api_keys
        self.front_door: FrontDoor | None = None  # set when the HTTP listener installs it
        self.admission = admission  # None: the default caps (sllm.core.admission)
        self.config = config
        self.seed_names = list(seeds)
        self.seed = seed
        self.core: Node | None = None
        self.node_hosting = NodeHost(
            self.driver, self.hosting, address_of=_same_address, destination_of=_same_address
        )
        # The front door's decisions in waiting (probing, holding), by the core's key.
        self._decisions = PendingDecisions()
        self.node_hosting.decided = self._decisions.decided
        self._tasks: list[asyncio.Task[None]] = []
        self._meter = TrafficMeter()
        # The models this node serves: its own registry (the admin API deploys here), kept
        # in step with every other node's by the core's replica (`registry_changed`).
        self.registry = registry or ModelRegistry(IN_MEMORY, engines=REGISTERED, seed=dict(catalog))
        self.registry.on_change = self._publish
        self.admin_key = admin_key
        self.sources = SourceDescriber(self.registry, log)

    async def start(self) -> None:
        await self._bind()
        assert self.endpoint is not None
        bound_host, port = self.endpoint.address
        advertised = (self._advertise_host(bound_host), port)
        resolved, pending = await self._resolve(self.seed_names)
        now = time.monotonic()
        self.core = Node(
            self.state.worker_id,
            advertised,
            self.catalog,  # what it places: the models served (not those being retired)
            self.state.cost,
            random.Random(self.seed),
            now,
            self.config,
            seeds=resolved,
            wall_offset=time.time() - now,
            worker=self.state,
            admission=self.admission,
        )
        signed = self.codec.secret is not None
        hosts = http_hosts(bound_host, signed=signed, reached_at=advertised[0])
        if not signed:
            warn_unauthenticated(self.name, hosts if self.http_port is not None else ())
        if self.http_port is not None:  # before `listening`, which launchers wait for
            self.http = await start_node_http(
                self,
                hosts[0],
                self.http_port,
                self.api_keys,
                also_on=hosts[1:],
                limits=self.http_limits,
            )
            if self.http is not None:
                self.core.http_port = self.http.port  # peers proxy to it
        log_event(
            log,
            logging.INFO,
            "listening",
            service=self.name,
            node=self.state.worker_id,
            host=bound_host,
            port=port,
            advertised=f"{advertised[0]}:{advertised[1]}",
            seeds=",".join(f"{h}:{p}" for h, p in resolved),
            policy=self.config.policy,
            probing=self.config.probing.candidates,
        )
        self.node_hosting.serve(self.core)
        self.apply_models(dict(self.registry.served))  # a registry file's models too
        self.sources.start()  # any caught mid-description by a restart
        self._tasks.append(asyncio.create_task(self._measure_forever()))
        if pending:
            self._tasks.append(asyncio.create_task(self._resolve_later(pending)))

    # -- placing the front door's requests ------------------------------------------------

    async def place(self, request: ScheduleRequest) -> ScheduleResponse:
        """Decide where a request from this node's front door runs, as a request from a
        client would be: at once without probing, else once the candidates have replied
        (the core decides at its probe timeout at the latest, and `DECISION_WAIT_S` is
        only a backstop); a held request once its hold ends (ADMISSION_HOLD). The core
        sees a key of this process's own (`PendingDecisions`)."""
        core = self.core
        assert core is not None, "the front door starts after the core"
        expired = core.scheduler.expire(time.monotonic())  # `place` would drop them unannounced
        if expired:
            self.log_notices(list(expired))

        async def first_answer(keyed: ScheduleRequest) -> ScheduleResponse:
            if self.node_hosting.place_here(keyed):
                with contextlib.suppress(TimeoutError):
                    return await self._decisions.next(keyed.request_id, DECISION_WAIT_S)
            # not serving yet, or late
            return core.scheduler.place(keyed, time.monotonic(), reply_to=LOCAL_REQUESTER)

        return await self._decisions.decide(request, first_answer)

    # -- the model registry --------------------------------------------------------------

    def _publish(self, name: str, model: CatalogModel | None) -> None:
        """A model deployed, updated or deleted on this node: serve it here, and gossip it
        to every other node."""
        self.apply_models(dict(self.registry.served))
        if self.core is None:
            return
        now = time.monotonic()
        try:
            if model is None:
                self.core.delete(name, now)
            else:
                self.core.deploy(name, catalog_entry_json(model), now)
        except SpecTooLarge as error:  # served here; the other nodes cannot be told
            log_event(log, logging.ERROR, "registry_not_gossiped", model=name, error=str(error))
        self.node_hosting.after(self.core, None)

    def _adopt_replicated(self, names: Sequence[str]) -> None:
        """Entries another node wrote, as the gossip brought them: serve what they say."""
        assert self.core is not None
        for name in names:
            entry = self.core.registry.get(name)
            if entry is None:
                continue
            if entry.deleted:
                self.registry.forget(name)
                continue
            try:
                model = model_from_entry_json(entry.spec, engines=REGISTERED)
            except CatalogError as error:  # an engine this node lacks, say
                log_event(
                    log, logging.WARNING, "registry_model_refused", model=name, error=str(error)
                )
                continue
            self.registry.adopt(name, model)
        self.apply_models(dict(self.registry.served))

    async def stop(self) -> None:
        await self.sources.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.core is not None and self.endpoint is not None:
            self.node_hosting.send(self.core.leave(time.monotonic()))
            self.log_notices(self.core.take_notices())
        self.node_hosting.kill()  # its timers and its worker's go stale
        if self.endpoint is not None:
            self.endpoint.close()
        if self.http is not None:
            await self.http.stop()

    # -- datagrams and timers ------------------------------------------------------------

    def _on_message(self, message: Message, sender: Address) -> None:
        if isinstance(message, InferenceRequest):
            super()._on_message(message, sender)  # the worker runs it
            return
        self.node_hosting.receive(message, sender)

    def log_notices(self, notices: Sequence[Notice], sender: Address | None = None) -> None:
        """Log what the core noticed; unexpected messages are counted and rate-limited, and
        a dead member is told to the front door."""
        for notice in notices:
            logger = gossip_log if notice.event in MEMBERSHIP_EVENTS else log
            level = NOTICE_LEVELS.get(notice.event, logging.INFO)
            if notice.event == "unexpected_message" and self.endpoint is not None:
                message_type = str(notice.fields["type"])
                self.endpoint.drop_unexpected(message_type, sender, logger=logger, level=level)
                continue
            log_event(logger, level, notice.event, node=self.state.worker_id, **notice.fields)
            if notice.event == "registry_changed":
                self._adopt_replicated(str(notice.fields["models"]).split(","))
            if notice.event == "member_dead" and self.front_door is not None:
                self.front_door.worker_lost(str(notice.fields["member"]))

    async def _measure_forever(self) -> None:
        """Every second: the traffic meter, and freeing models deleted from the registry
        whose requests have ended (a worker does it as it follows the coordinator)."""
        while True:
            await asyncio.sleep(1.0)
            if self.core is not None and self.endpoint is not None:
                self.core.traffic = self._meter.sample(self.endpoint, time.monotonic())
            self._retire_idle()

    # -- addresses -----------------------------------------------------------------------

    def _advertise_host(self, bound_host: str) -> str:
        if self.advertise_host:
            return self.advertise_host
        if bound_host not in EVERY_INTERFACE:
            return bound_host
        return host_address()

    async def _resolve(
        self, names: Sequence[tuple[str, int]]
    ) -> tuple[list[Address], list[tuple[str, int]]]:
        loop = asyncio.get_running_loop()
        resolved: list[Address] = []
        pending: list[tuple[str, int]] = []
        for host, port in names:
            try:
                infos = await loop.getaddrinfo(
                    host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
                )
            except OSError as error:
                log_event(log, logging.WARNING, "seed_unresolved", seed=host, error=str(error))
                pending.append((host, port))
                continue
            address = infos[0][4]
            resolved.append((str(address[0]), int(address[1])))
        return resolved, pending

    async def _resolve_later(self, pending: list[tuple[str, int]]) -> None:
        while pending:
            await asyncio.sleep(SEED_RETRY_S)
            with contextlib.suppress(Exception):
                resolved, pending = await self._resolve(pending)
                if self.core is not None:
                    membership = self.core.membership
                    membership.seeds.extend(a for a in resolved if a != membership.address)
                    self.node_hosting.arm()

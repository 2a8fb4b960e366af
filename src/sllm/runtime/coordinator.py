"""The live coordinator: the core `Coordinator` behind a UDP socket on the real clock.

It decodes each datagram and hands it to the coordinator host (`sllm.hosts.coordinator`,
the simulator's too, here on the asyncio driver `sllm.runtime.driver`), which passes it to
the core, sends the replies to the sender and expires silent workers on a timer. This
module fills in a report's address from its datagram's source and logs what the core
noticed (a valid message of a type it does not serve is counted and logged at most once
per type every few seconds, like a rejected datagram). A worker declared lost
(``worker_lost``) is also told to the front door (`front_door`), which ends the waits of
its requests in flight there at once. Everything it knows comes from worker reports, so
restarting it loses nothing but its counters (and the requests it held: their clients
give up on them after the hold, ADMISSION_HOLD). With an `http_port` it also serves health,
readiness and metrics (`sllm.runtime.monitoring`).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Mapping, Sequence

from sllm.api.decisions import PendingDecisions
from sllm.catalog import CatalogModel
from sllm.core.admission import Admission
from sllm.core.coordinator import Coordinator, Notice
from sllm.core.cost import CostModel, ModelInfo
from sllm.engines.registry import REGISTERED
from sllm.hosts.coordinator import CoordinatorHost
from sllm.logs import log_event
from sllm.registry import IN_MEMORY, ModelRegistry
from sllm.runtime.driver import AsyncioDriver
from sllm.runtime.monitoring import (
    DEFAULT_HTTP_LIMITS,
    FrontDoor,
    HttpLimits,
    HttpService,
    start_coordinator_http,
)
from sllm.runtime.registry_sync import SourceDescriber
from sllm.runtime.udp import Address, Endpoint
from sllm.wire import Codec, Message, WorkerReport

log = logging.getLogger("sllm.coordinator")


def _host_part(address: Address) -> str:
    return address[0]


def as_catalog(models: Mapping[str, ModelInfo]) -> dict[str, CatalogModel]:
    """`models` as catalog models (a benchmark's workload specs are sizes only)."""
    return {
        name: model
        if isinstance(model, CatalogModel)
        else CatalogModel(name, model.params_b, model.size_bytes)
        for name, model in models.items()
    }


class CoordinatorServer:
    """Serves placement and cluster state over UDP until stopped."""

    name = "coordinator"

    def __init__(
        self,
        host: str,
        port: int,
        codec: Codec,
        policy: str,
        catalog: Mapping[str, ModelInfo],
        cost: CostModel,
        worker_timeout: float,
        seed: int | None = None,
        http_port: int | None = None,
        api_keys: frozenset[str] = frozenset(),
        http_limits: HttpLimits = DEFAULT_HTTP_LIMITS,
        admission: Admission | None = None,
        registry: ModelRegistry | None = None,
        admin_key: str | None = None,
        admission_deadline_s: float | None = None,
        admission_hold_s: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.http_port = http_port  # None: no HTTP; 0: any free port
        self.http: HttpService | None = None
        self.front_door: FrontDoor | None = None  # set when the HTTP listener installs it
        self.api_keys = api_keys
        self.http_limits = http_limits
        self.codec = codec
        # The models it places: the registry's ready ones (a live mapping; a deploy adds
        # to it). Without a registry file, one in memory, seeded by `catalog`.
        self.registry = registry or ModelRegistry(
            IN_MEMORY, engines=REGISTERED, seed=as_catalog(catalog)
        )
        self.admin_key = admin_key
        self.sources = SourceDescriber(self.registry, log)
        self.core = Coordinator(
            policy,
            self.registry.served,
            cost,
            worker_timeout,
            random.Random(seed),
            time.monotonic(),
            admission=admission,
            deadline_s=admission_deadline_s,
            hold_s=admission_hold_s,
        )
        self.endpoint: Endpoint | None = None
        self.driver = AsyncioDriver(self.log_notices)
        self.hosting = CoordinatorHost(
            self.driver, worker_timeout_s=worker_timeout, source_of=_host_part
        )
        # The front door's held requests: the host hands their decisions here.
        self.held_here = PendingDecisions()
        self.hosting.decided_here = self.held_here.decided

    @property
    def address(self) -> Address:
        assert self.endpoint is not None
        return self.endpoint.address

    async def start(self) -> None:
        self.endpoint = await Endpoint.bind(self.codec, self.host, self.port, self._on_message)
        self.driver.endpoint = self.endpoint
        self.hosting.start(self.core)
        self.sources.start()  # any caught mid-description by a restart
        if self.http_port is not None:  # before `listening`, which launchers wait for
            self.http = await start_coordinator_http(
                self, self.host, self.http_port, self.api_keys, limits=self.http_limits
            )
        host, port = self.endpoint.address
        log_event(
            log,
            logging.INFO,
            "listening",
            service=self.name,
            host=host,
            port=port,
            policy=self.core.policy.name,
            worker_timeout_s=self.core.view.worker_timeout,
            max_workers=self.core.view.admission.capacity,
            signed=self.codec.secret is not None,
        )

    async def stop(self) -> None:
        await self.sources.stop()
        self.hosting.kill()  # its expiry timer goes stale
        if self.endpoint is not None:
            self.endpoint.close()
        if self.http is not None:
            await self.http.stop()

    def _on_message(self, message: Message, sender: Address) -> None:
        if isinstance(message, WorkerReport) and not message.host:
            # The worker let us fill in its address: the one its datagram came from.
            message = dataclasses.replace(message, host=sender[0])
        self.hosting.receive(message, sender)

    def log_notices(self, notices: Sequence[Notice], sender: Address | None = None) -> None:
        """Log what the core noticed; unexpected messages are counted and rate-limited, and
        a lost worker is told to the front door."""
        for notice in notices:
            if notice.event == "unexpected_message" and self.endpoint is not None:
                message_type = str(notice.fields["type"])
                self.endpoint.drop_unexpected(message_type, sender, logger=log, level=logging.INFO)
                continue
            lost = notice.event == "worker_lost"
            level = logging.WARNING if lost else logging.INFO
            log_event(log, level, notice.event, **notice.fields)
            if lost and self.front_door is not None:
                self.front_door.worker_lost(str(notice.fields["worker"]))

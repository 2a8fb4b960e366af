"""The simulator's driver and processes: the shared hosts (`sllm.hosts`) on the kernel.

Why it exists: the hosts are written once, against `sllm.hosts.driver.Driver`; this
module is the simulator's side of that interface and the little that only a simulated
process has:

- `KernelDriver`: time is the kernel's clock, timers are kernel events (a delay of exactly
  one report interval takes the kernel's FIFO lane, `Kernel.after_period`), datagrams go
  through the simulated network from the host's name, notices go to the cluster;
- `SimulatedCoordinator`, `SimulatedWorker`, `SimulatedNode`: a host plus its address on
  the network, which is up while the process lives; starting one again builds a fresh
  process (a new core object, its old timers stale);
- `Client`: the shared `RequestClient` replaying a workload's arrivals from one address,
  with the spans the experiments plot.

Not handled yet: a process whose clock runs at another rate (clock skew).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sllm.core.coordinator import Coordinator, Notice
from sllm.core.membership import Address
from sllm.core.node import Node
from sllm.core.outstanding import RequestOutcome
from sllm.core.worker import WorkerState, prestaged
from sllm.engines.sim import SimEngine
from sllm.hosts.client import RequestClient
from sllm.hosts.coordinator import CoordinatorHost
from sllm.hosts.driver import Callback
from sllm.hosts.node import NodeHost
from sllm.hosts.worker import WorkerHost
from sllm.sim.kernel import Kernel
from sllm.sim.network import Network
from sllm.wire import Message, ScheduleResponse
from sllm.workload import Arrival

if TYPE_CHECKING:
    from sllm.sim.cluster import SimulatedCluster
    from sllm.sim.decentralized import DecentralizedCluster

COORDINATOR = "coordinator"
CLIENT = "client"
WORKER_PORT = 8000  # every simulated worker listens on the live default port
GOSSIP_PORT = 7946  # memberlist's port; every simulated node listens on it

NoticeSink = Callable[[Sequence[Notice]], None]


class KernelDriver:
    """One simulated process's clock, timers, network address and notices.

    `call_at` is the kernel's own `at`, bound at construction: a method that only
    forwarded would cost a Python frame on every timer.
    """

    __slots__ = ("call_at", "kernel", "name", "network", "notices")

    def __init__(
        self, kernel: Kernel, network: Network, name: str, notices: NoticeSink | None = None
    ) -> None:
        self.kernel = kernel
        self.network = network
        self.name = name
        self.notices = notices
        self.call_at: Callable[[float, Callback, Any], None] = kernel.at

    def now(self) -> float:
        return self.kernel.now

    def call_later(self, delay: float, callback: Callback, argument: Any) -> None:
        kernel = self.kernel
        if delay == kernel.period_s:
            kernel.after_period(callback, argument)  # the same order, a cheaper queue
        else:
            kernel.schedule(delay, callback, argument)

    def send(self, destination: str, message: Message) -> None:
        self.network.send(self.name, destination, message)

    def send_instant(self, destination: str, message: Message) -> None:
        self.network.send(self.name, destination, message, transit=False)

    def notify(self, notices: Sequence[Notice], sender: str | None) -> None:
        if self.notices is not None:
            self.notices(notices)


class SimulatedCoordinator(CoordinatorHost[str]):
    """The core coordinator at `COORDINATOR`, built afresh at each start."""

    def __init__(self, cluster: SimulatedCluster, notices: NoticeSink) -> None:
        self.cluster = cluster
        self.network = cluster.network
        driver = KernelDriver(cluster.kernel, cluster.network, COORDINATOR, notices)
        super().__init__(driver, worker_timeout_s=cluster.config.worker_timeout_s)
        self.network.attach(COORDINATOR, self.receive)

    def start(self, core: Coordinator | None = None) -> None:
        config = self.cluster.config
        super().start(
            core
            or Coordinator(
                config.policy,
                self.cluster.catalog,
                config.cost,
                config.worker_timeout_s,
                random.Random(config.seed),  # what `sllm coordinator --seed` does
                self.driver.now(),
                deadline_s=config.admission_deadline_s,
                hold_s=config.admission_hold_s,
            )
        )
        self.network.set_up(COORDINATOR, True)

    def kill(self) -> None:
        super().kill()
        self.network.set_up(COORDINATOR, False)


class SimulatedWorker:
    """A worker process at a name: a `WorkerHost` reporting to `report_to`."""

    def __init__(
        self, cluster: SimulatedCluster, name: str, report_to: str | None, index: int = 0
    ) -> None:
        self.cluster = cluster
        self.network = cluster.network
        self.name = name
        config = cluster.config
        self.resources, self.cost = config.kind_of(index)
        engine = cluster.engine
        if self.cost != config.cost:
            engine = SimEngine(cluster.catalog, self.cost)  # a kind that loads at its own speed
        self.driver = KernelDriver(cluster.kernel, cluster.network, name)
        self.host = WorkerHost(
            self.driver,
            self.fresh_state(),
            engine,
            report_to=report_to,
            report_interval_s=config.report_interval_s,
        )
        self.host.advertise_host = name  # a report's host is where clients reach it
        self.host.port = WORKER_PORT
        self.network.attach(name, self.receive)
        self.network.set_up(name, False)

    @property
    def up(self) -> bool:
        return self.host.up

    @property
    def state(self) -> WorkerState:
        return self.host.state

    def fresh_state(self) -> WorkerState:
        config = self.cluster.config
        catalog = self.cluster.catalog
        preloaded = prestaged(catalog, self.resources, config.prestage)
        return WorkerState(
            self.name, self.resources, catalog, self.cost, preloaded, now=self.driver.now()
        )

    def receive(self, message: Message, source: str) -> None:
        self.host.receive(message, source)

    def start(self, first_report_in: float, fresh: bool) -> None:
        """Come up (as a fresh process when `fresh`); first report after `first_report_in`."""
        self.come_up(fresh)
        self.host.start_reports(first_report_in)

    def come_up(self, fresh: bool) -> None:
        self.host.come_up(self.fresh_state() if fresh else None)
        self.network.set_up(self.name, True)

    def kill(self) -> None:
        self.host.kill()
        self.network.set_up(self.name, False)


class SimulatedNode(SimulatedWorker):
    """A node process at a name: a `NodeHost` around its worker, gossiping on
    ``(name, GOSSIP_PORT)``; it reports to no coordinator."""

    cluster: DecentralizedCluster

    def __init__(
        self,
        cluster: DecentralizedCluster,
        name: str,
        seeds: Sequence[Address],
        index: int = 0,
    ) -> None:
        super().__init__(cluster, name, report_to=None, index=index)
        self.address: Address = (name, GOSSIP_PORT)
        self.seeds = [seed for seed in seeds if seed != self.address]
        self.starts = 0
        self.driver.notices = cluster.notice
        self.node_host = NodeHost(
            self.driver,
            self.host,
            address_of=_gossip_address,
            destination_of=_host_name,
        )

    @property
    def node(self) -> Node | None:
        return self.node_host.node

    def receive(self, message: Message, source: str) -> None:
        self.node_host.receive(message, source)

    def boot(self, peers: Sequence[tuple[str, Address]] = (), fresh: bool = True) -> None:
        """Start a node process; with `peers` it knows them as alive (a warm cluster)."""
        self.come_up(fresh)
        self.starts += 1
        cluster = self.cluster
        config = cluster.config
        now = self.driver.now()
        node = Node(
            self.name,
            self.address,
            cluster.catalog,
            config.cost,
            child_rng(config.seed, f"node/{self.name}/{self.starts}"),
            now,
            cluster.node_config,
            seeds=self.seeds,
            worker=self.host.state,
        )
        if peers:
            node.membership.bootstrap(peers, now)
        self.node_host.serve(node)

    def start(self, first_report_in: float, fresh: bool) -> None:
        """A node sends no reports to a coordinator: starting it is `boot` (a restarted
        one joins through its seeds)."""
        self.boot(fresh=fresh)

    def kill(self) -> None:
        self.node_host.kill()
        self.network.set_up(self.name, False)


def _gossip_address(name: str) -> Address:
    return (name, GOSSIP_PORT)


def _host_name(address: Address) -> str:
    return address[0]


def child_rng(seed: int, purpose: str) -> random.Random:
    """An independent, reproducible stream per purpose (string seeds hash with SHA-512)."""
    return random.Random(f"sllm-sim/{purpose}/{seed}")


def _decision_host(decision: ScheduleResponse) -> str:
    """Worker addresses are their names: a report's ``host`` is the worker's name."""
    return decision.host


class Client:
    """Replays arrivals like the live driver, from `CLIENT`, and records what it sees."""

    def __init__(self, cluster: SimulatedCluster, arrivals: Sequence[Arrival]) -> None:
        self.kernel = cluster.kernel
        self.arrivals = arrivals
        self.t0 = cluster.t0
        self.issued = 0
        # (arrival, end) in workload seconds, parallel to `outcomes`.
        self.spans: list[tuple[float, float]] = []
        config = cluster.config
        self.requests = RequestClient(
            KernelDriver(cluster.kernel, cluster.network, CLIENT),
            scheduler=cluster.scheduler,
            worker_address=_decision_host,
            schedule_timeout_s=config.schedule_timeout_s,
            result_timeout_s=config.result_timeout_s,
            refusal_retries=config.refusal_retries,
            ended=self._ended,
        )
        self.outcomes = self.requests.outcomes
        self.outstanding = self.requests.outstanding
        cluster.network.attach(CLIENT, self.requests.receive)

    @property
    def done(self) -> bool:
        """Every arrival issued and ended."""
        return self.issued == len(self.arrivals) and not self.requests.pending

    def start(self) -> None:
        if self.arrivals:
            self.kernel.at(self.t0 + self.arrivals[0].time_s, self._arrive, 0)

    def _arrive(self, index: int) -> None:
        self.issued += 1
        self.requests.begin(f"r{index:07d}", self.arrivals[index])
        index += 1
        if index < len(self.arrivals):
            self.kernel.at(self.t0 + self.arrivals[index].time_s, self._arrive, index)

    def _ended(self, outcome: RequestOutcome, arrival: Arrival) -> None:
        self.spans.append((arrival.time_s, self.kernel.now - self.t0))

    def worker_lost(self, worker_id: str) -> None:
        self.requests.worker_lost(worker_id)

    def worker_back(self, worker_id: str) -> None:
        self.requests.worker_back(worker_id)

    def abandon(self) -> None:
        """End everything still pending as ``unfinished`` (the drain is over)."""
        self.requests.abandon()

"""A deterministic in-memory network on a virtual clock, for core tests and benchmarks.

Why it exists: gossip is only trustworthy if it is tested under loss, delay, duplication,
partitions, crashes and restarts, thousands of times, fast and reproducibly. This harness
hosts any sans-I/O participant (`Host`: `handle`, `tick`, `next_deadline`) at an address
and moves its `Send`s between hosts on a heap of ``(time, sequence, event)`` (SimPy's
kernel, in a few lines): the sequence number makes ties deterministic, and one seeded
`random.Random` decides every latency, loss and duplicate. Nothing is encoded unless a
`codec` is given, in which case every datagram is encoded (so its size is real and the cap
is enforced: an oversized message fails the run) and its bytes are counted per host.

`NodeHost` runs a decentralized `Node` with the sim engine (its worker's loads and
requests become timers on the same clock), and `ClientHost` replays requests the way the
live driver does: ask a random node where to run, then send the request there.

The project's simulator (`sllm.sim`) is the full-featured driver; this one is small on
purpose: datagrams and timers, enough for the gossip tests and benchmarks.

Not handled: bandwidth limits and queueing in the network (a datagram takes its latency,
whatever else is in flight), asymmetric or per-link latency distributions.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sllm.core.membership import Address, GossipConfig, Membership, Send
from sllm.core.node import Node
from sllm.core.worker import Action, Finished, result_message
from sllm.engines.sim import SimEngine, Timer, fire
from sllm.wire.codec import Codec
from sllm.wire.messages import (
    InferenceRequest,
    InferenceResult,
    Message,
    ScheduleRequest,
    ScheduleResponse,
)

# A host whose deadline stays at `now` after this many ticks in a row is spinning (a bug).
SPIN_LIMIT = 10_000


class Host(Protocol):
    def handle(self, message: Message, sender: Address, now: float) -> list[Send]: ...

    def tick(self, now: float) -> list[Send]: ...

    def next_deadline(self) -> float | None: ...


@dataclass(slots=True)
class Traffic:
    """Datagrams and (with a codec) bytes one address sent and received."""

    sent: int = 0
    received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(slots=True)
class NetworkStats:
    delivered: int = 0
    lost: int = 0  # dropped by the loss rate
    blocked: int = 0  # dropped by a partition or a drop hook
    undeliverable: int = 0  # addressed to a crashed or unknown host
    duplicated: int = 0
    traffic: dict[Address, Traffic] = field(default_factory=dict)


DropHook = Callable[[Address, Address, Message], bool]


@dataclass(frozen=True, slots=True)
class _Delivery:
    source: Address
    destination: Address
    message: Message
    size: int


@dataclass(frozen=True, slots=True)
class _Timer:
    address: Address
    epoch: int
    at: float


class InMemoryNetwork:
    """Hosts on a virtual clock, linked by a lossy, delaying, duplicating network."""

    def __init__(
        self,
        rng: random.Random,
        latency_s: tuple[float, float] = (0.0005, 0.002),
        loss: float = 0.0,
        duplicate: float = 0.0,
        codec: Codec | None = None,
        start: float = 0.0,
    ) -> None:
        self.rng = rng
        self.latency_s = latency_s
        self.loss = loss
        self.duplicate = duplicate
        self.codec = codec
        self.now = start
        self.hosts: dict[Address, Host] = {}
        self.stats = NetworkStats()
        self.drop_hook: DropHook | None = None
        # Extra seconds added to everything a host sends: a slow but live node.
        self.slow: dict[Address, float] = {}
        self._groups: dict[Address, int] | None = None
        self._heap: list[tuple[float, int, _Delivery | _Timer]] = []
        self._sequence = 0
        self._scheduled: dict[Address, float] = {}
        self._epoch: dict[Address, int] = {}  # bumps on crash, so old timers are ignored

    # -- topology --------------------------------------------------------------------

    def add(self, address: Address, host: Host) -> None:
        """Attach `host` at `address` (a restart is `crash` then `add`)."""
        self.hosts[address] = host
        self._epoch[address] = self._epoch.get(address, 0) + 1
        self._scheduled.pop(address, None)
        self._schedule(address)

    def crash(self, address: Address) -> None:
        """The host stops at once: no more ticks, datagrams to it are lost."""
        self.hosts.pop(address, None)
        self._scheduled.pop(address, None)
        self._epoch[address] = self._epoch.get(address, 0) + 1

    def partition(self, *groups: Iterable[Address]) -> None:
        """Only hosts in the same group can talk; hosts in no group talk to no one."""
        self._groups = {}
        for index, group in enumerate(groups):
            for address in group:
                self._groups[address] = index

    def heal(self) -> None:
        self._groups = None

    def connected(self, a: Address, b: Address) -> bool:
        if self._groups is None:
            return True
        group = self._groups.get(a)
        return group is not None and group == self._groups.get(b)

    # -- sending ---------------------------------------------------------------------

    def send(self, source: Address, sends: Iterable[Send]) -> None:
        for send in sends:
            self._send_one(source, send)

    def _send_one(self, source: Address, send: Send) -> None:
        traffic = self._traffic(source)
        traffic.sent += 1
        size = 0
        if self.codec is not None:
            size = len(self.codec.encode(send.message, self.now, self._sequence))
            traffic.bytes_sent += size
        if self.drop_hook is not None and self.drop_hook(source, send.to, send.message):
            self.stats.blocked += 1
            return
        if not self.connected(source, send.to):
            self.stats.blocked += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.stats.lost += 1
            return
        copies = 1
        if self.duplicate and self.rng.random() < self.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            low, high = self.latency_s
            at = self.now + (low if high <= low else self.rng.uniform(low, high))
            at += self.slow.get(source, 0.0)
            self._push(at, _Delivery(source, send.to, send.message, size))

    # -- running ---------------------------------------------------------------------

    def run_until(self, until: float) -> None:
        """Process every event up to and including `until`; the clock ends at `until`."""
        spins = 0
        while self._heap and self._heap[0][0] <= until:
            at, _, event = heapq.heappop(self._heap)
            spins = spins + 1 if at == self.now else 0
            if spins > SPIN_LIMIT:
                raise RuntimeError(f"no progress at t={at}: a host keeps a deadline in the past")
            self.now = at
            if isinstance(event, _Delivery):
                self._deliver(event)
            else:
                self._tick(event)
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until_true(
        self, predicate: Callable[[], bool], timeout: float, step: float = 0.05
    ) -> float | None:
        """Run in `step`s until `predicate()` holds; the virtual seconds it took, or None."""
        start = self.now
        while not predicate():
            if self.now - start >= timeout:
                return None
            self.run_for(step)
        return self.now - start

    def _deliver(self, delivery: _Delivery) -> None:
        source, destination = delivery.source, delivery.destination
        host = self.hosts.get(destination)
        if host is None:
            self.stats.undeliverable += 1
            return
        if not self.connected(source, destination):
            self.stats.blocked += 1
            return
        self.stats.delivered += 1
        traffic = self._traffic(destination)
        traffic.received += 1
        traffic.bytes_received += delivery.size
        sends = host.handle(delivery.message, source, self.now)
        self.send(destination, sends)
        self._schedule(destination)

    def _tick(self, timer: _Timer) -> None:
        address = timer.address
        if self._epoch.get(address) != timer.epoch or self._scheduled.get(address) != timer.at:
            return  # crashed since, or superseded by an earlier deadline
        del self._scheduled[address]
        host = self.hosts[address]
        self.send(address, host.tick(self.now))
        self._schedule(address)

    def _schedule(self, address: Address) -> None:
        host = self.hosts.get(address)
        if host is None:
            return
        deadline = host.next_deadline()
        if deadline is None:
            return
        deadline = max(deadline, self.now)
        scheduled = self._scheduled.get(address)
        if scheduled is not None and scheduled <= deadline:
            return
        self._scheduled[address] = deadline
        self._push(deadline, _Timer(address, self._epoch[address], deadline))

    def _push(self, at: float, event: _Delivery | _Timer) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (at, self._sequence, event))

    def _traffic(self, address: Address) -> Traffic:
        traffic = self.stats.traffic.get(address)
        if traffic is None:
            traffic = self.stats.traffic[address] = Traffic()
        return traffic


# -- gossip clusters -----------------------------------------------------------------------


def node_address(index: int) -> Address:
    """A distinct private address per node index (10.x.y.z, port 7946: memberlist's)."""
    return (f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}", 7946)


def node_id(index: int) -> str:
    return f"n{index:04d}"


def membership_cluster(
    network: InMemoryNetwork,
    count: int,
    config: GossipConfig,
    seed: int = 0,
    bootstrap: bool = True,
    seeds: int = 1,
) -> list[Membership]:
    """`count` memberships on `network`, each with its own seeded generator.

    With `bootstrap`, every node starts knowing every other as alive (a converged
    cluster, for measuring one change); without it, they join through the first `seeds`
    nodes, as a live cluster does.
    """
    seed_addresses = [node_address(i) for i in range(min(seeds, count))]
    nodes = [
        Membership(
            node_id(i),
            node_address(i),
            random.Random(seed * 1_000_003 + i),
            network.now,
            config,
            seeds=seed_addresses,
        )
        for i in range(count)
    ]
    if bootstrap:
        peers = [(node.node_id, node.address) for node in nodes]
        for node in nodes:
            node.bootstrap(peers, network.now)
    for node in nodes:
        network.add(node.address, node)
    return nodes


# -- decentralized nodes with the sim engine ----------------------------------------------


class NodeHost:
    """A `Node` whose worker runs requests with the sim engine on the virtual clock.

    It does what the live node runtime does with a real clock: an ``inference_request``
    goes to the node's worker, the worker's actions become engine timers, and a finished
    request goes back to its sender as an ``inference_result``.
    """

    def __init__(self, node: Node, engine: SimEngine) -> None:
        self.node = node
        self.engine = engine
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = 0
        self._requesters: dict[str, Address] = {}

    def handle(self, message: Message, sender: Address, now: float) -> list[Send]:
        if isinstance(message, InferenceRequest):
            self._requesters[message.request_id] = sender
            return self._carry_out(self.node.worker.submit(message, now), now)
        return self.node.handle(message, sender, now)

    def tick(self, now: float) -> list[Send]:
        sends: list[Send] = []
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            sends.extend(self._carry_out(fire(self.node.worker, timer, now), now))
        keep_alive = self.node.worker.next_deadline()
        if keep_alive is not None and keep_alive <= now:
            sends.extend(self._carry_out(self.node.worker.tick(now), now))
        sends.extend(self.node.tick(now))
        return sends

    def next_deadline(self) -> float | None:
        times = [self.node.next_deadline(), self.node.worker.next_deadline()]
        if self._timers:
            times.append(self._timers[0][0])
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def _carry_out(self, actions: list[Action], now: float) -> list[Send]:
        sends: list[Send] = []
        for action in actions:
            if isinstance(action, Finished):
                requester = self._requesters.pop(action.request_id, None)
                if requester is not None:
                    sends.append(
                        Send(to=requester, message=result_message(self.node.node_id, action))
                    )
            for timer in self.engine.timers(action):
                self._sequence += 1
                heapq.heappush(self._timers, (now + timer.delay_s, self._sequence, timer))
        return sends


@dataclass(slots=True)
class ClientOutcome:
    """One request as the client saw it; times in virtual seconds."""

    request_id: str
    sent_at: float
    worker_id: str = ""
    ok: bool = False
    reason: str = ""
    queue_s: float = 0.0
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    done: bool = False


class ClientHost:
    """Replays requests: asks a random scheduler, then runs the request where it says."""

    def __init__(
        self,
        rng: random.Random,
        schedulers: Callable[[], list[Address]],
        requests: Iterable[tuple[float, InferenceRequest]],
    ) -> None:
        self.rng = rng
        self.schedulers = schedulers
        self._queue = sorted(requests, key=lambda item: item[0])
        self._next = 0
        self.outcomes: dict[str, ClientOutcome] = {}
        self._specs: dict[str, InferenceRequest] = {}

    def handle(self, message: Message, sender: Address, now: float) -> list[Send]:
        if isinstance(message, ScheduleResponse):
            outcome = self.outcomes.get(message.request_id)
            spec = self._specs.get(message.request_id)
            if outcome is None or spec is None or outcome.worker_id or outcome.done:
                return []
            if message.action == "reject":
                outcome.done, outcome.reason = True, f"rejected: {message.reason}"
                return []
            outcome.worker_id = message.worker_id
            return [Send(to=(message.host, message.port), message=spec)]
        if isinstance(message, InferenceResult):
            outcome = self.outcomes.get(message.request_id)
            if outcome is None or outcome.done:
                return []
            outcome.done, outcome.ok, outcome.reason = True, message.ok, message.reason
            outcome.queue_s, outcome.ttft_s = message.queue_s, message.ttft_s
            outcome.e2e_s = now - outcome.sent_at
        return []

    def tick(self, now: float) -> list[Send]:
        sends: list[Send] = []
        while self._next < len(self._queue) and self._queue[self._next][0] <= now:
            _, spec = self._queue[self._next]
            self._next += 1
            schedulers = self.schedulers()
            if not schedulers:
                continue
            self.outcomes[spec.request_id] = ClientOutcome(spec.request_id, now)
            self._specs[spec.request_id] = spec
            request = ScheduleRequest(
                request_id=spec.request_id,
                model=spec.model,
                priority=0,
                prompt_tokens=spec.prompt_tokens,
                output_tokens=spec.output_tokens,
            )
            sends.append(Send(to=self.rng.choice(schedulers), message=request))
        return sends

    def next_deadline(self) -> float | None:
        return self._queue[self._next][0] if self._next < len(self._queue) else None

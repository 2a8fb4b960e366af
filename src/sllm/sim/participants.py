"""Any sans-I/O participant at an address, on the simulator's kernel and network.

Why it exists: gossip is only trustworthy if it is tested under loss, delay, duplication,
partitions, crashes and restarts, thousands of times, fast and reproducibly. The gossip
tests and `sllm bench gossip` host the core's `Membership` (or anything of the same shape:
``handle(message, sender, now) -> list[Send]``, ``tick(now)``, ``next_deadline()``) here,
on the one event kernel (`sllm.sim.kernel`) and the one network model (`sllm.sim.network`)
the cluster simulator uses, so there is a single model of delay, loss and bytes to trust.

Theory of operation:

- **Addresses.** A participant sits at a ``(host, port)`` address, as membership names
  its peers; on the network its name is ``"host:port"`` (`network_name`). Routing by the
  whole address, not the host alone as `sllm.sim.decentralized` does (its nodes all share
  one port), keeps a process restarted at another port out of reach at its old one.
- **One timer per participant**, at its ``next_deadline()``: the hosts' own
  `sllm.hosts.deadline.DeadlineTimer` (armed after every delivery and tick, moved
  earlier when the deadline moves earlier; `crash` and `add` make a pending one stale).
  A participant that keeps a deadline in the past would spin at one instant; after
  `SPIN_LIMIT` ticks there the run stops with an error.
- **Sending.** What a participant returns goes out through `send`: a `drop_hook` may drop
  (or just watch) each datagram, a `slow` participant's datagrams leave that many seconds
  late (a live but sluggish process), and the network then applies its link's delay,
  loss, duplication, partitions, shrink-to-fit and byte counts.
- **Bytes.** By default every datagram is encoded with the real codec
  (``Sizer(exact=True)``), so per-participant byte counts are exact; with a cluster secret
  (`signed`) each also carries the HMAC envelope.

`membership_cluster` builds N memberships on loopback addresses, converged or joining
through seeds.

Not handled: per-link loss or delay beyond `sllm.sim.network.Network.set_link` (reach it
through `network`), and asymmetric partitions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from functools import partial
from typing import Protocol

from sllm.core.membership import Address, GossipConfig, Membership, Send
from sllm.hosts.deadline import CallAt, DeadlineTimer
from sllm.sim.kernel import DEFAULT_STEP_S, Kernel
from sllm.sim.network import LinkModel, Network, Sizer
from sllm.wire import Message

# Ticks in a row at one instant before a participant counts as spinning (a deadline it
# keeps in the past): far more than any protocol does at once (a few per member).
SPIN_LIMIT = 10_000
# Membership's own port in the simulated clusters (memberlist's default).
MEMBER_PORT = 7946
# Member hosts are 127.0.X.Y with Y in 1..ADDRESSES_PER_BLOCK: loopback, like every
# address the tests name, and never .0 or .255.
ADDRESSES_PER_BLOCK = 250


class Participant(Protocol):
    """A sans-I/O protocol state machine: messages and time in, datagrams out."""

    def handle(self, message: Message, sender: Address, now: float) -> list[Send]: ...

    def tick(self, now: float) -> list[Send]: ...

    def next_deadline(self) -> float | None: ...


# ``drop_hook(source, destination, message)``: True drops the datagram.
DropHook = Callable[[Address, Address, Message], bool]


def network_name(address: Address) -> str:
    """The network's name for a participant's address."""
    return f"{address[0]}:{address[1]}"


class _Seat:
    """One address: its participant (None while crashed) and its one timer."""

    __slots__ = ("address", "name", "participant", "timer")

    def __init__(self, address: Address, call_at: CallAt, on_due: Callable[[_Seat], None]) -> None:
        self.address = address
        self.name = network_name(address)
        self.participant: Participant | None = None
        self.timer = DeadlineTimer(call_at=call_at, on_due=partial(on_due, self))


class Participants:
    """Participants at addresses on one kernel and network (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int,
        link: LinkModel | None = None,
        signed: bool = False,
        exact_bytes: bool = True,
        start: float = 0.0,
    ) -> None:
        self.kernel = Kernel(start=start)
        self.network = Network(
            self.kernel,
            random.Random(seed),
            link or LinkModel(),
            Sizer(signed=signed, exact=exact_bytes),
        )
        self.drop_hook: DropHook | None = None
        self.dropped_by_hook = 0
        # Extra seconds before anything a participant sends leaves: slow but alive.
        self.slow: dict[Address, float] = {}
        self._seats: dict[Address, _Seat] = {}
        self._by_name: dict[str, Address] = {}
        self._spin_at = start
        self._spins = 0

    @property
    def now(self) -> float:
        return self.kernel.now

    # -- topology ------------------------------------------------------------------------

    def add(self, address: Address, participant: Participant) -> None:
        """Put `participant` at `address` (a restart is `crash`, then `add` of a new one)."""
        seat = self._seats.get(address)
        if seat is None:
            seat = self._seats[address] = _Seat(address, self.kernel.at, self._tick)
            self._by_name[seat.name] = address
        seat.participant = participant
        seat.timer.forget()
        self.network.attach(seat.name, lambda message, source: self._receive(seat, message, source))
        self._arm(seat)

    def crash(self, address: Address) -> None:
        """It stops at once: no more ticks, and datagrams that reach it are lost."""
        seat = self._seats[address]
        seat.participant = None
        seat.timer.forget()
        self.network.set_up(seat.name, False)

    def partition(self, *groups: Iterable[Address]) -> None:
        """Only participants in the same group can talk (the network's rule)."""
        self.network.partition([[network_name(address) for address in group] for group in groups])

    def heal(self) -> None:
        self.network.heal()

    # -- traffic -------------------------------------------------------------------------

    def send(self, source: Address, sends: Iterable[Send]) -> None:
        """Send what `source` returned (it must have been added)."""
        name = self._seats[source].name
        hook = self.drop_hook
        delay = self.slow.get(source, 0.0)
        for item in sends:
            if hook is not None and hook(source, item.to, item.message):
                self.dropped_by_hook += 1
                continue
            destination = network_name(item.to)
            if delay > 0.0:
                self.kernel.schedule(delay, self._send_late, (name, destination, item.message))
            else:
                self.network.send(name, destination, item.message)

    def bytes_sent(self) -> dict[Address, int]:
        """Bytes each address has sent so far, every plane together."""
        return {
            address: sum(self.network.node(seat.name).sent_bytes)
            for address, seat in self._seats.items()
        }

    def _send_late(self, datagram: tuple[str, str, Message]) -> None:
        source, destination, message = datagram
        self.network.send(source, destination, message)

    # -- time ----------------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.kernel.run_for(seconds)

    def run_until_true(
        self, predicate: Callable[[], bool], timeout: float, step: float = DEFAULT_STEP_S
    ) -> float | None:
        """`Kernel.run_until_true`: the virtual seconds until `predicate()` held, or None."""
        return self.kernel.run_until_true(predicate, timeout, step)

    # -- hosting -------------------------------------------------------------------------

    def _receive(self, seat: _Seat, message: Message, source: str) -> None:
        participant = seat.participant
        if participant is None:
            return
        sender = self._by_name.get(source)
        if sender is None:  # a network node that is no participant: "host:port" anyway
            host, _, port = source.rpartition(":")
            sender = (host, int(port))
        self.send(seat.address, participant.handle(message, sender, self.kernel.now))
        self._arm(seat)

    def _tick(self, seat: _Seat) -> None:
        participant = seat.participant
        if participant is None:
            return
        now = self.kernel.now
        if now == self._spin_at:
            self._spins += 1
            if self._spins > SPIN_LIMIT:
                raise RuntimeError(f"no progress at t={now}: {seat.name} keeps a past deadline")
        else:
            self._spin_at, self._spins = now, 0
        self.send(seat.address, participant.tick(now))
        self._arm(seat)

    def _arm(self, seat: _Seat) -> None:
        participant = seat.participant
        if participant is not None:
            seat.timer.arm(participant.next_deadline())


# -- gossip clusters -------------------------------------------------------------------------


def member_address(index: int) -> Address:
    """A distinct loopback address per member index."""
    block, offset = divmod(index, ADDRESSES_PER_BLOCK)
    return (f"127.0.{block}.{offset + 1}", MEMBER_PORT)


def member_id(index: int) -> str:
    return f"n{index:04d}"


def membership_cluster(
    participants: Participants,
    count: int,
    config: GossipConfig,
    *,
    seed: int = 0,
    bootstrap: bool = True,
    seeds: int = 1,
) -> list[Membership]:
    """`count` memberships added to `participants`, each with its own seeded generator.

    With `bootstrap`, every member starts knowing every other as alive (a converged
    cluster, for measuring one change); without it, they join through the first `seeds`
    members, as a live cluster does.
    """
    seed_addresses = [member_address(i) for i in range(min(seeds, count))]
    now = participants.now
    members = [
        Membership(
            member_id(i),
            member_address(i),
            random.Random(seed * 1_000_003 + i),
            now,
            config,
            seeds=seed_addresses,
        )
        for i in range(count)
    ]
    if bootstrap:
        peers = [(member.node_id, member.address) for member in members]
        for member in members:
            member.bootstrap(peers, now)
    for member in members:
        participants.add(member.address, member)
    return members

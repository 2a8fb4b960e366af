"""A virtual network: named nodes exchanging message objects on the kernel's clock.

Why it exists: the control plane's behaviour under delay, loss and partitions is what the
experiments compare, so the simulator needs a network with those properties, seeded, and
cheap enough for millions of datagrams. Messages travel as the wire dataclasses
themselves; nothing is encoded on the way (see "Bytes" below for how sizes are counted).

Theory of operation:

- **Nodes** are names with a handler ``handler(message, sender)`` and an up/down flag.
  A message to a node that is down when it arrives is lost, like a datagram to a dead
  process (no ICMP, no error to the sender).
- **Latency** of each datagram is ``latency_s + jitter_s * LogNormal(0, JITTER_SIGMA)``:
  a fixed propagation and processing floor plus a right-skewed queueing delay whose median
  is ``jitter_s`` (datacenter RTT distributions are log-normal-like with a long tail).
  The log-normal factor is drawn from `JITTER_STRATA` equally likely quantiles (one
  uniform draw indexes a table): a tenth of the cost of ``exp(gauss())``, with the tail
  cut at the 99.997th percentile (7.4 times the median).
  Every datagram draws its own delay, so datagrams on one link can be **reordered**.
  `set_link` overrides the model for one direction of one link.
- **Loss** drops a datagram with probability ``loss`` (per link), raised inside loss
  windows (`add_loss_window`: the larger of the two applies). **Duplication** delivers a
  second copy, with its own delay, with probability ``duplicate``.
- **Partitions** (`partition`) split nodes into groups; a datagram sent between groups is
  dropped. Nodes in no group form one group together. `heal` ends it. A partition is
  checked when a datagram is sent: one already in flight (well under a millisecond on a
  LAN) still arrives.
- All chance comes from one seeded `random.Random`, drawn in event order, so a seed
  gives one history. The fast path (no loss, no duplication, no partition, no jitter)
  draws nothing.

**Bytes.** Encoding every datagram with the real codec costs tens of microseconds, which
the speed target cannot afford. `Sizer` encodes exactly, with `sllm.wire.Codec`, the first
`SIZE_SAMPLES` messages of each *shape* (message type, plus the number of models and of
loads for a worker report, which is what its size mostly depends on) and charges every
later message of that shape the mean of those samples. What still varies within a shape
is the printed length of numbers (``0.0`` against ``0.123456789``; a decision's estimate
travels to the millisecond, which keeps it short) and ids; the sim test suite measures
the estimate against exact encoding of every message of a run (within 3%). With a
cluster secret each datagram is signed too (`sllm.wire.codec.SIGNED_OVERHEAD_BYTES`
more).
``Sizer(exact=True)`` encodes every datagram (slow; for gossip tests and for measuring the
estimate).

**Shrink-to-fit.** An encoded message over the datagram cap is shrunk exactly as the live
endpoint shrinks it (`sllm.wire.fit.encode_to_fit`), and the shrunk message is what
arrives; one with nothing left to drop is not sent (the live endpoint logs it and sends
nothing). Both count in `Sizer.oversized`, the second also in `Sizer.unsendable`. Only
encoded messages are checked: past a shape's samples a message is charged the mean and
delivered as it is (with the shipped catalogs no report comes close: 24 models is about 820
bytes, and gossip messages fill themselves to a budget below the cap).

**Instant delivery.** A sender may ask for a datagram to arrive the moment it is sent
(``send(..., transit=False)``): it is sized, counted, lost and cut by partitions exactly
like any other, and only its transit time is left out. The centralized simulator sends
worker reports this way. A report's sub-millisecond transit is far below the one-second
report interval, so leaving it out changes nothing placement sees but the report's age by
that much, and it halves the events that reports cost (a simulated hour of 1,000
workers sends 3.6 million reports, which took 7.2 million events; see docs/simulator.md).

**Planes.** Every message type is control plane (worker reports, scheduling, cluster
state) or data plane (inference requests and results, which the live sim engine also
carries over UDP). Traffic is counted per node and per plane, sent and received, in named
counters (`Node.planes[CONTROL].sent_bytes`, ...). A datagram in transit waits in the
kernel's queue for events due within moments (`Kernel.soon`).

Not handled yet: bandwidth and queueing in switches (a datagram's delay does not depend
on load), asymmetric partitions, corruption (the codec would reject it; the simulator
only loses it), and per-node clock skew.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cache
from math import exp, inf
from statistics import NormalDist

from sllm.sim.kernel import Kernel
from sllm.wire import Codec, EncodeError, Message
from sllm.wire.fit import encode_to_fit
from sllm.wire.messages import (
    ClusterStateRequest,
    ClusterStateResponse,
    InferenceRequest,
    InferenceResult,
    InferenceStarted,
    ScheduleRequest,
    ScheduleResponse,
    WorkerReport,
)

# Spread of the log-normal queueing delay: sigma 0.5 gives a p99 of about 3.2x the median,
# the tail shape of a lightly loaded datacenter network.
JITTER_SIGMA = 0.5
# The log-normal factor takes one of 2**JITTER_BITS values: the midpoint quantiles of
# equal-probability strata, so its mean and percentiles match the continuous law's
# (mean within 0.01%, p99 within 0.1%) up to the last stratum.
JITTER_BITS = 14
JITTER_STRATA = 1 << JITTER_BITS
# Exact encodings per message shape before the mean stands in for the rest: enough to
# cover the spread of number lengths, few enough to cost nothing over a run.
SIZE_SAMPLES = 32
# The sizer signs with this when the cluster has a secret: any secret gives the same length.
SIZING_SECRET = b"sizing"

CONTROL = 0
DATA = 1
PLANES = ("control", "data")
PLANE_OF: dict[type[Message], int] = {
    WorkerReport: CONTROL,
    ScheduleRequest: CONTROL,
    ScheduleResponse: CONTROL,
    ClusterStateRequest: CONTROL,
    ClusterStateResponse: CONTROL,
    InferenceRequest: DATA,
    InferenceResult: DATA,
    InferenceStarted: DATA,
}

Handler = Callable[[Message, str], None]


@dataclass(frozen=True, slots=True)
class LinkModel:
    """One direction of a link. Defaults: a LAN inside one datacenter."""

    latency_s: float = 0.00025  # floor: propagation plus kernel and interpreter handling
    jitter_s: float = 0.00005  # median of the log-normal extra delay; 0 for none
    loss: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        if not (self.latency_s >= 0.0 and self.jitter_s >= 0.0):
            raise ValueError("latency and jitter must be >= 0")
        if not (0.0 <= self.loss <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise ValueError("loss and duplicate are probabilities in [0, 1]")


@cache
def jitter_factors() -> tuple[float, ...]:
    """The LogNormal(0, JITTER_SIGMA) quantiles at the middle of each of the strata."""
    normal = NormalDist(0.0, JITTER_SIGMA)
    return tuple(exp(normal.inv_cdf((i + 0.5) / JITTER_STRATA)) for i in range(JITTER_STRATA))


class Shape:
    """Sizes and counts of one message shape (see the module docstring)."""

    __slots__ = ("bytes", "count", "last", "plane", "samples", "size", "type_name")

    def __init__(self, type_name: str, plane: int) -> None:
        self.type_name = type_name
        self.plane = plane
        self.size = 0  # the mean of the exact samples so far, in bytes
        self.last = 0  # bytes charged for the latest message of this shape
        self.samples = 0
        self.count = 0  # messages of this shape sent
        self.bytes = 0  # bytes charged for them


class Sizer:
    """Encoded datagram sizes from the real codec, sampled per message shape."""

    def __init__(
        self, signed: bool = False, samples: int = SIZE_SAMPLES, exact: bool = False
    ) -> None:
        self._codec = Codec(SIZING_SECRET if signed else None)
        # `exact`: encode every message (slow; for measuring the estimate).
        self._samples = inf if exact else samples
        self._by_type: dict[type[Message], Shape] = {}
        self._by_report_models: dict[tuple[int, int], Shape] = {}  # by models, loads
        self._sampled_bytes: dict[Shape, int] = {}
        self.oversized = 0  # messages over the cap: shrunk to fit, or not sent at all
        self.unsendable = 0  # of those, the ones with nothing left to drop
        # Set by `shape` when the message was over the cap: `fitted` is what travels
        # instead (None: nothing does). The network reads and clears `refitted`.
        self.refitted = False
        self.fitted: Message | None = None

    def shape(self, message: Message) -> Shape:
        """The message's shape, with this message counted and charged (see `refitted`)."""
        if isinstance(message, WorkerReport):
            counts = (len(message.models), len(message.loads))
            shape = self._by_report_models.get(counts)
            if shape is None:
                shape = self._by_report_models[counts] = Shape(message.TYPE, CONTROL)
        else:
            cls = type(message)
            shape = self._by_type.get(cls)
            if shape is None:
                shape = self._by_type[cls] = Shape(cls.TYPE, PLANE_OF.get(cls, CONTROL))
        if shape.samples < self._samples:  # always, when every message is encoded
            size = self._encoded_size(message)
            if self.refitted and self.fitted is None:
                return shape  # not sent: nothing to charge
            total = self._sampled_bytes.get(shape, 0) + size
            self._sampled_bytes[shape] = total
            shape.samples += 1
            shape.size = round(total / shape.samples)
        else:
            size = shape.size
        shape.count += 1
        shape.bytes += size
        shape.last = size
        return shape

    def _encoded_size(self, message: Message) -> int:
        """The datagram's size, shrunk to fit as the live endpoint would (`refitted`)."""
        try:
            fitted, data = encode_to_fit(self._codec, message, 0.0, 0)
        except EncodeError as error:
            if error.reason != "oversized":
                raise
            self.oversized += 1
            self.unsendable += 1
            self.refitted, self.fitted = True, None
            return 0
        if fitted is not message:
            self.oversized += 1
            self.refitted, self.fitted = True, fitted
        return len(data)

    def shapes(self) -> list[Shape]:
        return [*self._by_type.values(), *self._by_report_models.values()]

    def by_type(self) -> dict[str, dict[str, int]]:
        """``{type: {"messages": n, "bytes": b}}`` over every shape, sorted by type."""
        totals: dict[str, dict[str, int]] = {}
        for shape in self.shapes():
            row = totals.setdefault(shape.type_name, {"messages": 0, "bytes": 0})
            row["messages"] += shape.count
            row["bytes"] += shape.bytes
        return dict(sorted(totals.items()))


class PlaneTraffic:
    """What one node sent and received on one plane: datagrams and bytes."""

    __slots__ = ("received_bytes", "received_messages", "sent_bytes", "sent_messages")

    def __init__(self) -> None:
        self.sent_messages = 0
        self.sent_bytes = 0
        self.received_messages = 0
        self.received_bytes = 0


class Node:
    """One address on the network and its traffic, per plane (`planes[CONTROL]`, ...)."""

    __slots__ = ("handler", "name", "planes", "up")

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.handler = handler
        self.up = True
        self.planes = tuple(PlaneTraffic() for _ in PLANES)

    @property
    def sent_messages(self) -> list[int]:
        """Per plane, in `PLANES` order (as are the three below)."""
        return [plane.sent_messages for plane in self.planes]

    @property
    def sent_bytes(self) -> list[int]:
        return [plane.sent_bytes for plane in self.planes]

    @property
    def received_messages(self) -> list[int]:
        return [plane.received_messages for plane in self.planes]

    @property
    def received_bytes(self) -> list[int]:
        return [plane.received_bytes for plane in self.planes]


_Delivery = tuple[Node, Message, str, int, int]  # target, message, source, plane, bytes


class Network:
    """Delivers message objects between named nodes with delay, loss and partitions."""

    def __init__(
        self,
        kernel: Kernel,
        rng: random.Random,
        link: LinkModel | None = None,
        sizer: Sizer | None = None,
    ) -> None:
        self.kernel = kernel
        self.rng = rng
        self._jitter_factors = jitter_factors()
        self.link = link or LinkModel()
        self.sizer = sizer or Sizer()
        self._nodes: dict[str, Node] = {}
        self._links: dict[tuple[str, str], LinkModel] = {}
        self._group: dict[str, int] = {}  # empty: no partition
        self._windows: list[tuple[float, float, float]] = []
        self.lost = 0  # to loss (link or window)
        self.cut = 0  # to a partition
        self.to_down = 0  # arrived at a node that was down
        self.unroutable = 0  # addressed to a name no node has
        self.duplicated = 0

    # -- topology ----------------------------------------------------------------------

    def attach(self, name: str, handler: Handler) -> Node:
        """Add a node (up), or give an existing one a new handler and bring it up."""
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = Node(name, handler)
        node.handler = handler
        node.up = True
        return node

    def node(self, name: str) -> Node:
        return self._nodes[name]

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def set_up(self, name: str, up: bool) -> None:
        self._nodes[name].up = up

    def set_link(self, source: str, destination: str, model: LinkModel) -> None:
        """Use `model` for datagrams from `source` to `destination` (one direction)."""
        self._links[(source, destination)] = model

    def partition(self, groups: Sequence[Collection[str]]) -> None:
        """Split the network: nodes in different groups cannot talk. Replaces any partition."""
        self._group = {}
        for index, group in enumerate(groups, start=1):
            for name in group:
                self._group[name] = index

    def heal(self) -> None:
        self._group = {}

    def can_talk(self, source: str, destination: str) -> bool:
        group = self._group
        return not group or group.get(source, 0) == group.get(destination, 0)

    def add_loss_window(self, start: float, end: float, loss: float) -> None:
        """From `start` until `end` (kernel time), drop datagrams with at least `loss`."""
        if not 0.0 <= loss <= 1.0 or end < start:
            raise ValueError("a loss window needs start <= end and a loss in [0, 1]")
        self._windows.append((start, end, loss))

    def loss_at(self, base: float, now: float) -> float:
        loss = base
        for start, end, window_loss in self._windows:
            if start <= now < end and window_loss > loss:
                loss = window_loss
        return loss

    # -- traffic -----------------------------------------------------------------------

    def send(self, source: str, destination: str, message: Message, transit: bool = True) -> None:
        """Send one datagram; it arrives later, or never.

        With `transit` False it arrives at once, inside this call, if it arrives at all
        (see "Instant delivery" in the module docstring); a duplicate still travels.
        """
        sizer = self.sizer
        shape = sizer.shape(message)
        if sizer.refitted:  # over the cap: the live endpoint sends this instead, or nothing
            sizer.refitted = False
            fitted = sizer.fitted
            if fitted is None:
                return
            message = fitted
        plane = shape.plane
        size = shape.last
        sent = self._nodes[source].planes[plane]
        sent.sent_messages += 1
        sent.sent_bytes += size
        target = self._nodes.get(destination)
        if target is None:
            self.unroutable += 1
            return
        if self._group and not self.can_talk(source, destination):
            self.cut += 1
            return
        link = self._links.get((source, destination), self.link) if self._links else self.link
        loss = link.loss
        if self._windows:
            loss = self.loss_at(loss, self.kernel.now)
        rng = self.rng
        if loss > 0.0 and rng.random() < loss:
            self.lost += 1
            return
        delivery = (target, message, source, plane, size)
        if transit:
            self.kernel.soon(self._delay(link), self._deliver, delivery)
        else:
            self._deliver(delivery)
        if link.duplicate > 0.0 and rng.random() < link.duplicate:
            self.duplicated += 1
            self.kernel.soon(self._delay(link), self._deliver, delivery)

    def _delay(self, link: LinkModel) -> float:
        """One datagram's transit time on `link`."""
        jitter = link.jitter_s
        if not jitter:
            return link.latency_s
        return link.latency_s + jitter * self._jitter_factors[self.rng.getrandbits(JITTER_BITS)]

    def _deliver(self, delivery: _Delivery) -> None:
        target, message, source, plane, size = delivery
        if not target.up:
            self.to_down += 1
            return
        received = target.planes[plane]
        received.received_messages += 1
        received.received_bytes += size
        target.handler(message, source)

    def summary(self) -> dict[str, object]:
        """Datagram counts: sent, delivered and why the others were not."""
        nodes = self._nodes.values()
        return {
            "sent": sum(sum(node.sent_messages) for node in nodes),
            "delivered": sum(sum(node.received_messages) for node in nodes),
            "lost": self.lost,
            "partitioned": self.cut,
            "to_down_node": self.to_down,
            "unroutable": self.unroutable,
            "duplicated": self.duplicated,
            "oversized": self.sizer.oversized,
            "unsendable": self.sizer.unsendable,
        }

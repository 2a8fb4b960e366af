"""Which models a worker keeps, and for how long: learned keep-alive, eviction by expected cost.

Why it exists: a worker with little GPU and host memory for many models decides, every time
a model goes idle or a load needs room, which checkpoint to give up. A fixed keep-alive and
least-recently-used eviction ignore what they know: how often each model comes back, and
what bringing it back costs. Under memory pressure the load channel is the bottleneck (one
load at a time, tens of seconds for a large checkpoint from disk), so a wrong eviction costs
the next request a whole load.

Theory of operation:

- **Keep-alive** (``keep_alive="histogram"``): the hybrid-histogram policy of Shahrad et al.,
  "Serverless in the Wild", USENIX ATC'20. Each model's idle times (from the end of its last
  request here to the next arrival) go into a histogram of `BIN_S` bins up to
  `HISTOGRAM_RANGE_S`. When it is representative (at least `MIN_SAMPLES` idle times, the
  coefficient of variation of its bin counts at least `MIN_BIN_CV`, and at most
  `MAX_OUT_OF_BOUNDS` of them beyond its range), the **pre-warm window** is its
  `HEAD_PERCENTILE` less `MARGIN` and the **keep-alive window** runs from there to its
  `TAIL_PERCENTILE` plus `MARGIN`. Otherwise the fixed keep-alive applies (the paper falls
  back to the standard keep-alive, or to ARIMA for idle times beyond the range; ARIMA is not
  done here). ``keep_alive="fixed"`` is the worker's plain ``keep_alive_s``.
- **Pre-warm** (the worker's ``prefetch``): with a pre-warm window of at least
  `PREWARM_MIN_S`, a model leaves the GPU as soon as it is idle (it is not expected back
  soon, and memory is short) and is loaded again when the window ends, ahead of the
  predicted arrival, if the GPU has room and the load channel is free then.
- **Eviction** (``eviction="expected-cost"``): to make room, the idle model whose loss costs
  least is given up first: the seconds to load it back (from the tier it falls to) times the
  probability that it is asked for again within `REUSE_HORIZON_S`, from its arrival rate
  here (a count decayed over `RATE_WINDOW_S`, Poisson within the horizon). Ties keep
  least-recently-used order. ``eviction="lru"`` is plain least recently used.

Pure: the worker (`sllm.core.worker`) calls it with ``now``; nothing here reads a clock.

Not handled yet: ARIMA for idle times beyond the histogram's range, and sharing what one
worker learned with the others (each learns from the requests placed on it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

KEEP_ALIVE_POLICIES = ("fixed", "histogram")
EVICTION_POLICIES = ("lru", "expected-cost")

# Width of an idle-time bin. The paper uses one minute for functions invoked minutes to
# hours apart; an LLM service's popular models come back within seconds, so a second keeps
# their windows from rounding up to a minute of held GPU memory.
BIN_S = 1.0
# The paper's histogram range: four hours. Idle times beyond it count as out of bounds.
HISTOGRAM_RANGE_S = 4 * 3600.0
# The paper's percentiles: the 5th for the pre-warm window, the 99th for the keep-alive.
HEAD_PERCENTILE = 5.0
TAIL_PERCENTILE = 99.0
# The paper's margin: pre-warm 10% earlier, keep alive 10% longer than the percentiles.
MARGIN = 0.10
# Below this many idle times a histogram says nothing yet (the paper waits for a pattern
# too); ten is a percentile's worth at the head without a day of history.
MIN_SAMPLES = 10
# The paper's representativeness test: a histogram whose bin counts vary little (CV < 2) is
# spread over the whole range and predicts nothing.
MIN_BIN_CV = 2.0
# The paper turns to ARIMA when many idle times are beyond the range; here, the fixed
# keep-alive takes over when more than half are.
MAX_OUT_OF_BOUNDS = 0.5
# A pre-warm shorter than this is not worth an unload and a reload: a load from host memory
# takes about a second (engine start plus the copy, `sllm.core.cost`).
PREWARM_MIN_S = 5.0
# A model's arrival rate here is its count of arrivals decayed with this time constant: five
# minutes follows a burst within one or two keep-alive periods, and forgets it after.
RATE_WINDOW_S = 300.0
# "Asked for again soon": within a minute, about the longest load from disk of a 70B
# checkpoint, i.e. the time in which an eviction's cost would be paid.
REUSE_HORIZON_S = 60.0


class IdleHistogram:
    """One model's idle times, in `BIN_S` bins up to `HISTOGRAM_RANGE_S` (sparse)."""

    __slots__ = ("_bins", "out_of_bounds", "total")

    def __init__(self) -> None:
        self._bins: dict[int, int] = {}
        self.total = 0
        self.out_of_bounds = 0

    def observe(self, idle_s: float) -> None:
        self.total += 1
        if idle_s >= HISTOGRAM_RANGE_S:
            self.out_of_bounds += 1
            return
        index = int(max(0.0, idle_s) // BIN_S)
        self._bins[index] = self._bins.get(index, 0) + 1

    @property
    def representative(self) -> bool:
        """Enough idle times, concentrated in few bins, mostly within the range."""
        if self.total < MIN_SAMPLES or self.out_of_bounds > MAX_OUT_OF_BOUNDS * self.total:
            return False
        return self.bin_cv() >= MIN_BIN_CV

    def bin_cv(self) -> float:
        """Coefficient of variation of the counts over every bin of the range."""
        bins = int(HISTOGRAM_RANGE_S / BIN_S)
        inside = self.total - self.out_of_bounds
        if inside == 0:
            return 0.0
        mean = inside / bins
        squares = sum(count * count for count in self._bins.values())
        variance = max(0.0, squares / bins - mean * mean)
        return math.sqrt(variance) / mean

    def percentile(self, percent: float) -> float:
        """The upper edge of the bin holding the `percent`-th percentile of in-range idle
        times (the paper's convention: a window covers the whole bin)."""
        inside = self.total - self.out_of_bounds
        if inside == 0:
            return 0.0
        wanted = percent / 100.0 * inside
        seen = 0
        for index in sorted(self._bins):
            seen += self._bins[index]
            if seen >= wanted:
                return (index + 1) * BIN_S
        return HISTOGRAM_RANGE_S


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAliveWindow:
    """When to have a model loaded after it goes idle: from `prewarm_s` for `keep_alive_s`."""

    prewarm_s: float
    keep_alive_s: float
    learned: bool  # False: the fixed keep-alive (no histogram, or an unrepresentative one)

    @property
    def ends_s(self) -> float:
        return self.prewarm_s + self.keep_alive_s


class _Demand:
    """What one worker has seen of one model: idle times and a decayed arrival count."""

    __slots__ = ("count", "counted_at", "histogram", "idle_since")

    def __init__(self) -> None:
        self.histogram = IdleHistogram()
        self.idle_since = -1.0  # < 0: never went idle here
        self.count = 0.0
        self.counted_at = 0.0


class Retention:
    """One worker's keep-alive windows and eviction order, learned from its own requests."""

    __slots__ = ("_demand", "eviction", "fixed_keep_alive_s", "keep_alive")

    def __init__(self, *, keep_alive: str, eviction: str, fixed_keep_alive_s: float) -> None:
        if keep_alive not in KEEP_ALIVE_POLICIES:
            raise ValueError(f"keep-alive policy {keep_alive!r}: choose from {KEEP_ALIVE_POLICIES}")
        if eviction not in EVICTION_POLICIES:
            raise ValueError(f"eviction policy {eviction!r}: choose from {EVICTION_POLICIES}")
        self.keep_alive = keep_alive
        self.eviction = eviction
        self.fixed_keep_alive_s = fixed_keep_alive_s
        self._demand: dict[str, _Demand] = {}

    @property
    def learns(self) -> bool:
        """Whether anything here depends on the requests seen (else the worker skips it)."""
        return self.keep_alive != "fixed" or self.eviction != "lru"

    def arrived(self, model: str, now: float, *, idle: bool) -> None:
        """A request for `model` arrived; `idle`: nothing of it was queued or running here."""
        demand = self._demand.get(model)
        if demand is None:
            demand = self._demand[model] = _Demand()
        if idle and demand.idle_since >= 0.0:
            demand.histogram.observe(now - demand.idle_since)
        demand.count = self._decayed(demand, now) + 1.0
        demand.counted_at = now

    def went_idle(self, model: str, now: float) -> None:
        """The last request of `model` here ended: its idle time starts."""
        demand = self._demand.get(model)
        if demand is None:
            demand = self._demand[model] = _Demand()
        demand.idle_since = now

    def idle_since(self, model: str) -> float:
        demand = self._demand.get(model)
        return -1.0 if demand is None else demand.idle_since

    def window(self, model: str) -> KeepAliveWindow:
        demand = self._demand.get(model)
        if self.keep_alive == "fixed" or demand is None or not demand.histogram.representative:
            return KeepAliveWindow(
                prewarm_s=0.0, keep_alive_s=self.fixed_keep_alive_s, learned=False
            )
        histogram = demand.histogram
        prewarm = histogram.percentile(HEAD_PERCENTILE) * (1.0 - MARGIN)
        tail = histogram.percentile(TAIL_PERCENTILE) * (1.0 + MARGIN)
        return KeepAliveWindow(
            prewarm_s=prewarm, keep_alive_s=max(BIN_S, tail - prewarm), learned=True
        )

    def rate_per_s(self, model: str, now: float) -> float:
        demand = self._demand.get(model)
        return 0.0 if demand is None else self._decayed(demand, now) / RATE_WINDOW_S

    def reuse_probability(self, model: str, now: float) -> float:
        """The chance `model` is asked for here within `REUSE_HORIZON_S` (Poisson)."""
        return 1.0 - math.exp(-self.rate_per_s(model, now) * REUSE_HORIZON_S)

    def expected_cost(self, model: str, reload_s: float, now: float) -> float:
        """Seconds of loading that giving up `model` is expected to cost soon."""
        return reload_s * self.reuse_probability(model, now)

    def eviction_order(self, candidates: Iterable[tuple[str, float]], now: float) -> list[str]:
        """`candidates` ``(model, reload seconds)``, least recently used first, in the order
        to give them up: unchanged under LRU, cheapest expected cost first otherwise."""
        listed = list(candidates)
        if self.eviction == "lru":
            return [model for model, _ in listed]
        ranked = sorted(
            enumerate(listed),
            key=lambda item: (self.expected_cost(item[1][0], item[1][1], now), item[0]),
        )
        return [model for _, (model, _) in ranked]

    @staticmethod
    def _decayed(demand: _Demand, now: float) -> float:
        return decayed(demand.count, demand.counted_at, now, RATE_WINDOW_S)


def decayed(count: float, counted_at: float, now: float, window_s: float) -> float:
    """A count of arrivals taken at `counted_at`, decayed exponentially with time constant
    `window_s` to `now`: divided by `window_s`, an arrival rate that follows bursts."""
    return count * math.exp(-max(0.0, now - counted_at) / window_s)

"""Faults on a schedule or drawn from a seed: crashes, restarts, partitions, loss windows.

Why it exists: the fault-tolerance experiment and the deterministic simulation tests
need failures that happen at known times, identically on every run with the same seed.

A `Fault` is one thing that happens at ``at_s`` seconds into the workload (the same
clock as the arrivals):

- ``kill_worker`` / ``restart_worker``: the worker process dies (its queue, running
  requests and GPU contents are lost; its datagrams stop) or comes back as a fresh
  process, with the checkpoints its local store held at first start (`prestaged`);
- ``kill_coordinator`` / ``restart_coordinator``: the same for the coordinator; a
  restarted coordinator starts with an empty view and relearns every worker from the next
  round of reports (its state is soft);
- ``partition`` / ``heal``: `targets` are cut off from every other node (the coordinator
  and the client stay together on the other side), until a heal;
- ``loss_window``: datagrams are dropped with probability `loss` from ``at_s`` until
  ``until_s``.

`scheduled_faults` builds a plan from the CLI's fault flags; `random_faults` draws one
from a seed, with every fault over (workers restarted, partitions healed, windows closed)
by a given time, so tests can check that the cluster converges afterwards; `random_link`
draws a lossy, jittery, duplicating link to run it on.

Not handled yet: slow (grey) failures, clock skew, disk loss on restart (a restarted
worker finds its prestaged checkpoints, not what it had cached since), and faults of the
client itself.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sllm.sim.network import LinkModel

KILL_WORKER = "kill_worker"
RESTART_WORKER = "restart_worker"
KILL_COORDINATOR = "kill_coordinator"
RESTART_COORDINATOR = "restart_coordinator"
PARTITION = "partition"
HEAL = "heal"
LOSS_WINDOW = "loss_window"
FAULT_KINDS = (
    KILL_WORKER,
    RESTART_WORKER,
    KILL_COORDINATOR,
    RESTART_COORDINATOR,
    PARTITION,
    HEAL,
    LOSS_WINDOW,
)

# Random plans: how long an outage lasts, and how lossy a loss window is.
RANDOM_OUTAGE_S = (1.0, 15.0)
RANDOM_LOSS = (0.05, 0.5)


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: str
    targets: tuple[str, ...] = ()  # workers (kill, restart, partition)
    loss: float = 0.0  # loss_window only
    until_s: float = 0.0  # loss_window only

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose from {', '.join(FAULT_KINDS)}")
        if self.at_s < 0:
            raise ValueError(f"fault time must be >= 0, got {self.at_s}")
        if self.kind == LOSS_WINDOW and not (0.0 <= self.loss <= 1.0 and self.until_s >= self.at_s):
            raise ValueError("a loss window needs 0 <= loss <= 1 and until >= at")

    def describe(self) -> dict[str, object]:
        """The fault as the JSON report lists it."""
        row: dict[str, object] = {"at_s": round(self.at_s, 6), "fault": self.kind}
        if self.targets:
            row["targets"] = list(self.targets)
        if self.kind == LOSS_WINDOW:
            row["loss"] = self.loss
            row["until_s"] = round(self.until_s, 6)
        return row


def scheduled_faults(
    workers: Sequence[str],
    rng: random.Random,
    *,
    kill_workers: int = 0,
    kill_at: float | None = None,
    kill_coordinator_at: float | None = None,
    restart_after: float | None = None,
    partition_at: float | None = None,
    heal_at: float | None = None,
    partition_fraction: float = 0.5,
    loss_windows: Sequence[tuple[float, float, float]] = (),
) -> list[Fault]:
    """The plan the CLI flags describe; victims are drawn from `rng` (seeded).

    `kill_workers` workers die at `kill_at` and, with `restart_after`, come back that much
    later; the coordinator dies at `kill_coordinator_at` and comes back after
    `restart_after` (never, without it). A partition cuts `partition_fraction` of the
    workers off from the coordinator and the client at `partition_at`, until `heal_at`.
    Raises ValueError on a plan that does not make sense.
    """
    plan: list[Fault] = []
    if kill_workers:
        if kill_at is None:
            raise ValueError("--kill-workers needs --kill-at")
        if not 0 < kill_workers <= len(workers):
            raise ValueError(f"--kill-workers must be in 1..{len(workers)}")
        victims = tuple(sorted(rng.sample(list(workers), kill_workers)))
        plan.append(Fault(kill_at, KILL_WORKER, victims))
        if restart_after is not None:
            plan.append(Fault(kill_at + restart_after, RESTART_WORKER, victims))
    if kill_coordinator_at is not None:
        plan.append(Fault(kill_coordinator_at, KILL_COORDINATOR))
        if restart_after is not None:
            plan.append(Fault(kill_coordinator_at + restart_after, RESTART_COORDINATOR))
    if partition_at is not None:
        if not 0.0 < partition_fraction <= 1.0:
            raise ValueError("--partition-fraction must be in (0, 1]")
        count = max(1, round(partition_fraction * len(workers)))
        side = tuple(sorted(rng.sample(list(workers), count)))
        plan.append(Fault(partition_at, PARTITION, side))
        if heal_at is not None:
            if heal_at < partition_at:
                raise ValueError("--heal-at must not be before --partition-at")
            plan.append(Fault(heal_at, HEAL))
    elif heal_at is not None:
        raise ValueError("--heal-at needs --partition-at")
    for start, end, loss in loss_windows:
        plan.append(Fault(start, LOSS_WINDOW, loss=loss, until_s=end))
    return sorted(plan, key=lambda fault: fault.at_s)


def random_faults(
    workers: Sequence[str], rng: random.Random, count: int, start_s: float, end_s: float
) -> list[Fault]:
    """`count` fault episodes drawn from `rng`, each begun and over within [start, end].

    An episode is a worker crash and restart, a coordinator crash and restart, a partition
    of a random subset of workers and its heal, or a loss window. Episodes may overlap.
    """
    if end_s <= start_s:
        raise ValueError("random faults need end > start")
    kinds = (KILL_WORKER, KILL_COORDINATOR, PARTITION, LOSS_WINDOW)
    plan: list[Fault] = []
    for _ in range(count):
        kind = rng.choice(kinds)
        length = min(rng.uniform(*RANDOM_OUTAGE_S), (end_s - start_s) / 2)
        begin = rng.uniform(start_s, end_s - length)
        over = begin + length
        if kind == KILL_WORKER:
            victims = tuple(sorted(rng.sample(list(workers), rng.randint(1, len(workers)))))
            plan += [Fault(begin, KILL_WORKER, victims), Fault(over, RESTART_WORKER, victims)]
        elif kind == KILL_COORDINATOR:
            plan += [Fault(begin, KILL_COORDINATOR), Fault(over, RESTART_COORDINATOR)]
        elif kind == PARTITION:
            side = tuple(sorted(rng.sample(list(workers), rng.randint(1, len(workers)))))
            plan += [Fault(begin, PARTITION, side), Fault(over, HEAL)]
        else:
            plan.append(Fault(begin, LOSS_WINDOW, loss=rng.uniform(*RANDOM_LOSS), until_s=over))
    return sorted(plan, key=lambda fault: fault.at_s)


def random_link(rng: random.Random) -> LinkModel:
    """A LAN link with jitter, loss and duplication drawn from `rng` (none of each, often)."""
    return LinkModel(
        latency_s=0.0005,
        jitter_s=rng.choice((0.0, 0.0002, 0.002)),
        loss=rng.choice((0.0, 0.0, 0.01, 0.05)),
        duplicate=rng.choice((0.0, 0.0, 0.02)),
    )


def parse_loss_window(text: str, default_loss: float) -> tuple[float, float, float]:
    """``A:B`` or ``A:B:P`` -> (start, end, loss); P defaults to `default_loss`."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected START:END or START:END:LOSS, got {text!r}")
    try:
        start, end = float(parts[0]), float(parts[1])
        loss = float(parts[2]) if len(parts) == 3 else default_loss
    except ValueError:
        raise ValueError(f"expected numbers in {text!r}") from None
    if not (0 <= start <= end and 0.0 <= loss <= 1.0):
        raise ValueError(f"{text!r}: need 0 <= START <= END and 0 <= LOSS <= 1")
    return start, end, loss

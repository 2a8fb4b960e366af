"""`sllm bench placement`: decisions per second per policy and cluster size, and UDP intake.

**Placement.** For each policy and each cluster size it builds a coordinator whose view
holds N workers with realistic reports (a few models on the GPU, more in host memory and
on disk, queues of 0-8), then times `Coordinator.place` on a stream of requests drawn
from the skewed model popularity. Every `REPORT_EVERY` decisions, fresh reports for a
slice of the workers arrive (untimed), so pending counts stay as they are in a live
cluster where each worker reports once a second. Only `place` is timed, on one core.

**UDP intake.** A coordinator runs in this process on 127.0.0.1; a separate process sends
pre-encoded worker reports from many workers as fast as it can for a few seconds. The
figure is reports the coordinator decoded and applied per second (what it keeps up
with), not what the sender sent: datagrams the kernel dropped are not counted.

The target (issue: placement at scale): startup-aware and least-loaded make at least
20,000 decisions/s at 10,000 workers, and a decision at 10,000 workers costs at most 2x
one at 100. `seed` scans every worker by design; it is the baseline, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sllm.core.coordinator import Coordinator
from sllm.core.cost import CostModel
from sllm.core.placement import policy_names
from sllm.core.tiers import Tier
from sllm.runtime.coordinator import CoordinatorServer
from sllm.wire import Codec, ScheduleRequest, WorkerReport
from sllm.workload import ModelPopularity, default_catalog, load_popularity

SIZES = (100, 1_000, 10_000)
MODELS = 64
REPORT_EVERY = 64
# Each (policy, size) runs for about this long, or DECISIONS_MAX decisions if sooner.
SECONDS_PER_CASE = 1.0
DECISIONS_MAX = 200_000
UDP_SECONDS = 3.0
UDP_SENDER_WORKERS = 1_000


def synthetic_report(
    rng: random.Random, worker_id: str, names: Sequence[str], seq: int
) -> WorkerReport:
    """A plausible report: 1-2 models on the GPU, a few in host memory, more on disk."""
    picked = rng.sample(list(names), k=12)
    models = {name: int(Tier.GPU) for name in picked[:2]}
    models.update({name: int(Tier.HOST) for name in picked[2:6]})
    models.update({name: int(Tier.DISK) for name in picked[6:]})
    running = rng.randint(0, 8)
    return WorkerReport(
        node_id=worker_id,
        host="127.0.0.1",
        port=8000,
        http_port=0,
        models=models,
        models_omitted=0,
        queue_depth=rng.randint(0, 8) if running == 8 else 0,
        queue_capacity=64,
        running=running,
        slots=8,
        gpu_utilization=running / 8,
        memory_used=60 * 10**9,
        memory_total=141 * 10**9,
        load_backlog_s=rng.choice((0.0, 0.0, 0.0, 5.0)),
        ready=True,
        seq=seq,
        timestamp=float(seq),
    )


def measure_placement(policy: str, workers: int, seed: int = 0) -> float:
    """Decisions per second of `policy` over a view of `workers` workers."""
    rng = random.Random(seed)
    catalog = {spec.name: spec for spec in default_catalog(MODELS)}
    names = list(catalog)
    coordinator = Coordinator(policy, catalog, CostModel(), 1e9, random.Random(seed), 0.0)
    ids = [f"w{i:05d}" for i in range(workers)]
    seq = 1
    for worker_id in ids:
        coordinator.handle(synthetic_report(rng, worker_id, names, seq), 0.0)
    popularity = ModelPopularity.from_table(load_popularity(), names)
    requests = [
        ScheduleRequest(
            request_id=f"r{i}",
            model=popularity.sample(rng),
            priority=0,
            prompt_tokens=512,
            output_tokens=128,
        )
        for i in range(4096)
    ]
    decisions = 0
    spent = 0.0
    cursor = 0
    while spent < SECONDS_PER_CASE and decisions < DECISIONS_MAX:
        batch = requests[decisions % len(requests) :][:REPORT_EVERY]
        started = time.perf_counter()
        for request in batch:
            coordinator.place(request, 1.0)
        spent += time.perf_counter() - started
        decisions += len(batch)
        seq += 1
        for _ in range(max(1, workers * REPORT_EVERY // 20_000)):  # ~1 report/worker/s
            worker_id = ids[cursor % workers]
            cursor += 1
            coordinator.handle(synthetic_report(rng, worker_id, names, seq), 1.0)
    return decisions / spent


def _send_reports(port: int, seconds: float, workers: int) -> None:
    """Sender process: blast pre-encoded reports at 127.0.0.1:port for `seconds`."""
    rng = random.Random(1)
    codec = Codec()
    names = [spec.name for spec in default_catalog(MODELS)]
    datagrams = [
        codec.encode(synthetic_report(rng, f"w{i:05d}", names, 1 + i), 0.0, i)
        for i in range(workers)
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        for _ in range(64):
            sock.sendto(datagrams[i % workers], ("127.0.0.1", port))
            i += 1
        time.sleep(0)  # let the receiver's core run on a 2-core machine
    sock.close()


async def measure_udp_intake(seconds: float = UDP_SECONDS) -> float:
    """Reports per second the live coordinator decodes and applies on loopback."""
    catalog = {spec.name: spec for spec in default_catalog(MODELS)}
    server = CoordinatorServer("127.0.0.1", 0, Codec(), "least-loaded", catalog, CostModel(), 1e6)
    await server.start()
    counters = server.core.counters
    try:
        sender = multiprocessing.get_context("spawn").Process(
            target=_send_reports, args=(server.address[1], seconds, UDP_SENDER_WORKERS)
        )
        sender.start()
        loop = asyncio.get_running_loop()
        while sender.is_alive() and counters.reports == 0:  # spawning takes a moment
            await asyncio.sleep(0.01)
        start_count, started = counters.reports, loop.time()
        while sender.is_alive():
            await asyncio.sleep(0.05)
        elapsed = loop.time() - started
        await loop.run_in_executor(None, sender.join)
        return (counters.reports - start_count) / elapsed if elapsed > 0 else 0.0
    finally:
        await server.stop()


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRate:
    """Decisions per second of one policy at one cluster size."""

    policy: str
    workers: int
    decisions_per_s: int

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "workers": self.workers,
            "decisions_per_s": self.decisions_per_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementBench:
    """The benchmark's result: every rate, and the UDP intake when it was measured."""

    placement: list[PlacementRate]
    udp_reports_per_s: int | None  # None with --no-udp

    def as_dict(self) -> dict[str, object]:
        document: dict[str, object] = {"placement": [rate.as_dict() for rate in self.placement]}
        if self.udp_reports_per_s is not None:
            document["udp_reports_per_s"] = self.udp_reports_per_s
        return document


def run(sizes: Sequence[int], policies: Sequence[str], udp: bool, quiet: bool) -> PlacementBench:
    results: list[PlacementRate] = []
    for policy in policies:
        for workers in sizes:
            rate = measure_placement(policy, workers)
            results.append(
                PlacementRate(policy=policy, workers=workers, decisions_per_s=round(rate))
            )
            if not quiet:
                print(f"{policy:<14} {workers:>6} workers  {rate:>12,.0f} decisions/s", flush=True)
    intake: int | None = None
    if udp:
        intake = round(asyncio.run(measure_udp_intake()))
        if not quiet:
            print(f"udp report intake {intake:,} reports/s", flush=True)
    return PlacementBench(placement=results, udp_reports_per_s=intake)


def scaling_check(report: PlacementBench) -> list[str]:
    """Lines comparing against the targets, as ratios measured in this same run."""
    rates = {(r.policy, r.workers): r.decisions_per_s for r in report.placement}
    lines = []
    for policy in ("startup-aware", "least-loaded"):
        small, large = rates.get((policy, 100)), rates.get((policy, 10_000))
        if small and large:
            lines.append(
                f"{policy}: {large:,} decisions/s at 10,000 workers (target >= 20,000: "
                f"{'met' if large >= 20_000 else 'NOT met'}); time per decision at 10,000 is "
                f"{small / large:.2f}x that at 100 (target <= 2x: "
                f"{'met' if small / large <= 2 else 'NOT met'})"
            )
    return lines


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "placement",
        help="placement decisions/s per policy at 100, 1,000 and 10,000 workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES)
    )
    parser.add_argument("--policies", type=lambda s: s.split(","), default=list(policy_names()))
    parser.add_argument("--no-udp", action="store_true", help="skip the UDP intake measurement")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    known = policy_names()
    unknown = [p for p in args.policies if p not in known]
    if unknown:
        print(f"unknown policies: {', '.join(unknown)}; choose from {', '.join(known)}")
        return 2
    report = run(args.sizes, args.policies, not args.no_udp, quiet=args.json)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for line in scaling_check(report):
            print(line)
    return 0

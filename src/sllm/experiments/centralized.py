"""`centralized_simulation.py`: a real centralized cluster on loopback, driven by a workload.

It starts one coordinator and N workers as separate processes (real UDP, real clock, the
sim engine for service times), waits until the coordinator sees every worker, then
replays the workload: for each request it asks the coordinator where to run it and sends
it to that worker, measuring what a client would see. Every 10 s (``--status-interval``)
it prints the cluster state; at the end (or on Ctrl+C) it prints the final report and,
with --json, writes it.

Each request is followed by the request client (`sllm.hosts.client.RequestClient`, the
simulator's too, here on the asyncio driver): the client-side timings (time to first token
= the scheduling round trip + the worker's own time from arrival to first token;
end-to-end on the client's clock), the timeouts and the retries are written there once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from sllm.core.measures import Placements
from sllm.core.outstanding import RequestOutcome
from sllm.experiments.launcher import ServiceProcess
from sllm.experiments.report import run_and_report
from sllm.hosts.client import SAMPLE_PERIOD_S, SCHEDULE_TIMEOUT_S, RequestClient
from sllm.runtime.client import get_cluster_state, placements_in, render_table
from sllm.runtime.driver import AsyncioDriver
from sllm.runtime.udp import Address, Endpoint
from sllm.sim.report import RunReport, WorkerSamples, build_report
from sllm.wire import Codec, ScheduleResponse
from sllm.workload import Arrival
from sllm.workload.options import (
    add_policy_argument,
    add_run_arguments,
    add_workload_arguments,
    make_workload,
    options_from_args,
)

JOIN_TIMEOUT_S = 15.0
# How long the final state block waits for the coordinator's answer: hundreds of loopback
# round trips, and short enough that a dead coordinator delays the report by no more.
FINAL_STATE_TIMEOUT_S = 0.5
FINAL_STATE_HEADER = "--- cluster state at the end of the run ---"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="centralized_simulation.py",
        description="Run a coordinator and N workers on 127.0.0.1 (separate processes, real "
        "UDP, sim engine) under a workload, and report latency, warm starts and placements "
        "and balance.",
    )
    parser.add_argument("--workers", type=int, default=5, help="number of workers (default 5)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of arrivals (default 30)"
    )
    parser.add_argument(
        "--coordinator-port", type=int, default=9000, help="UDP port (default 9000; 0 = any)"
    )
    parser.add_argument(
        "--base-worker-port",
        type=int,
        default=8001,
        help="worker i listens on this + i (default 8001; 0 = any free port)",
    )
    add_policy_argument(parser, help="placement policy (default startup-aware)")
    add_run_arguments(parser)
    parser.add_argument(
        "--report-interval", type=float, default=1.0, help="worker report period (s)"
    )
    parser.add_argument("--worker-timeout", type=float, default=10.0, help="worker timeout (s)")
    parser.add_argument("--verbose", "-v", action="store_true", help="echo the services' logs")
    add_workload_arguments(parser)
    return parser


# Workers a liveness poll found alive, and those it found lost (dead or gone).
Liveness = tuple[set[str], set[str]]
LivenessPoll = Callable[[], Awaitable[Liveness | None]]
# The body of a periodic status block, read when it is due.
StatusRead = Callable[[], Awaitable[str]]
# How often the driver asks whether the workers holding its requests still live: a
# fraction of the detection time (a few seconds of gossip, or WORKER_TIMEOUT), so that a
# request stuck on a dead worker is retried within a second of the cluster noticing.
WATCH_PERIOD_S = 0.5


def _worker_address(decision: ScheduleResponse) -> Address:
    return (decision.host, decision.port)


class Driver:
    """Replays a workload against a live scheduler and records what clients see.

    The scheduler is the coordinator, or, with `pick_scheduler`, whatever it returns for
    each request and each state sample (the decentralized script: a random live node).
    The periodic status block shows the sampled scheduler's state, or, with `status`,
    what that returns (the decentralized script: every node's counters summed).

    Each request is followed by the shared `RequestClient` (`sllm.hosts.client`), which
    holds it in `outstanding` (`sllm.core.outstanding`) from its arrival to its answer;
    `run_request` waits for its end. Every `WATCH_PERIOD_S` the driver asks `liveness`
    which workers live (default: the ones the coordinator's state lists) and tells the
    client of every worker lost: a request queued there is placed again, and one running
    there fails with ``worker_lost``.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        coordinator: Address,
        pick_scheduler: Callable[[], Address] | None = None,
        liveness: LivenessPoll | None = None,
        status: StatusRead | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.coordinator = coordinator
        self.pick_scheduler = pick_scheduler or (lambda: coordinator)
        self.liveness = liveness or self._coordinator_liveness
        self.status = status
        self.samples: dict[str, WorkerSamples] = {}
        self.active_workers = 0
        self.missed_samples = 0  # cluster-state samples the coordinator did not answer
        self.in_flight: set[asyncio.Task[None]] = set()
        driver = AsyncioDriver()
        driver.endpoint = endpoint
        self.client = RequestClient(
            driver,
            scheduler=self.pick_scheduler,
            worker_address=_worker_address,
            schedule_timeout_s=SCHEDULE_TIMEOUT_S,
            ended=self._ended,
        )
        self.outcomes: list[RequestOutcome] = self.client.outcomes
        self.outstanding = self.client.outstanding
        self._ends: dict[str, asyncio.Future[None]] = {}
        self._absent: set[str] = set()  # workers missing from the last coordinator state
        endpoint.handler = self.client.receive

    async def replay(self, arrivals: Sequence[Arrival], stop: asyncio.Event) -> None:
        start = time.monotonic()
        for index, arrival in enumerate(arrivals):
            delay = start + arrival.time_s - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            task = asyncio.create_task(self.run_request(f"r{index:07d}", arrival))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    def _ended(self, outcome: RequestOutcome, arrival: Arrival) -> None:
        end = self._ends.pop(outcome.request_id, None)
        if end is not None and not end.done():
            end.set_result(None)

    async def run_request(self, request_id: str, arrival: Arrival) -> None:
        """Follow one request to its end; cancelled, it ends ``unfinished``."""
        end: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ends[request_id] = end
        self.client.begin(request_id, arrival)
        try:
            await end
        except asyncio.CancelledError:
            if request_id in self.client.pending:
                self.client.abandon(request_id)
            raise

    async def watch_forever(self) -> None:
        """Tell the client which workers live, every `WATCH_PERIOD_S`."""
        while True:
            await asyncio.sleep(WATCH_PERIOD_S)
            await self.watch_once()

    async def watch_once(self) -> None:
        with contextlib.suppress(TimeoutError, OSError):
            liveness = await self.liveness()
            if liveness is not None:
                alive, lost = liveness
                for worker_id in alive:
                    self.client.worker_back(worker_id)
                for worker_id in sorted(lost):
                    self.client.worker_lost(worker_id)

    async def _coordinator_liveness(self) -> Liveness | None:
        """Alive: the workers the coordinator's state lists. Lost: a worker a decision
        named that two states in a row lack (one could miss it while paging as the
        coordinator drops another). None, deciding nothing, when the listing is incomplete
        (a page went unanswered): a worker missing from it may well be alive."""
        state = await get_cluster_state(self.endpoint, self.coordinator)
        if not state["complete"]:
            return None
        alive = {str(worker["id"]) for worker in state["workers"]}
        absent = self.client.placed_on - alive
        lost = absent & self._absent
        self._absent = absent
        return alive, lost

    async def sample_forever(self, print_every_s: float) -> None:
        """Sample every worker's queue depth and utilization; print the state every
        `print_every_s`."""
        last_print = time.monotonic()
        while True:
            await asyncio.sleep(SAMPLE_PERIOD_S)
            try:
                state = await get_cluster_state(self.endpoint, self.pick_scheduler())
            except TimeoutError:
                self.missed_samples += 1
                continue
            self.active_workers = state["active_workers"]
            for worker in state["workers"]:
                samples = self.samples.setdefault(worker["id"], WorkerSamples())
                samples.add(worker["queue_depth"], worker["gpu_utilization"])
            if time.monotonic() - last_print >= print_every_s:
                last_print = time.monotonic()
                header = f"--- cluster state at {len(self.outcomes)} finished requests ---"
                block = render_table(state) if self.status is None else await self.status()
                print(f"\n{header}")
                print(block, flush=True)


async def wait_for_workers(endpoint: Endpoint, coordinator: Address, count: int) -> int:
    """Wait until the coordinator knows `count` workers; return how many it knows."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    known = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            state = await get_cluster_state(endpoint, coordinator, 0.5)
            known = int(state["active_workers"])
            if known >= count:
                return known
        await asyncio.sleep(0.05)
    return known


async def print_final_state(endpoint: Endpoint, coordinator: Address) -> Placements | None:
    """Print the coordinator's state once more after the drain, as the periodic block
    does, and return its placements for the final report: one read, so the two print the
    same warm placement figures. None when the coordinator does not answer."""
    try:
        state = await get_cluster_state(endpoint, coordinator, FINAL_STATE_TIMEOUT_S)
    except (TimeoutError, OSError):
        return None
    print(f"\n{FINAL_STATE_HEADER}")
    print(render_table(state), flush=True)
    return placements_in(state)


async def wait_for_drain(
    tasks: set[asyncio.Task[None]], stop: asyncio.Event, timeout: float
) -> None:
    """Wait until `tasks` finish, `stop` is set or `timeout` passes, whichever comes first."""

    async def all_done() -> None:
        await asyncio.gather(*tasks, return_exceptions=True)

    everything = asyncio.create_task(all_done())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({everything, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    everything.cancel()


async def run(args: argparse.Namespace) -> RunReport:
    models, arrivals = make_workload(options_from_args(args, args.duration))
    env = {
        "REPORT_INTERVAL": str(args.report_interval),
        "WORKER_TIMEOUT": str(args.worker_timeout),
        "LOG_LEVEL": "DEBUG" if args.verbose else "INFO",
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    services: list[ServiceProcess] = []
    endpoint: Endpoint | None = None
    sampler: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        print(
            f"starting coordinator ({args.policy}) and {args.workers} workers on 127.0.0.1; "
            f"{len(arrivals)} requests over {args.duration:g}s for {len(models)} models",
            flush=True,
        )
        coordinator = await ServiceProcess.start(
            "coordinator",
            [
                "coordinator",
                "--host",
                "127.0.0.1",
                "--port",
                str(args.coordinator_port),
                "--policy",
                args.policy,
                "--seed",
                str(args.seed),
            ],
            env,
            echo=args.verbose,
        )
        services.append(coordinator)
        address = ("127.0.0.1", coordinator.port)
        starts = [
            ServiceProcess.start(
                f"worker-{i}",
                [
                    "worker",
                    "--node-id",
                    f"worker-{i}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(args.base_worker_port + i if args.base_worker_port else 0),
                    "--coordinator-host",
                    "127.0.0.1",
                    "--coordinator-port",
                    str(coordinator.port),
                ],
                env,
                echo=args.verbose,
            )
            for i in range(args.workers)
        ]
        for started in await asyncio.gather(*starts, return_exceptions=True):
            if isinstance(started, BaseException):
                raise started
            services.append(started)
        endpoint = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        driver = Driver(endpoint, address)
        driver.active_workers = await wait_for_workers(endpoint, address, args.workers)
        print(f"coordinator sees {driver.active_workers} workers; replaying workload", flush=True)
        sampler = asyncio.create_task(driver.sample_forever(args.status_interval))
        watcher = asyncio.create_task(driver.watch_forever())
        await driver.replay(arrivals, stop)
        if driver.in_flight and not stop.is_set():
            await wait_for_drain(driver.in_flight, stop, args.drain)
        for task in list(driver.in_flight):
            task.cancel()
        await asyncio.gather(*driver.in_flight, return_exceptions=True)
        sampler.cancel()  # so that no periodic block prints inside the final one
        placements = await print_final_state(endpoint, address)
        return build_report(
            driver.outcomes,
            driver.samples,
            driver.active_workers,
            {
                "mode": "centralized",
                "policy": args.policy,
                "seed": args.seed,
                "duration_s": args.duration,
                "interrupted": stop.is_set(),
                "missed_state_samples": driver.missed_samples,
            },
            retried=driver.outstanding.retried,
            placements=placements,
        )
    finally:
        tasks = [task for task in (sampler, watcher) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if endpoint is not None:
            endpoint.close()
        await asyncio.gather(*(service.stop() for service in services))
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = []
    if args.workers < 1:
        problems.append("--workers must be >= 1")
    if args.duration <= 0:
        problems.append("--duration must be > 0")
    if args.rate <= 0:
        problems.append("--rate must be > 0")
    if args.status_interval <= 0:
        problems.append("--status-interval must be > 0")
    if problems:
        print("centralized_simulation.py: " + "; ".join(problems), file=sys.stderr)
        return 2
    return run_and_report("centralized_simulation.py", lambda: run(args), args.json)

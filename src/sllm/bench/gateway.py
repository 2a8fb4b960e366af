"""`sllm bench gateway`: what the front door adds to a request, and 1,000 streams through it.

**Overhead.** A coordinator (with the front door) and one worker run as child processes on
127.0.0.1, the worker's sim engine at zero service time (a COST_MODEL file setting every
load, prefill and decode time to 0). The same load generator, in this process, sends
streaming completions (``max_tokens`` `TOKENS`) at 1, 64 and 512 in flight: to the
worker's own HTTP endpoint (the baseline: what a client calling the worker would see),
and to the front door, which places each request and proxies the stream from that same
worker. The two paths alternate over `ROUNDS` rounds per level (direct first, then the
front door first, ...), so that a slow spell of a noisy machine falls on both alike, and
each path's latencies are pooled over its rounds (each round's p50 is listed too). A
request's latency is from sending it to reading ``data: [DONE]``; the front door's cost is
the difference of the two pooled distributions' p50 and p99, and their ratio, and the
median over rounds of the difference of the two paths' p50 within a round (the two ran
back to back, so drift between rounds cancels out). The target is judged on that paired
median: pooled p50s still carry the drift, tens of ms at 64 in flight here. Requests
per second and errors are counted per path, and so is the CPU time the coordinator and the
worker spent per request (from ``/proc/<pid>/stat``): unlike latency, it does not depend
on who else wants the cores.

**Cores.** By default the three processes share the machine's cores as the scheduler
likes. On a small machine a closed loop then turns any CPU the front door spends into
queueing, behind the worker and the load generator too. ``--own-core`` measures a second
time with the front door alone on one core and the worker and load generator on another
(as when the coordinator has a host of its own), and reports both, labelled.

**1,000 streams.** A fresh coordinator and a worker whose sim engine takes 0.1 s a token
(so every stream stays open about 2 s) get 1,000 streaming requests at once through the
front door. It checks that none fails, that about 1,000 client connections were open on
the coordinator at the peak, and that afterwards none is left: the coordinator's sockets
are counted from ``/proc/<pid>/fd`` and ``/proc/<pid>/net/tcp``, by peer (clients, or
workers, whose idle kept-alive connections are bounded by the front door's pool).

The load generator is one asyncio loop speaking HTTP/1.1 with `h11` over kept-alive
connections, one per request in flight; it takes its share of the CPU on both paths
alike. Linux only (``/proc``, and ``sched_setaffinity`` for ``--own-core``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sllm.experiments.launcher import child_environment

T = TypeVar("T")

CONCURRENCY = (1, 64, 512)
# Requests per in-flight slot at each concurrency (after a warm-up of 2 per slot).
REQUESTS_PER_SLOT = {1: 400, 64: 30, 512: 6}
# Each level alternates the two paths over this many rounds (`_overhead_row`).
ROUNDS = 6
TOKENS = 8  # streamed chunks per request, plus the final one and [DONE]
STREAMS = 1_000
STREAM_TOKENS = 20
STREAM_STEP_S = 0.1
MODEL = "llama-3.2-1b"
TARGET_P50_ADDED_MS = 2.0  # at 64 in flight (the target)
START_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 10.0

# Every time in the cost model at 0, bandwidths so high that a load takes no time.
ZERO_COST = {
    "engine_start_s": 0,
    "prefill_floor_s": 0,
    "prefill_s_per_token_bparam": 0,
    "decode_overhead_s": 0,
    "decode_batch_slope": 0,
    "hbm_bandwidth_Bps": 1e18,
    "host_bandwidth_Bps": 1e18,
    "disk_bandwidth_Bps": 1e18,
    "remote_bandwidth_Bps": 1e18,
}
SLOW_DECODE = {**ZERO_COST, "decode_overhead_s": STREAM_STEP_S}


# -- the services ----------------------------------------------------------------------------


@dataclass
class Service:
    """A child `sllm` process logging JSON to a file (not a pipe the benchmark must read)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    def port(self, event: str) -> int:
        return int(self.events(event)[0]["port"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(name: str, args: list[str], env: dict[str, str], folder: Path) -> Service:
    log = folder / f"{name}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "sllm", *args],
            env=child_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(name, process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not service.events("listening"):
        if process.poll() is not None or time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return service


@dataclass
class Cluster:
    coordinator: Service
    worker: Service

    @property
    def front_door(self) -> str:
        return f"http://127.0.0.1:{self.coordinator.port('http_listening')}"

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.worker.port('http_listening')}"


@contextlib.contextmanager
def cluster(cost: dict[str, float], folder: Path) -> Iterator[Cluster]:
    """A coordinator and one worker with the cost model `cost`; stopped on exit."""
    cost_file = folder / f"cost-{len(list(folder.iterdir()))}.json"
    cost_file.write_text(json.dumps(cost), encoding="utf-8")
    env = {
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "BIND_HOST": "127.0.0.1",
        "COORDINATOR_HOST": "127.0.0.1",
        "REPORT_INTERVAL": "0.2",
        "WORKER_TIMEOUT": "10",
        "CLUSTER_SECRET": "",
        "API_KEYS": "",
        "MODEL_CATALOG": "",
        "PLACEMENT_POLICY": "least-loaded",
        "PRESTAGE_TIER": "host",
        "KEEP_ALIVE": "3600",
        "WORKER_SLOTS": "2048",
        "QUEUE_CAPACITY": "4096",
        "COST_MODEL": str(cost_file),
    }
    tag = cost_file.stem
    coordinator = start(
        f"coordinator-{tag}", ["coordinator", "--port", "0", "--http-port", "0"], env, folder
    )
    services = [coordinator]
    try:
        args = ["worker", "--node-id", "w1", "--port", "0", "--http-port", "0"]
        args += ["--coordinator-port", str(coordinator.port("listening"))]
        worker = start(f"worker-{tag}", args, env, folder)
        services.append(worker)
        running = Cluster(coordinator, worker)
        _wait_ready(running.front_door)
        yield running
    finally:
        for service in reversed(services):
            service.stop()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        # Refused, or 503 (urllib's HTTPError, an OSError) until ready.
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/readyz", timeout=1) as response,
        ):
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become ready")
        time.sleep(0.05)


# -- sockets of a process, by peer -------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time `pid` has used (all its threads), from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of `pid` on `cpus` (affinity is per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)


def sockets(pid: int, served_port: int, worker_port: int) -> dict[str, int]:
    """The TCP sockets `pid` holds: from clients of `served_port`, to `worker_port`, others."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    counts = {"clients": 0, "workers": 0, "listening": 0, "other": 0}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if fields[9] not in inodes:
                    continue
                local = int(fields[1].rsplit(":", 1)[1], 16)
                remote = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[3] == "0A":
                    counts["listening"] += 1
                elif local == served_port:
                    counts["clients"] += 1
                elif remote == worker_port:
                    counts["workers"] += 1
                else:
                    counts["other"] += 1
    return counts


# -- the load generator --------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies_s: list[float]
    first_event_s: list[float]
    errors: int
    wall_s: float


# -- the results (their JSON keys are docs/benchmarks.md's) ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadFigures:
    """One load's requests, errors and latencies (milliseconds) and throughput."""

    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    first_event_p50_ms: float
    requests_per_s: float

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "first_event_p50_ms": self.first_event_p50_ms,
            "requests_per_s": self.requests_per_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PathFigures:
    """One path (direct, or through the front door) at one level, pooled over its rounds."""

    load: LoadFigures
    round_p50_ms: list[float]
    front_door_cpu_ms_per_request: float
    worker_cpu_ms_per_request: float

    def as_dict(self) -> dict[str, object]:
        return {
            **self.load.as_dict(),
            "round_p50_ms": self.round_p50_ms,
            "front_door_cpu_ms_per_request": self.front_door_cpu_ms_per_request,
            "worker_cpu_ms_per_request": self.worker_cpu_ms_per_request,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OverheadRow:
    """Both paths at one level, and what the front door added."""

    concurrency: int
    rounds: int
    direct: PathFigures
    gateway: PathFigures
    added_p50_ms: float
    added_p50_paired_ms: float  # the median over rounds of the paths' difference
    added_p99_ms: float
    p50_ratio: float

    def as_dict(self) -> dict[str, object]:
        return {
            "concurrency": self.concurrency,
            "rounds": self.rounds,
            "direct": self.direct.as_dict(),
            "gateway": self.gateway.as_dict(),
            "added_p50_ms": self.added_p50_ms,
            "added_p50_paired_ms": self.added_p50_paired_ms,
            "added_p99_ms": self.added_p99_ms,
            "p50_ratio": self.p50_ratio,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsFigures:
    """The streams at once through the front door, and the sockets left after them."""

    streams: int
    load: LoadFigures
    peak_client_connections: int
    sockets_before: dict[str, int]
    sockets_after: dict[str, int]
    worker_connections_bound: int
    worker_idle_after: bool

    @property
    def leaked_client_connections(self) -> int:
        return self.sockets_after["clients"]

    @property
    def ok(self) -> bool:
        return (
            self.load.errors == 0
            and self.leaked_client_connections == 0
            and self.sockets_after["workers"] <= self.worker_connections_bound
            and self.worker_idle_after
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "streams": self.streams,
            "tokens_per_stream": STREAM_TOKENS,
            "seconds_per_token": STREAM_STEP_S,
            **self.load.as_dict(),
            "peak_client_connections": self.peak_client_connections,
            "sockets_before": self.sockets_before,
            "sockets_after": self.sockets_after,
            "leaked_client_connections": self.leaked_client_connections,
            "worker_connections_kept_alive": self.sockets_after["workers"],
            "worker_connections_bound": self.worker_connections_bound,
            "worker_idle_after": self.worker_idle_after,
            "ok": self.ok,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayResult:
    """The whole benchmark: overhead (cores shared, and maybe the front door on its own
    core) and the streams."""

    overhead: list[OverheadRow]
    overhead_front_door_own_core: list[OverheadRow] | None  # measured with --own-core
    streams: StreamsFigures | None  # None with --streams 0
    cpus: int | None
    python: str
    http_parser: str

    @property
    def target_met(self) -> bool | None:
        return _target_met(self.overhead)

    @property
    def target_met_front_door_own_core(self) -> bool | None:
        own = self.overhead_front_door_own_core
        return None if own is None else _target_met(own)

    def as_dict(self) -> dict[str, object]:
        document: dict[str, object] = {
            "benchmark": "gateway",
            "tokens": TOKENS,
            "overhead": [row.as_dict() for row in self.overhead],
        }
        own = self.overhead_front_door_own_core
        if own is not None:
            document["overhead_front_door_own_core"] = [row.as_dict() for row in own]
        document["streams"] = None if self.streams is None else self.streams.as_dict()
        document["target_p50_added_ms_at_64"] = TARGET_P50_ADDED_MS
        document["target_met"] = self.target_met
        if own is not None:
            document["target_met_front_door_own_core"] = self.target_met_front_door_own_core
        document["machine"] = {
            "cpus": self.cpus,
            "python": self.python,
            "http_parser": self.http_parser,
        }
        return document


class _Connection:
    """One kept-alive HTTP/1.1 connection of the load generator: `h11` over asyncio streams.

    Lighter than a full client (`httpx` spent more CPU per request than the servers
    measured here), so that on a small machine the load generator takes less of the CPU
    the two paths share.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.state: Any = None

    async def post(self, path: str, body: bytes) -> tuple[int, float, bytes]:
        """(status, seconds to the first body bytes, the whole body) of one POST."""
        import h11

        if self.streams is None or self.state.our_state is not h11.IDLE:
            await self.close()
            self.streams = await asyncio.open_connection(self.host, self.port)
            self.state = h11.Connection(h11.CLIENT)
        reader, writer = self.streams
        began = time.perf_counter()
        headers = [
            ("host", f"{self.host}:{self.port}"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ]
        request = h11.Request(method="POST", target=path, headers=headers)
        writer.write(
            self.state.send(request)
            + self.state.send(h11.Data(data=body))
            + self.state.send(h11.EndOfMessage())
        )
        status, first, received = 0, 0.0, bytearray()
        while True:
            event = self.state.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                self.state.receive_data(data)
                if not data and self.state.their_state is not h11.DONE:
                    raise ConnectionError("the server closed the connection")
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                if not first:
                    first = time.perf_counter() - began
                received += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.state.start_next_cycle()
                return status, first, bytes(received)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            with contextlib.suppress(OSError):
                await self.streams[1].wait_closed()
            self.streams = None


async def _one(connection: _Connection, path: str, body: bytes) -> tuple[float, float] | None:
    """(first event, whole stream) seconds of one streamed request; None for any failure."""
    began = time.perf_counter()
    try:
        status, first, received = await connection.post(path, body)
    except (OSError, ConnectionError, ValueError):
        await connection.close()
        return None
    if status != 200 or b'{"error"' in received or not received.endswith(b"data: [DONE]\n\n"):
        return None
    return first, time.perf_counter() - began


async def load(
    url: str,
    concurrency: int,
    requests: int,
    tokens: int,
    warm_up: int,
    measuring: Callable[[], None] = lambda: None,
) -> Outcome:
    """`requests` streamed completions, `concurrency` at a time, after `warm_up` unmeasured.

    `measuring` is called when the measured requests begin.
    """
    address, _, path = url.removeprefix("http://").partition("/")
    host, _, port = address.partition(":")
    path = "/" + path
    body = json.dumps(
        {"model": MODEL, "prompt": "hello", "max_tokens": tokens, "stream": True}
    ).encode()
    connections = [_Connection(host, int(port)) for _ in range(concurrency)]

    async def batch(total: int) -> Outcome:
        left = total
        outcome = Outcome([], [], 0, 0.0)

        async def slot(connection: _Connection) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                result = await _one(connection, path, body)
                if result is None:
                    outcome.errors += 1
                else:
                    outcome.first_event_s.append(result[0])
                    outcome.latencies_s.append(result[1])

        began = time.perf_counter()
        await asyncio.gather(*(slot(connection) for connection in connections))
        outcome.wall_s = time.perf_counter() - began
        return outcome

    try:
        if warm_up:
            await batch(warm_up)  # connections opened, the model loaded, caches warm
        measuring()
        return await batch(requests)
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))


def _quantiles(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds; NaN for no values."""
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def _summary(outcome: Outcome) -> LoadFigures:
    p50, p99 = _quantiles(outcome.latencies_s)
    first50, _ = _quantiles(outcome.first_event_s)
    done = len(outcome.latencies_s)
    return LoadFigures(
        requests=done + outcome.errors,
        errors=outcome.errors,
        p50_ms=round(p50, 3),
        p99_ms=round(p99, 3),
        first_event_p50_ms=round(first50, 3),
        requests_per_s=round(done / outcome.wall_s, 1) if outcome.wall_s else 0.0,
    )


def measure_overhead(
    folder: Path,
    levels: Sequence[int],
    per_slot: dict[int, int],
    say: Any,
    own_core: bool = False,
) -> list[OverheadRow]:
    """The overhead rows; with `own_core`, the front door alone on a core of its own."""
    mine = os.sched_getaffinity(0)
    with cluster(ZERO_COST, folder) as running:
        if own_core:
            first, second = sorted(mine)[:2]
            pin(running.coordinator.process.pid, {second})
            pin(running.worker.process.pid, {first})
            os.sched_setaffinity(0, {first})
        try:
            return [_overhead_row(running, concurrency, per_slot, say) for concurrency in levels]
        finally:
            os.sched_setaffinity(0, mine)


def _overhead_row(
    running: Cluster, concurrency: int, per_slot: dict[int, int], say: Any
) -> OverheadRow:
    """Both paths, in `ROUNDS` alternating rounds (direct first, then the front door
    first, ...), so that a slow spell of the machine falls on both alike; each path's
    latencies are pooled over its rounds."""
    slots = per_slot.get(concurrency, 10)
    rounds = max(1, min(ROUNDS, slots))
    requests = max(1, concurrency * slots // rounds)  # per round
    processes = {
        "front_door": running.coordinator.process.pid,
        "worker": running.worker.process.pid,
    }
    urls = {"direct": running.worker_url, "gateway": running.front_door}
    pooled = {path: Outcome([], [], 0, 0.0) for path in urls}
    cpu = {path: dict.fromkeys(processes, 0.0) for path in urls}
    round_p50_ms: dict[str, list[float]] = {path: [] for path in urls}
    for number in range(rounds):
        order = list(urls) if number % 2 == 0 else list(reversed(urls))
        for path in order:
            before: dict[str, float] = {}
            snapshot = functools.partial(_cpu_snapshot, processes, before)
            url = urls[path] + "/v1/completions"
            # Every round opens its connections afresh; the first per path also warms up.
            warm_up = 2 * concurrency if number < 2 else concurrency
            outcome = asyncio.run(load(url, concurrency, requests, TOKENS, warm_up, snapshot))
            for name, pid in processes.items():
                cpu[path][name] += cpu_seconds(pid) - before[name]
            total = pooled[path]
            total.latencies_s.extend(outcome.latencies_s)
            total.first_event_s.extend(outcome.first_event_s)
            total.errors += outcome.errors
            total.wall_s += outcome.wall_s
            round_p50_ms[path].append(round(_quantiles(outcome.latencies_s)[0], 3))
    paths: dict[str, PathFigures] = {}
    for path, outcome in pooled.items():
        done = max(1, len(outcome.latencies_s))

        def per_request(name: str, path: str = path, done: int = done) -> float:
            return round(cpu[path][name] / done * 1e3, 3)

        paths[path] = PathFigures(
            load=_summary(outcome),
            round_p50_ms=round_p50_ms[path],
            front_door_cpu_ms_per_request=per_request("front_door"),
            worker_cpu_ms_per_request=per_request("worker"),
        )
    direct, gateway = paths["direct"].load, paths["gateway"].load
    # Each round's two paths ran back to back: their difference is free of the drift
    # between rounds, which on a small machine spreads one path's p50s by tens of ms.
    paired = [
        front - alone
        for front, alone in zip(round_p50_ms["gateway"], round_p50_ms["direct"], strict=True)
    ]
    row = OverheadRow(
        concurrency=concurrency,
        rounds=rounds,
        direct=paths["direct"],
        gateway=paths["gateway"],
        added_p50_ms=round(gateway.p50_ms - direct.p50_ms, 3),
        added_p50_paired_ms=round(statistics.median(paired), 3),
        added_p99_ms=round(gateway.p99_ms - direct.p99_ms, 3),
        p50_ratio=round(gateway.p50_ms / direct.p50_ms, 2),
    )
    say(
        f"{concurrency:>4} in flight: direct p50 {direct.p50_ms:.2f} ms "
        f"p99 {direct.p99_ms:.2f} ms {direct.requests_per_s:.0f}/s "
        f"({direct.errors} errors); front door p50 {gateway.p50_ms:.2f} ms "
        f"p99 {gateway.p99_ms:.2f} ms {gateway.requests_per_s:.0f}/s "
        f"({gateway.errors} errors); added p50 {row.added_p50_ms:+.2f} ms "
        f"(median of rounds {row.added_p50_paired_ms:+.2f} ms) "
        f"p99 {row.added_p99_ms:+.2f} ms ({row.p50_ratio}x); CPU per request: "
        f"front door {row.gateway.front_door_cpu_ms_per_request:.2f} ms, worker "
        f"{row.gateway.worker_cpu_ms_per_request:.2f} ms (direct: "
        f"{row.direct.worker_cpu_ms_per_request:.2f} ms)"
    )
    return row


async def _streams_with_peak(
    url: str, pid: int, ports: tuple[int, int], streams: int
) -> tuple[Outcome, int]:
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, sockets(pid, *ports)["clients"])
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        outcome = await load(url, streams, streams, STREAM_TOKENS, 0)
    finally:
        sampling = False
        await sampler
    return outcome, peak


def measure_streams(folder: Path, streams: int, say: Any) -> StreamsFigures:
    from sllm.api.worker_client import MAX_KEEPALIVE_CONNECTIONS

    with cluster(SLOW_DECODE, folder) as running:
        pid = running.coordinator.process.pid
        ports = (running.coordinator.port("http_listening"), running.worker.port("http_listening"))

        def coordinator_sockets() -> dict[str, int]:
            return sockets(pid, *ports)

        def no_clients(counts: dict[str, int]) -> bool:
            return counts["clients"] == 0

        # The readiness probes' connections close just after their answers; let them.
        before = _settled(coordinator_sockets, no_clients)
        outcome, peak = asyncio.run(
            _streams_with_peak(running.front_door + "/v1/completions", pid, ports, streams)
        )
        # The load generator has closed its connections; the coordinator must close its ends.
        after = _settled(coordinator_sockets, no_clients)
        # The worker ends a request just after its last event is sent; give it that moment.
        running_after = _settled(lambda: _worker_running(running.worker_url), lambda n: n == 0)
    result = StreamsFigures(
        streams=streams,
        load=_summary(outcome),
        peak_client_connections=peak,
        sockets_before=before,
        sockets_after=after,
        worker_connections_bound=MAX_KEEPALIVE_CONNECTIONS,
        worker_idle_after=running_after == 0,
    )
    say(
        f"{streams} streams at once: {result.load.errors} errors, peak {peak} client "
        f"connections, p50 {result.load.p50_ms:.0f} ms p99 {result.load.p99_ms:.0f} ms; "
        f"after: {result.leaked_client_connections} client connections left, "
        f"{after['workers']} kept-alive to the worker (bound {MAX_KEEPALIVE_CONNECTIONS}), "
        f"worker idle: {result.worker_idle_after}"
    )
    return result


def _settled(read: Callable[[], T], settled: Callable[[T], bool]) -> T:
    """`read()` until `settled` holds of its value or SETTLE_TIMEOUT_S passes; the last value."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    value = read()
    while not settled(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def _worker_running(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("sllm_worker_running_requests "):
            return float(line.split()[1])
    return -1.0


def run(
    levels: Sequence[int],
    per_slot: dict[int, int],
    streams: int,
    quiet: bool,
    own_core: bool = False,
) -> GatewayResult:
    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="sllm-bench-gateway-") as tmp:
        folder = Path(tmp)
        say(f"gateway overhead: {TOKENS}-token streams, sim engine at zero service time")
        say("cores shared by the load generator, the front door and the worker:")
        overhead = measure_overhead(folder, levels, per_slot, say)
        own: list[OverheadRow] | None = None
        if own_core:
            say("the front door on a core of its own, the worker and load generator on another:")
            own = measure_overhead(folder, levels, per_slot, say, own_core=True)
        streamed = measure_streams(folder, streams, say) if streams else None
    from sllm.runtime.http import HTTP_PARSER  # the serve extra, which the run needed

    return GatewayResult(
        overhead=overhead,
        overhead_front_door_own_core=own,
        streams=streamed,
        cpus=os.cpu_count(),
        python=sys.version.split()[0],
        http_parser=HTTP_PARSER,
    )


def _cpu_snapshot(processes: dict[str, int], into: dict[str, float]) -> None:
    into.update((name, cpu_seconds(pid)) for name, pid in processes.items())


def _target_met(rows: list[OverheadRow]) -> bool | None:
    at_target = next((row for row in rows if row.concurrency == 64), None)
    if at_target is None:
        return None
    return at_target.added_p50_paired_ms <= TARGET_P50_ADDED_MS


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "gateway",
        help="front-door overhead against calling a worker directly; 1,000 streams",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(CONCURRENCY),
        help="requests in flight, comma-separated (default 1,64,512)",
    )
    parser.add_argument(
        "--requests-per-slot",
        type=int,
        default=None,
        help="measured requests per in-flight slot (default: 400 at 1, 30 at 64, 6 at 512)",
    )
    parser.add_argument(
        "--streams", type=int, default=STREAMS, help="concurrent streams to hold (0: skip)"
    )
    parser.add_argument(
        "--own-core",
        action="store_true",
        help="measure the overhead a second time with the front door on a core of its own",
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    per_slot = (
        dict.fromkeys(args.concurrency, args.requests_per_slot)
        if args.requests_per_slot
        else REQUESTS_PER_SLOT
    )
    if args.own_core and len(os.sched_getaffinity(0)) < 2:
        print("--own-core needs two cores", file=sys.stderr)
        return 2
    result = run(args.concurrency, per_slot, args.streams, args.json, args.own_core)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for met, mode in (
            (result.target_met, "cores shared"),
            (result.target_met_front_door_own_core, "front door on its own core"),
        ):
            if met is not None:
                print(
                    f"target ({mode}): added p50 at 64 in flight <= {TARGET_P50_ADDED_MS} ms: "
                    f"{'met' if met else 'NOT met'}"
                )
    streams = result.streams
    failed = streams is not None and not streams.ok
    return 1 if failed else 0

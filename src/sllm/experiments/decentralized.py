"""`decentralized_simulation.py`: a real decentralized cluster on loopback, under a workload.

It starts N nodes as separate processes (real UDP, real clock, the sim engine for service
times); node 0 is every other node's seed. Once every node's membership holds all N alive,
it replays the workload exactly as `centralized_simulation.py` does (the same `Driver`),
except that each request asks a random live node where to run. Every 10 s
(``--status-interval``) and once more at the end it prints the cluster state, read from
every node at once (`ClusterState`: each node counts only its own decisions, so the
totals are the nodes' counters summed); then the same report, with the same JSON keys,
plus a ``gossip`` section.

``--kill K`` kills K random nodes (SIGKILL: no goodbye) halfway through the arrivals and
measures recovery: the time until every live node's membership has dropped every killed
node (marked dead), against the stated detection bound (`GossipConfig.detection_bound`).
The load generator holds every request until its answer (`Driver`): it asks a random
live node's membership every `WATCH_PERIOD_S`, and when a node it sent requests to is
declared dead, it places again those that had not started there and fails those that
had (``worker_lost``). The report counts both (``retried``, ``failures``), and ``lost``
(requests that got no answer) must be 0.

Client-side timings are as in the centralized script: time to first token = the
scheduling round trip + the worker's own time to first token. The report's state samples
(per-worker queue depth and utilization) come from a random live node's view, so they
are as fresh as that node's gossip (about one report interval plus a few gossip rounds);
the status block shows each node's load as the node itself reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sllm.core.measures import COLD_PLACEMENTS, WARM_PLACEMENT_RATE, Placements
from sllm.core.membership import GossipConfig
from sllm.core.node import PROBING_CANDIDATES_DEFAULT
from sllm.experiments.centralized import FINAL_STATE_HEADER, Driver, Liveness, wait_for_drain
from sllm.experiments.launcher import ServiceProcess
from sllm.experiments.report import run_and_report
from sllm.runtime.client import (
    columns,
    get_cluster_state,
    get_members,
    models_by_tier,
    placements_in,
)
from sllm.runtime.udp import Address, Endpoint
from sllm.sim.report import RunReport, build_report, worker_order
from sllm.wire import Codec
from sllm.workload.options import (
    add_policy_argument,
    add_run_arguments,
    add_workload_arguments,
    make_workload,
    options_from_args,
)

JOIN_TIMEOUT_S = 30.0
POLL_S = 0.2
# Protocol period and timeouts on loopback: five times memberlist's LAN profile, so a
# killed node is detected within seconds and a run stays short.
DEFAULT_PROBE_INTERVAL_S = 0.2
DEFAULT_PROBE_TIMEOUT_S = 0.1
DEFAULT_GOSSIP_INTERVAL_S = 0.1
DEFAULT_SYNC_INTERVAL_S = 2.0
# How long a status block or the final summary waits for the nodes, all asked at once: a
# node's whole state is a few loopback pages (milliseconds), so one that has not answered
# by then is dead or stuck, and delays the printout by no more than this.
NODE_DEADLINE_S = 1.0

Answer = TypeVar("Answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decentralized_simulation.py",
        description="Run N decentralized nodes on 127.0.0.1 (separate processes, real UDP, "
        "gossip membership, sim engine) under a workload, each request sent to a random "
        "node, and report latency, warm starts and placements, balance and failure recovery.",
    )
    parser.add_argument("--nodes", type=int, default=5, help="number of nodes (default 5)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of arrivals (default 30)"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=7001,
        help="node i listens on this + i (default 7001; 0 = any free port)",
    )
    add_policy_argument(parser, help="placement policy on every node (default startup-aware)")
    parser.add_argument(
        "--kill", type=int, default=0, metavar="K", help="kill K random nodes halfway (default 0)"
    )
    parser.add_argument(
        "--probing",
        type=int,
        default=PROBING_CANDIDATES_DEFAULT,
        metavar="D",
        help="Sparrow-style probing of D candidates per decision, placing among them "
        f"(default {PROBING_CANDIDATES_DEFAULT}; 0: off)",
    )
    add_run_arguments(parser)
    parser.add_argument("--report-interval", type=float, default=1.0, help="load report period")
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=DEFAULT_PROBE_INTERVAL_S,
        help=f"SWIM protocol period, s (default {DEFAULT_PROBE_INTERVAL_S})",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="echo the nodes' logs")
    add_workload_arguments(parser)
    return parser


def gossip_config(args: argparse.Namespace) -> GossipConfig:
    interval = args.probe_interval
    return GossipConfig(
        probe_interval_s=interval,
        probe_timeout_s=interval * DEFAULT_PROBE_TIMEOUT_S / DEFAULT_PROBE_INTERVAL_S,
        gossip_interval_s=min(DEFAULT_GOSSIP_INTERVAL_S, interval),
        sync_interval_s=DEFAULT_SYNC_INTERVAL_S,
    )


def node_arguments(
    name: str, port: int, seeds: Sequence[Address], args: argparse.Namespace, host: str
) -> list[str]:
    """The `sllm node` command line of one node of the experiment."""
    gossip = gossip_config(args)
    return [
        "node",
        "--node-id",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--seed-nodes",
        ",".join(f"{h}:{p}" for h, p in seeds),
        "--policy",
        args.policy,
        "--probe-interval",
        str(gossip.probe_interval_s),
        "--probe-timeout",
        str(gossip.probe_timeout_s),
        "--gossip-interval",
        str(gossip.gossip_interval_s),
        "--sync-interval",
        str(gossip.sync_interval_s),
        "--probing",
        str(args.probing),
        "--seed",
        str(args.seed),
    ]


async def member_states(
    endpoint: Endpoint, nodes: Sequence[Address], timeout: float = 0.5
) -> dict[Address, dict[str, str] | None]:
    """Each node's view of the membership, ``{member id: state}``; None if it did not answer."""

    async def one(node: Address) -> dict[str, str] | None:
        try:
            _, members = await get_members(endpoint, node, timeout)
        except (TimeoutError, OSError):
            return None
        states = ("alive", "suspect", "dead", "left")
        return {m.node_id: states[m.state] for m in members}

    answers = await asyncio.gather(*(one(node) for node in nodes))
    return dict(zip(nodes, answers, strict=True))


def views_agree(
    views: Mapping[Address, dict[str, str] | None], want: Mapping[str, str | None]
) -> bool:
    """Every node answered and sees each member of `want` in its state (None: gone, that
    is absent, dead or left)."""
    for view in views.values():
        if view is None:
            return False
        for member, state in want.items():
            seen = view.get(member)
            if state is None and seen not in (None, "dead", "left"):
                return False
            if state is not None and seen != state:
                return False
    return True


async def wait_for_views(
    endpoint: Endpoint,
    nodes: Sequence[Address],
    want: Mapping[str, str | None],
    timeout: float,
    poll_s: float = POLL_S,
) -> float | None:
    """Seconds until `views_agree` holds for every node in `nodes`; None on timeout."""
    start = time.monotonic()
    while True:
        if views_agree(await member_states(endpoint, nodes), want):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(poll_s)


def watch(argv: Sequence[str]) -> int:
    """``watch HOST:PORT,... JSON TIMEOUT``: `wait_for_views` as a command that prints the
    seconds it took (or ``null``), for checks run from another network namespace."""
    nodes = [(h, int(p)) for h, _, p in (item.rpartition(":") for item in argv[0].split(","))]
    want = json.loads(argv[1])

    async def run() -> float | None:
        endpoint = await Endpoint.bind(Codec(), "0.0.0.0", 0)
        try:
            return await wait_for_views(endpoint, nodes, want, float(argv[2]))
        finally:
            endpoint.close()

    elapsed = asyncio.run(run())
    print(json.dumps(elapsed))
    return 0 if elapsed is not None else 1


async def wait_for_convergence(
    endpoint: Endpoint, nodes: Sequence[Address], names: set[str], timeout: float
) -> float | None:
    """Seconds until every node holds exactly `names` as live; None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        views = await member_states(endpoint, nodes)
        if all(
            view is not None
            and {m for m, state in view.items() if state in ("alive", "suspect")} == names
            for view in views.values()
        ):
            return time.monotonic() - start
        await asyncio.sleep(POLL_S)
    return None


async def membership_liveness(endpoint: Endpoint, node: Address) -> Liveness | None:
    """Alive (alive or suspect) and lost (dead or left) members, as `node` sees them."""
    view = (await member_states(endpoint, [node]))[node]
    if view is None:
        return None
    alive = {member for member, state in view.items() if state in ("alive", "suspect")}
    lost = {member for member, state in view.items() if state in ("dead", "left")}
    return alive, lost


class Cluster:
    """The node processes of one run, and which of them are still alive."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceProcess] = {}
        self.addresses: dict[str, Address] = {}
        self.killed: set[str] = set()

    @property
    def live(self) -> list[str]:
        return [name for name in self.services if name not in self.killed]

    def live_addresses(self) -> list[Address]:
        return [self.addresses[name] for name in self.live]

    async def stop(self) -> None:
        await asyncio.gather(*(service.stop() for service in self.services.values()))

    async def ask_every_node(
        self, ask: Callable[[Address], Awaitable[Answer]], deadline_s: float = NODE_DEADLINE_S
    ) -> dict[str, Answer | None]:
        """Each node's answer to `ask`, all asked at once, so a dead node costs the
        deadline once, not once per node; None for a node killed, or silent or late past
        `deadline_s`."""

        async def one(name: str) -> Answer | None:
            if name in self.killed:
                return None
            try:
                return await asyncio.wait_for(ask(self.addresses[name]), deadline_s)
            except (TimeoutError, OSError):
                return None

        names = list(self.addresses)
        answers = await asyncio.gather(*(one(name) for name in names))
        return dict(zip(names, answers, strict=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterState:
    """Every node's state (the `status --json` shape) at one printout, and the nodes that
    gave none.

    Why not one node's: a node counts only the decisions it made itself, so one node's
    requests are a fifth of a five-node cluster's, and a random node's counters go down
    from one printout to the next. The totals here are the nodes' counters summed: they
    only grow while every node answers, and a node that does not is named in `missing`,
    its counts left out. Load is taken from each node's row in its own view (its own
    report, the freshest there is); how many workers each view holds is a per-node
    figure, shown as its spread across the nodes.
    """

    states: Mapping[str, Mapping[str, Any]]  # node -> its state, for the nodes that answered
    missing: Mapping[str, str]  # node -> why its counts are left out

    @classmethod
    def of(
        cls, answers: Mapping[str, Mapping[str, Any] | None], killed: Collection[str]
    ) -> ClusterState:
        """From `Cluster.ask_every_node`'s answers: None is a killed node or a silent one."""
        ordered = sorted(answers, key=worker_order)
        return cls(
            states={name: state for name in ordered if (state := answers[name]) is not None},
            missing={
                name: "killed" if name in killed else "no answer"
                for name in ordered
                if answers[name] is None
            },
        )

    @property
    def nodes(self) -> int:
        return len(self.states) + len(self.missing)

    @property
    def requests(self) -> int:
        return sum(state["total_requests"] for state in self.states.values())

    @property
    def placements(self) -> Placements:
        return sum((placements_in(state) for state in self.states.values()), Placements())

    @property
    def rejected(self) -> int:
        return sum(state["rejected"] for state in self.states.values())

    def own_row(self, node: str) -> Mapping[str, Any] | None:
        """`node`'s row in its own view; None before its first report, or when a page of
        its listing went unanswered."""
        return next((row for row in self.states[node]["workers"] if row["id"] == node), None)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Lowest, median and highest of a per-node figure; zeros when there is none."""
    if not values:
        return 0.0, 0.0, 0.0
    return min(values), statistics.median(values), max(values)


# (header, right-aligned), as `sllm.runtime.client.WORKER_COLUMNS`: the node's own load
# (AGE: of its own report), the decisions it made, and how many workers its view holds.
NODE_COLUMNS = (
    ("NODE", False),
    ("READY", False),
    ("QUEUE", True),
    ("RUN", True),
    ("BUSY", True),
    ("AGE", True),
    ("REQUESTS", True),
    ("WARM", True),
    ("COLD", True),
    ("REJECTED", True),
    ("SEES", True),
    ("MODELS", False),
)


def render_cluster_state(cluster: ClusterState) -> str:
    """The status block, in the lines of `sllm.runtime.client.render_table`: the totals,
    the load, the views, who is left out, then one line per node that answered."""
    answered = f"{len(cluster.states)}/{cluster.nodes} nodes answered"
    lines = [answered]
    if cluster.states:
        states = cluster.states.values()
        placements = cluster.placements
        own = [row for row in map(cluster.own_row, cluster.states) if row is not None]
        depths = [row["queue_depth"] for row in own]
        busy = [row["gpu_utilization"] for row in own]
        low, median, high = spread([state["active_workers"] for state in states])
        lines = [
            f"policy {next(iter(states))['policy']}  "
            f"up {max(state['uptime_s'] for state in states):.0f}s  {answered}  "
            f"requests {cluster.requests}  {WARM_PLACEMENT_RATE} {placements.rate:.1%}  "
            f"{COLD_PLACEMENTS} {placements.cold}  rejected {cluster.rejected}",
            f"load as each node reports it: queue depth mean "
            f"{statistics.fmean(depths) if depths else 0.0:.2f} max {max(depths, default=0)}  "
            f"gpu utilization mean {statistics.fmean(busy) if busy else 0.0:.1%}",
            f"active workers in each node's view: min {low:g}  median {median:g}  max {high:g}",
        ]
    if cluster.missing:
        lines.append(
            "left out of the totals: "
            + ", ".join(f"{name} ({why})" for name, why in cluster.missing.items())
        )
    rows = [node_row(cluster, name) for name in cluster.states]
    if rows:
        lines += columns(NODE_COLUMNS, rows)
    return "\n".join(lines)


def node_row(cluster: ClusterState, node: str) -> list[str]:
    """One line of the `NODE_COLUMNS` table; ``-`` for the load of a node missing from
    its own view."""
    state, row = cluster.states[node], cluster.own_row(node)
    load = (
        ["-"] * 5
        if row is None
        else [
            "yes" if row["ready"] else "no",
            str(row["queue_depth"]),
            str(row["running"]),
            f"{row['gpu_utilization']:.0%}",
            f"{row['last_report_age_s']:.1f}s",
        ]
    )
    decisions = [
        str(state[key])
        for key in ("total_requests", "warm_placements", "cold_placements", "rejected")
    ]
    models = "-" if row is None else models_by_tier(row["models"])
    return [node, *load, *decisions, str(state["active_workers"]), models]


async def read_cluster_state(endpoint: Endpoint, cluster: Cluster) -> ClusterState:
    """Every live node's state, asked at once."""
    answers = await cluster.ask_every_node(
        lambda node: get_cluster_state(endpoint, node, NODE_DEADLINE_S)
    )
    return ClusterState.of(answers, cluster.killed)


async def start_nodes(
    cluster: Cluster, args: argparse.Namespace, env: dict[str, str], host: str = "127.0.0.1"
) -> None:
    """Node 0 first (the seed), then the others together."""
    first = "node-0"
    port = args.base_port
    service = await ServiceProcess.start(
        first, node_arguments(first, port, [], args, host), env, echo=args.verbose
    )
    cluster.services[first] = service
    cluster.addresses[first] = (host, service.port)
    seeds = [(host, service.port)]
    names = [f"node-{i}" for i in range(1, args.nodes)]
    starts = [
        ServiceProcess.start(
            name,
            node_arguments(name, args.base_port + i if args.base_port else 0, seeds, args, host),
            env,
            echo=args.verbose,
        )
        for i, name in enumerate(names, start=1)
    ]
    failure: BaseException | None = None
    results = await asyncio.gather(*starts, return_exceptions=True)
    for name, started in zip(names, results, strict=True):
        if isinstance(started, BaseException):
            failure = failure or started
            continue
        cluster.services[name] = started
        cluster.addresses[name] = (host, started.port)
    if failure is not None:
        raise failure


async def kill_and_measure(
    cluster: Cluster,
    endpoint: Endpoint,
    count: int,
    at: float,
    rng: random.Random,
    stop: asyncio.Event,
    timeout: float,
) -> dict[str, Any]:
    """At `at` (monotonic), SIGKILL `count` random nodes; time until every live node drops them."""
    delay = at - time.monotonic()
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    if stop.is_set():
        return {"killed": [], "recovered": False}
    victims = sorted(rng.sample(cluster.live, min(count, len(cluster.live) - 1)))
    killed_at = time.monotonic()
    await asyncio.gather(*(cluster.services[name].kill() for name in victims))
    cluster.killed.update(victims)
    print(f"killed {', '.join(victims)}; waiting for every live node to drop them", flush=True)
    detected: dict[str, float] = {}  # live node -> when it had dropped every victim
    while time.monotonic() - killed_at < timeout and not stop.is_set():
        views = await member_states(endpoint, cluster.live_addresses())
        now = time.monotonic()
        for name in cluster.live:
            view = views.get(cluster.addresses[name])
            if name in detected or view is None:
                continue
            if all(view.get(victim) in (None, "dead", "left") for victim in victims):
                detected[name] = now - killed_at
        if len(detected) == len(cluster.live):
            break
        await asyncio.sleep(POLL_S)
    recovered = len(detected) == len(cluster.live)
    return {
        "killed": victims,
        "recovered": recovered,
        "recovery_s": round(max(detected.values()), 3) if recovered else None,
        "first_detection_s": round(min(detected.values()), 3) if detected else None,
        "poll_interval_s": POLL_S,
    }


async def run(args: argparse.Namespace) -> RunReport:
    models, arrivals = make_workload(options_from_args(args, args.duration))
    env = {
        "REPORT_INTERVAL": str(args.report_interval),
        "LOG_LEVEL": "DEBUG" if args.verbose else "INFO",
        "SEED_NODES": "",
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    cluster = Cluster()
    endpoint: Endpoint | None = None
    sampler: asyncio.Task[None] | None = None
    killer: asyncio.Task[dict[str, Any]] | None = None
    watcher: asyncio.Task[None] | None = None
    gossip = gossip_config(args)
    try:
        print(
            f"starting {args.nodes} nodes ({args.policy}, probing {args.probing or 'off'}) on "
            f"127.0.0.1; {len(arrivals)} requests over {args.duration:g}s for "
            f"{len(models)} models",
            flush=True,
        )
        await start_nodes(cluster, args, env)
        endpoint = await Endpoint.bind(Codec(), "127.0.0.1", 0)
        converged = await wait_for_convergence(
            endpoint, cluster.live_addresses(), set(cluster.services), JOIN_TIMEOUT_S
        )
        if converged is None:
            raise RuntimeError(f"the nodes did not converge within {JOIN_TIMEOUT_S:g} s")
        rng = random.Random(args.seed)
        watch_rng = random.Random(args.seed + 2)  # +1 picks the victims
        driver = Driver(
            endpoint,
            cluster.addresses["node-0"],
            pick_scheduler=lambda: rng.choice(cluster.live_addresses()),
            liveness=lambda: membership_liveness(
                endpoint, watch_rng.choice(cluster.live_addresses())
            ),
            status=lambda: cluster_status(endpoint, cluster),
        )
        driver.active_workers = args.nodes
        print(f"all {args.nodes} nodes see each other after {converged:.2f}s", flush=True)
        sampler = asyncio.create_task(driver.sample_forever(args.status_interval))
        watcher = asyncio.create_task(driver.watch_forever())
        if args.kill:
            killer = asyncio.create_task(
                kill_and_measure(
                    cluster,
                    endpoint,
                    args.kill,
                    time.monotonic() + args.duration / 2,
                    random.Random(args.seed + 1),
                    stop,
                    timeout=3 * gossip.detection_bound(args.nodes),
                )
            )
        await driver.replay(arrivals, stop)
        if driver.in_flight and not stop.is_set():
            await wait_for_drain(driver.in_flight, stop, args.drain)
        for task in list(driver.in_flight):
            task.cancel()
        await asyncio.gather(*driver.in_flight, return_exceptions=True)
        kill_result: dict[str, Any] | None = None
        if killer is not None:
            kill_result = await killer
            kill_result["detection_bound_s"] = round(gossip.detection_bound(args.nodes), 3)
        sampler.cancel()  # so that no periodic block prints inside the final one
        placements = await print_final_state(endpoint, cluster)
        gossip_summary = await summarize_gossip(endpoint, cluster)
        return build_report(
            driver.outcomes,
            driver.samples,
            len(cluster.live),
            {
                "mode": "decentralized",
                "policy": args.policy,
                "seed": args.seed,
                "duration_s": args.duration,
                "interrupted": stop.is_set(),
                "missed_state_samples": driver.missed_samples,
                "nodes": args.nodes,
                "probing": args.probing,
                "probe_interval_s": gossip.probe_interval_s,
                "converged_s": round(converged, 3),
                "kill": kill_result,
                "gossip": gossip_summary,
            },
            retried=driver.outstanding.retried,
            placements=placements,
        )
    finally:
        tasks: list[asyncio.Task[Any]] = [t for t in (sampler, killer, watcher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if endpoint is not None:
            endpoint.close()
        await cluster.stop()
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


async def cluster_status(endpoint: Endpoint, cluster: Cluster) -> str:
    """The periodic status block (`Driver`'s ``status``)."""
    return render_cluster_state(await read_cluster_state(endpoint, cluster))


async def print_final_state(endpoint: Endpoint, cluster: Cluster) -> Placements | None:
    """Print the cluster state once more after the drain, as the periodic block does, and
    return its placements for the final report: one read, so the two print the same warm
    placement figures. None when no node answers."""
    state = await read_cluster_state(endpoint, cluster)
    print(f"\n{FINAL_STATE_HEADER}")
    print(render_cluster_state(state), flush=True)
    return state.placements if state.states else None


async def summarize_gossip(endpoint: Endpoint, cluster: Cluster) -> dict[str, Any]:
    """Membership counters summed over the live nodes, and their traffic per node."""
    answers = await cluster.ask_every_node(
        lambda node: get_members(endpoint, node, NODE_DEADLINE_S, pages=1)
    )
    summaries = [summary for summary, _ in filter(None, answers.values())]
    sent = [summary.bytes_sent_per_s for summary in summaries]
    received = [summary.bytes_received_per_s for summary in summaries]
    return {
        "nodes_answering": len(summaries),
        "false_suspicions": sum(summary.false_suspicions for summary in summaries),
        "refuted": sum(summary.refuted for summary in summaries),
        "rejected_datagrams": sum(summary.rejected_datagrams for summary in summaries),
        "bytes_sent_per_s_per_node": round(sum(sent) / len(sent), 1) if sent else 0.0,
        "bytes_received_per_s_per_node": round(sum(received) / len(received), 1)
        if received
        else 0.0,
    }


def render_extra(report: RunReport) -> str:
    setup: dict[str, Any] = dict(report.setup)  # this driver's own keys
    gossip = setup["gossip"]
    lines = [
        f"gossip: false suspicions {gossip['false_suspicions']}  refuted {gossip['refuted']}  "
        f"rejected datagrams {gossip['rejected_datagrams']}  traffic per node out "
        f"{gossip['bytes_sent_per_s_per_node']:.0f} B/s in "
        f"{gossip['bytes_received_per_s_per_node']:.0f} B/s",
    ]
    kill = setup.get("kill")
    if kill:
        if kill["recovered"]:
            lines.append(
                f"killed {', '.join(kill['killed'])}: every live node dropped them after "
                f"{kill['recovery_s']:.2f}s (first after {kill['first_detection_s']:.2f}s; "
                f"stated bound {kill['detection_bound_s']:.2f}s)"
            )
        else:
            lines.append(f"killed {', '.join(kill['killed']) or 'none'}: not recovered")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = []
    if args.nodes < 1:
        problems.append("--nodes must be >= 1")
    if args.duration <= 0:
        problems.append("--duration must be > 0")
    if args.rate <= 0:
        problems.append("--rate must be > 0")
    if not 0 <= args.kill < args.nodes:
        problems.append("--kill must be >= 0 and leave at least one node")
    if args.probing < 0:
        problems.append("--probing must be >= 0")
    if args.probe_interval <= 0:
        problems.append("--probe-interval must be > 0")
    if args.status_interval <= 0:
        problems.append("--status-interval must be > 0")
    if problems:
        print("decentralized_simulation.py: " + "; ".join(problems), file=sys.stderr)
        return 2
    return run_and_report("decentralized_simulation.py", lambda: run(args), args.json, render_extra)

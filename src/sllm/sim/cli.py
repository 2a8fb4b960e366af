"""`python3 -m sllm simulate`: one simulated run, reported like `centralized_simulation.py`.

The flags mirror the live script's (workers, policy, duration, the shared workload flags,
report interval and worker timeout), plus the network model and faults. The printed and
JSON reports have the live script's keys, plus ``events`` (events the kernel ran),
``simulation`` (network traffic, membership changes, the faults applied) and
``wall_seconds``. The same flags and seed give byte-identical JSON except
``wall_seconds``, the one key that measures the machine; ``--no-wall-time`` leaves it
out.

Loss: ``--loss P`` alone drops datagrams with probability P for the whole run; with one or
more ``--loss-window A:B`` it applies only between A and B seconds into the workload
(``A:B:P`` gives a window its own probability).

``--mode decentralized`` runs the decentralized architecture instead
(`sllm.sim.decentralized`): every worker is a gossiping node that also schedules, the
client asks a random live node. ``--kill-coordinator-at`` means nothing there (there is no
coordinator): the fault is listed in the report and otherwise ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from sllm.core.keepalive import EVICTION_POLICIES, KEEP_ALIVE_POLICIES
from sllm.core.node import PROBING_CANDIDATES_DEFAULT
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.sim.cluster import (
    RESULT_TIMEOUT_S,
    CentralizedCluster,
    ClusterConfig,
    SimulatedCluster,
    child_rng,
    worker_name,
)
from sllm.sim.decentralized import DecentralizedCluster
from sllm.sim.faults import Fault, parse_loss_window, random_faults, scheduled_faults
from sllm.sim.network import LinkModel
from sllm.sim.progress import Progress
from sllm.sim.report import SimReport, dumps, render_report
from sllm.workload.options import (
    DEFAULT_DRAIN_S,
    add_policy_argument,
    add_workload_arguments,
    make_workload,
    options_from_args,
)

EXIT_USAGE = 2
CLUSTERS: dict[str, type[SimulatedCluster]] = {
    cluster.mode: cluster for cluster in (CentralizedCluster, DecentralizedCluster)
}
MODES = tuple(CLUSTERS)
PRESTAGE = {"none": None, "disk": Tier.DISK, "host": Tier.HOST}
DEFAULT_RESOURCES = WorkerResources()


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate",
        help="simulate a cluster on virtual time (deterministic, fast)",
        description="Run the production scheduling core in a discrete-event simulation: "
        "N workers and a coordinator (or N gossiping nodes, --mode decentralized) and a "
        "client on a simulated network, with faults. "
        "Prints the report centralized_simulation.py prints; --json writes it.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build_arguments(parser)
    parser.set_defaults(run=main)


def build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, default="centralized", help="architecture")
    parser.add_argument("--workers", type=int, default=5, help="number of workers (default 5)")
    add_policy_argument(parser, help="placement policy (default startup-aware)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of arrivals (default 30)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument(
        "--no-wall-time",
        action="store_true",
        help="leave wall_seconds out of the report (for byte-for-byte comparisons)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="do not print the report")
    add_workload_arguments(parser)

    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--report-interval", type=float, default=1.0, help="seconds (1)")
    cluster.add_argument("--worker-timeout", type=float, default=10.0, help="seconds (10)")
    cluster.add_argument("--slots", type=int, default=DEFAULT_RESOURCES.slots)
    cluster.add_argument("--queue-capacity", type=int, default=DEFAULT_RESOURCES.queue_capacity)
    cluster.add_argument("--keep-alive", type=float, default=DEFAULT_RESOURCES.keep_alive_s)
    cluster.add_argument("--prestage", choices=tuple(PRESTAGE), default="disk")
    cluster.add_argument(
        "--keep-alive-policy",
        choices=KEEP_ALIVE_POLICIES,
        default=DEFAULT_RESOURCES.keep_alive_policy,
        help="fixed (--keep-alive) or histogram (learned per model)",
    )
    cluster.add_argument(
        "--eviction", choices=EVICTION_POLICIES, default=DEFAULT_RESOURCES.eviction
    )
    cluster.add_argument(
        "--prefetch", action="store_true", help="pre-warm by the learned window (histogram)"
    )
    cluster.add_argument(
        "--hand-back",
        action="store_true",
        help="workers hand back the requests of a load that found no room for as long as "
        "the load takes, to be placed elsewhere",
    )
    cluster.add_argument(
        "--migrate",
        action="store_true",
        help="such a load empties the GPU of the models in its way once that costs less "
        "than waiting on: their running requests migrate with the tokens they produced "
        "and finish elsewhere, their prefix computed again",
    )
    cluster.add_argument(
        "--admission-deadline",
        type=float,
        metavar="S",
        help="the coordinator (or, decentralized, each node) refuses requests waiting "
        "longer than S beyond their own load",
    )
    cluster.add_argument(
        "--admission-hold",
        type=float,
        metavar="S",
        help="with --admission-deadline: hold such a request up to S seconds in a bounded "
        "queue and place it once the deadline admits it, instead of refusing it at once",
    )
    cluster.add_argument(
        "--probing",
        type=int,
        default=PROBING_CANDIDATES_DEFAULT,
        metavar="D",
        help="decentralized: each node asks D candidates for their load before a decision "
        f"and decides among them (default {PROBING_CANDIDATES_DEFAULT}; 0: over its gossiped "
        "view alone)",
    )
    cluster.add_argument(
        "--drain", type=float, default=DEFAULT_DRAIN_S, help="seconds to let requests finish"
    )
    cluster.add_argument(
        "--result-timeout",
        type=float,
        default=RESULT_TIMEOUT_S,
        help="seconds the client waits for an answer after a request's arrival",
    )
    cluster.add_argument(
        "--refusal-retries",
        type=int,
        default=0,
        metavar="N",
        help="the client asks again after a refusal with a Retry-After (full queues, the "
        "admission deadline, no worker), up to N times, that much later, as the official "
        "openai client does (its default: 2); default 0, a refusal fails the request",
    )

    network = parser.add_argument_group("network")
    network.add_argument("--latency-ms", type=float, default=0.25, help="one-way floor (0.25)")
    network.add_argument(
        "--jitter-ms", type=float, default=0.05, help="median log-normal extra delay (0.05)"
    )
    network.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    network.add_argument(
        "--duplicate", type=float, default=0.0, help="datagram duplication probability"
    )
    network.add_argument("--signed", action="store_true", help="count the HMAC envelope bytes")
    network.add_argument(
        "--exact-bytes", action="store_true", help="encode every datagram to count bytes (slow)"
    )

    faults = parser.add_argument_group("faults (times in seconds into the workload)")
    faults.add_argument("--kill-workers", type=int, default=0, metavar="K")
    faults.add_argument("--kill-at", type=float, metavar="T")
    faults.add_argument("--kill-coordinator-at", type=float, metavar="T")
    faults.add_argument(
        "--restart-after", type=float, metavar="S", help="restart what was killed S s later"
    )
    faults.add_argument("--partition-at", type=float, metavar="T")
    faults.add_argument("--heal-at", type=float, metavar="T")
    faults.add_argument(
        "--partition-fraction",
        type=float,
        default=0.5,
        help="share of workers cut off from the coordinator (0.5)",
    )
    faults.add_argument(
        "--loss-window",
        action="append",
        default=[],
        metavar="A:B[:P]",
        help="apply --loss (or P) only from A to B; repeatable",
    )
    faults.add_argument(
        "--random-faults",
        type=int,
        default=0,
        metavar="N",
        help="N random fault episodes drawn from the seed, over by 2/3 of the duration",
    )


def check_arguments(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.workers < 1:
        problems.append("--workers must be >= 1")
    if args.duration <= 0:
        problems.append("--duration must be > 0")
    if args.rate <= 0:
        problems.append("--rate must be > 0")
    if not 0.0 <= args.loss <= 1.0 or not 0.0 <= args.duplicate <= 1.0:
        problems.append("--loss and --duplicate are probabilities in [0, 1]")
    if args.latency_ms < 0 or args.jitter_ms < 0:
        problems.append("--latency-ms and --jitter-ms must be >= 0")
    if args.worker_timeout <= args.report_interval or args.report_interval <= 0:
        problems.append("need 0 < --report-interval < --worker-timeout")
    if args.random_faults < 0:
        problems.append("--random-faults must be >= 0")
    if args.prefetch and args.keep_alive_policy != "histogram":
        problems.append("--prefetch needs --keep-alive-policy histogram")
    if args.admission_deadline is not None and not args.admission_deadline > 0:
        problems.append("--admission-deadline must be > 0")
    if args.admission_hold is not None and (
        not args.admission_hold > 0 or args.admission_deadline is None
    ):
        problems.append("--admission-hold must be > 0 and needs --admission-deadline")
    if args.probing < 0:
        problems.append("--probing must be >= 0")
    if args.refusal_retries < 0:
        problems.append("--refusal-retries must be >= 0")
    return problems


def build_config(args: argparse.Namespace) -> ClusterConfig:
    base_loss = 0.0 if args.loss_window else args.loss
    return ClusterConfig(
        workers=args.workers,
        policy=args.policy,
        seed=args.seed,
        report_interval_s=args.report_interval,
        worker_timeout_s=args.worker_timeout,
        resources=WorkerResources(
            slots=args.slots,
            queue_capacity=args.queue_capacity,
            keep_alive_s=args.keep_alive,
            keep_alive_policy=args.keep_alive_policy,
            eviction=args.eviction,
            prefetch=args.prefetch,
            hand_back=args.hand_back,
            migrate=args.migrate,
        ),
        admission_deadline_s=args.admission_deadline,
        admission_hold_s=args.admission_hold,
        probing_candidates=args.probing,
        prestage=PRESTAGE[args.prestage],
        models_served=args.models,
        link=LinkModel(
            latency_s=args.latency_ms / 1e3,
            jitter_s=args.jitter_ms / 1e3,
            loss=base_loss,
            duplicate=args.duplicate,
        ),
        signed=args.signed,
        exact_bytes=args.exact_bytes,
        drain_s=args.drain,
        result_timeout_s=args.result_timeout,
        refusal_retries=args.refusal_retries,
    )


def build_faults(args: argparse.Namespace, workers: list[str]) -> list[Fault]:
    """The fault plan of the flags; raises ValueError on a bad combination."""
    windows = []
    for text in args.loss_window:
        if text.count(":") == 1 and args.loss <= 0:
            raise ValueError(f"--loss-window {text} needs --loss P (or A:B:P)")
        windows.append(parse_loss_window(text, args.loss))
    plan = scheduled_faults(
        workers,
        child_rng(args.seed, "faults"),
        kill_workers=args.kill_workers,
        kill_at=args.kill_at,
        kill_coordinator_at=args.kill_coordinator_at,
        restart_after=args.restart_after,
        partition_at=args.partition_at,
        heal_at=args.heal_at,
        partition_fraction=args.partition_fraction,
        loss_windows=windows,
    )
    if args.random_faults:
        drawn = random_faults(
            workers,
            child_rng(args.seed, "random-faults"),
            args.random_faults,
            0.0,
            args.duration * 2 / 3,
        )
        plan = sorted([*plan, *drawn], key=lambda fault: fault.at_s)
    return plan


def simulate(
    args: argparse.Namespace,
    config: ClusterConfig | None = None,
    faults: list[Fault] | None = None,
    progress: Progress | None = None,
) -> SimReport:
    """Run the simulation the parsed flags describe; return its report.

    Raises ValueError (bad flags, trace or popularity file) and OSError (unreadable file).
    """
    config = config or build_config(args)
    if faults is None:
        faults = build_faults(args, [worker_name(i) for i in range(config.workers)])
    _, arrivals = make_workload(options_from_args(args, args.duration))
    result = CLUSTERS[args.mode](config).run(
        arrivals,
        args.duration,
        faults,
        progress=progress.update if progress is not None else None,
    )
    if args.no_wall_time:
        return dataclasses.replace(result.report, wall_seconds=None)
    return result.report


def main(args: argparse.Namespace) -> int:
    problems = check_arguments(args)
    try:
        config = build_config(args) if not problems else None
        faults = build_faults(args, [worker_name(i) for i in range(args.workers)])
    except ValueError as error:
        problems.append(str(error))
    if problems or config is None:
        print("sllm simulate: " + "; ".join(problems), file=sys.stderr)
        return EXIT_USAGE
    try:
        with Progress("simulate") as progress:
            report = simulate(args, config, faults, progress)
    except (OSError, ValueError) as error:
        print(f"sllm simulate: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(render_report(report.run))
        wall = report.wall_seconds
        speed = f", {report.events / wall:,.0f} events/s" if wall else ""
        print(
            f"simulated {report.simulation.simulated_seconds:.1f} s: "
            f"{report.events:,} events" + (f" in {wall:.2f} s wall{speed}" if wall else "")
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(dumps(report.as_dict()))
        if not args.quiet:
            print(f"report written to {args.json}")
    return 0

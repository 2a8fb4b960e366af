"""The `sllm` command: `coordinator`, `worker`, `status` and `bench`.

Each subcommand builds one `Settings` (flags over environment over defaults) and exits 2
with one message listing every bad value when that fails. The guide's root scripts
(`udp_central_coordinator.py`, `worker_node.py`) are thin aliases of the first two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sllm.catalog import served_catalog
from sllm.config import ConfigError, Settings, load_settings
from sllm.core.cost import CostModel
from sllm.core.placement import POLICY_NAMES
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.logs import configure_logging
from sllm.runtime.client import get_cluster_state, render_table
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.service import run_service
from sllm.runtime.udp import Address, Endpoint
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec

EXIT_CONFIG = 2
PRESTAGE = {"none": None, "disk": Tier.DISK, "host": Tier.HOST}

ENVIRONMENT_HELP = """\
environment (flags win over these; see docs or `sllm.config` for all):
  DEPLOYMENT_MODE local|docker|kubernetes   LOG_LEVEL, LOG_FORMAT text|json
  BIND_HOST, COORDINATOR_HOST, COORDINATOR_PORT, WORKER_PORT, WORKER_ID
  REPORT_INTERVAL (s), WORKER_TIMEOUT (s), PLACEMENT_POLICY, CLUSTER_SECRET
  KEEP_ALIVE (s), QUEUE_CAPACITY, WORKER_SLOTS
"""


def _settings(overrides: dict[str, object]) -> Settings:
    """Settings from flags and environment, or exit 2 with every problem listed."""
    try:
        settings = load_settings(overrides, policy_names=POLICY_NAMES)
    except ConfigError as error:
        print(f"sllm: {error}", file=sys.stderr)  # str(error) starts "invalid configuration:"
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _codec(settings: Settings) -> Codec:
    secret = settings.cluster_secret
    return Codec(secret=secret.encode() if secret else None)


def _verbose(args: argparse.Namespace) -> str | None:
    return "DEBUG" if args.verbose else None


def add_coordinator_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "coordinator",
        help="run the central coordinator (UDP placement service)",
        description="Run the central coordinator: it learns workers from their UDP reports, "
        "drops them after WORKER_TIMEOUT of silence and places every schedule request.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to bind (BIND_HOST, default 0.0.0.0)")
    parser.add_argument("--port", help="UDP port (COORDINATOR_PORT, default 9000; 0 = any)")
    parser.add_argument(
        "--policy", choices=POLICY_NAMES, help="placement policy (PLACEMENT_POLICY)"
    )
    parser.add_argument("--worker-timeout", help="seconds of silence before a worker is dropped")
    parser.add_argument("--seed", type=int, help="seed for the random policies")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    parser.set_defaults(run=run_coordinator)


def run_coordinator(args: argparse.Namespace) -> int:
    settings = _settings(
        {
            "bind_host": args.host,
            "coordinator_port": args.port,
            "placement_policy": args.policy,
            "worker_timeout": args.worker_timeout,
            "log_level": _verbose(args),
        }
    )
    server = CoordinatorServer(
        host=settings.bind_host,
        port=settings.coordinator_port,
        codec=_codec(settings),
        policy=settings.placement_policy,
        catalog=served_catalog(),
        cost=CostModel(),
        worker_timeout=settings.worker_timeout,
        seed=args.seed,
    )
    return run_service(server)


def add_worker_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a worker (sim engine) that reports to the coordinator",
        description="Run a worker: it reports its queue and model tiers every "
        "REPORT_INTERVAL and runs the requests placed on it with the sim engine.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--node-id", help="worker id (WORKER_ID, default: pod or host name)")
    parser.add_argument("--host", help="address to bind (BIND_HOST, default 0.0.0.0)")
    parser.add_argument("--port", help="UDP port (WORKER_PORT, default 8000; 0 = any)")
    parser.add_argument("--coordinator-host", help="coordinator name or address")
    parser.add_argument("--coordinator-port", help="coordinator UDP port")
    parser.add_argument("--report-interval", help="seconds between reports")
    parser.add_argument("--slots", help="requests run at once (WORKER_SLOTS)")
    parser.add_argument("--keep-alive", help="seconds an idle model stays on the GPU")
    parser.add_argument(
        "--prestage", choices=tuple(PRESTAGE), help="checkpoints found at start (PRESTAGE_TIER)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    parser.set_defaults(run=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    settings = _settings(
        {
            "worker_id": args.node_id,
            "bind_host": args.host,
            "worker_port": args.port,
            "coordinator_host": args.coordinator_host,
            "coordinator_port": args.coordinator_port,
            "report_interval": args.report_interval,
            "worker_slots": args.slots,
            "keep_alive": args.keep_alive,
            "prestage_tier": args.prestage,
            "log_level": _verbose(args),
        }
    )
    resources = WorkerResources(
        slots=settings.worker_slots,
        queue_capacity=settings.queue_capacity,
        keep_alive_s=settings.keep_alive,
    )
    server = WorkerServer(
        worker_id=settings.get_worker_id(),
        host=settings.bind_host,
        port=settings.worker_port,
        coordinator=settings.get_coordinator_address(),
        codec=_codec(settings),
        catalog=served_catalog(),
        cost=CostModel(),
        resources=resources,
        report_interval=settings.report_interval,
        prestage=PRESTAGE[settings.prestage_tier],
    )
    return run_service(server)


def add_status_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="print a coordinator's cluster state",
        description="Ask a coordinator for its cluster state and print it as a table, "
        "or as JSON with --json.",
    )
    parser.add_argument(
        "--coordinator",
        help="HOST:PORT of the coordinator (default COORDINATOR_HOST:COORDINATOR_PORT)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait per page")
    parser.set_defaults(run=run_status)


def parse_address(text: str) -> Address:
    """HOST:PORT -> (host, port); raises ValueError with a readable message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def run_status(args: argparse.Namespace) -> int:
    settings = _settings({"log_level": "WARNING"})
    try:
        target = parse_address(args.coordinator) if args.coordinator else None
    except ValueError as error:
        print(f"sllm status: {error}", file=sys.stderr)
        return EXIT_CONFIG
    target = target or settings.get_coordinator_address()

    async def fetch() -> dict[str, Any]:
        endpoint = await Endpoint.bind(_codec(settings), "0.0.0.0", 0)
        try:
            return await get_cluster_state(endpoint, target, args.timeout)
        finally:
            endpoint.close()

    try:
        state = asyncio.run(fetch())
    except (TimeoutError, OSError) as error:
        print(
            f"sllm status: no answer from coordinator {target[0]}:{target[1]} "
            f"({type(error).__name__}: {str(error) or 'timed out'})",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(state, indent=2) if args.json else render_table(state))
    return 0


def add_bench_parser(sub: Any) -> None:
    from sllm.bench import add_bench_parsers

    parser = sub.add_parser("bench", help="run a benchmark (see bench/README.md)")
    add_bench_parsers(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sllm",
        description="Serverless LLM inference on a shared GPU pool.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders: list[Callable[[Any], None]] = [
        add_coordinator_parser,
        add_worker_parser,
        add_status_parser,
        add_bench_parser,
    ]
    for add in adders:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

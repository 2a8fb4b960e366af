"""The `sllm` command: `coordinator`, `worker`, `node`, `status`, `bench` and the rest.

Each subcommand builds one `Settings` (flags over environment over defaults) and exits 2
with one message listing every bad value when that fails. The guide's root scripts
(`udp_central_coordinator.py`, `worker_node.py`) are thin aliases of the first two.
``sllm --version`` prints `sllm.__version__`, which the package metadata is built from
(pyproject.toml reads it), so a bare checkout and an installed one say the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sllm import __version__, admin_cli
from sllm.catalog import CatalogError, CatalogModel, catalog_for
from sllm.config import ConfigError, Settings, load_settings
from sllm.core.admission import Admission
from sllm.core.cost import CostModel
from sllm.core.membership import GossipConfig
from sllm.core.node import PROBING_CANDIDATES_DEFAULT, NodeConfig, ProbingConfig
from sllm.core.placement import policy_names
from sllm.core.tiers import Tier
from sllm.core.worker import GB, WorkerResources
from sllm.engines.registry import REGISTERED
from sllm.experiments import suite as experiment_suite
from sllm.logs import configure_logging
from sllm.registry import IN_MEMORY, ModelRegistry
from sllm.runtime.client import get_cluster_state, get_node_state, render_gossip, render_table
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.gpu import gpu_count
from sllm.runtime.monitoring import HttpLimits
from sllm.runtime.node import NodeServer
from sllm.runtime.service import run_service
from sllm.runtime.udp import Address, Endpoint
from sllm.runtime.worker import WorkerServer
from sllm.sim import cli as sim_cli
from sllm.wire import Codec

EXIT_CONFIG = 2
# `status` printed a listing that is not the whole cluster (see sllm.runtime.client).
EXIT_INCOMPLETE = 3
PRESTAGE = {"none": None, "disk": Tier.DISK, "host": Tier.HOST}

ENVIRONMENT_HELP = """\
environment (flags win over these; see docs or `sllm.config` for all):
  DEPLOYMENT_MODE local|docker|kubernetes   LOG_LEVEL, LOG_FORMAT text|json
  BIND_HOST, COORDINATOR_HOST, COORDINATOR_PORT, WORKER_PORT, WORKER_ID
  REPORT_INTERVAL (s), WORKER_TIMEOUT (s), PLACEMENT_POLICY, CLUSTER_SECRET
  KEEP_ALIVE (s), QUEUE_CAPACITY, WORKER_SLOTS, SEED_NODES (node: host:port,...)
  HTTP_PORT (coordinator, default 8080): the front door (OpenAI API), /healthz,
  /readyz and /metrics; WORKER_HTTP_PORT (worker, node; default none): the routes the
  front door proxies to (a node's own front door), health and metrics; with the serve
  extra installed
  API_KEYS, MODEL_CATALOG, MODEL_CACHE_DIR, COST_MODEL (JSON of cost-model fields)
"""


def _settings(overrides: dict[str, object], *, service: bool = True) -> Settings:
    """Settings from flags and environment, or exit 2 with every problem listed.

    A `service` (coordinator, worker, node) configures logging for the whole process, so
    that under LOG_FORMAT=json even third-party output is JSON (`sllm.logs`). A tool for
    people (`status`) only sends its log records to stdout: its own messages stay plain.
    """
    try:
        settings = load_settings(overrides)
    except ConfigError as error:
        print(f"sllm: {error}", file=sys.stderr)  # str(error) starts "invalid configuration:"
        raise SystemExit(EXIT_CONFIG) from None
    stream = None if service else sys.stdout
    configure_logging(settings.log_level, settings.log_format, stream=stream)
    return settings


def _codec(settings: Settings) -> Codec:
    secret = settings.cluster_secret
    return Codec(secret=secret.encode() if secret else None)


def _catalog(settings: Settings) -> dict[str, CatalogModel]:
    """The served catalog, or exit 2 with every problem of the catalog file."""
    try:
        return catalog_for(settings.model_catalog, engines=REGISTERED)
    except CatalogError as error:
        print(f"sllm: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _cost_model(settings: Settings) -> CostModel:
    """The calibrated cost model with COST_MODEL's overrides, or exit 2 naming every problem.

    The file is a JSON object of `CostModel` fields, for example ``{"decode_overhead_s": 0.05}``
    for a slower sim engine or every time at 0 for a zero-service-time one (the gateway
    benchmark). The coordinator's placement estimates and a worker's sim engine both read it.
    """
    if settings.cost_model is None:
        return CostModel()
    try:
        with open(settings.cost_model, encoding="utf-8") as file:
            overrides = json.load(file)
        if not isinstance(overrides, dict):
            raise ValueError("expected a JSON object of cost-model fields")
        return CostModel().with_overrides(overrides)
    except (OSError, ValueError) as error:
        print(f"sllm: COST_MODEL={settings.cost_model!r}: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _http_limits(settings: Settings) -> HttpLimits:
    """HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT and HTTP_MAX_CONNECTIONS, for any listener."""
    return HttpLimits(
        header_timeout_s=settings.http_header_timeout,
        body_timeout_s=settings.http_body_timeout,
        max_connections=settings.http_max_connections,
    )


def _admission(settings: Settings, capacity: int) -> Admission:
    """Who may join a table of at most `capacity` workers or members (MAX_WORKERS or
    MAX_MEMBERS), at NEW_IDENTITY_RATE and NEW_IDENTITY_BURST per source address."""
    return Admission(
        capacity=capacity,
        per_source_per_s=settings.new_identity_rate,
        per_source_burst=settings.new_identity_burst,
    )


def _worker_resources(settings: Settings) -> WorkerResources:
    """A worker's (or a node's) capacities and retention, from its settings."""
    return WorkerResources(
        slots=settings.worker_slots,
        queue_capacity=settings.queue_capacity,
        keep_alive_s=settings.keep_alive,
        disk_bytes=settings.model_cache_gb * GB,
        host_bytes=settings.model_host_gb * GB,
        gpus=gpu_count(settings.worker_gpus),
        keep_alive_policy=settings.keep_alive_policy,
        eviction=settings.eviction,
        prefetch=settings.prefetch,
        hand_back=settings.hand_back,
        migrate=settings.migrate,
    )


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
        "--policy", choices=policy_names(), help="placement policy (PLACEMENT_POLICY)"
    )
    parser.add_argument("--worker-timeout", help="seconds of silence before a worker is dropped")
    parser.add_argument(
        "--http-port",
        help="HTTP port of the front door (OpenAI API), health and metrics "
        "(HTTP_PORT, default 8080; 0 = any)",
    )
    parser.add_argument("--seed", type=int, help="seed for the random policies")
    parser.add_argument("--catalog", help="model catalog file (MODEL_CATALOG)")
    parser.add_argument(
        "--registry", help="model registry SQLite file (REGISTRY_PATH; default: in memory)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    parser.set_defaults(run=run_coordinator)


def run_coordinator(args: argparse.Namespace) -> int:
    settings = _settings(
        {
            "bind_host": args.host,
            "coordinator_port": args.port,
            "placement_policy": args.policy,
            "worker_timeout": args.worker_timeout,
            "http_port": args.http_port,
            "model_catalog": args.catalog,
            "registry_path": args.registry,
            "log_level": _verbose(args),
        }
    )
    server = CoordinatorServer(
        host=settings.bind_host,
        port=settings.coordinator_port,
        codec=_codec(settings),
        policy=settings.placement_policy,
        catalog=_catalog(settings),
        cost=_cost_model(settings),
        worker_timeout=settings.worker_timeout,
        seed=args.seed,
        http_port=settings.http_port,
        api_keys=settings.api_keys,
        http_limits=_http_limits(settings),
        admission=_admission(settings, settings.max_workers),
        registry=_registry(settings),
        admin_key=settings.admin_key,
        admission_deadline_s=settings.admission_deadline or None,
        admission_hold_s=settings.admission_hold or None,
    )
    return run_service(server)


def _registry(settings: Settings) -> ModelRegistry:
    """The model registry at REGISTRY_PATH (or in memory), seeded by the catalog while
    empty; exit 2 when the file cannot be opened."""
    path = settings.registry_path or IN_MEMORY
    try:
        return ModelRegistry(path, engines=REGISTERED, seed=_catalog(settings))
    except (OSError, sqlite3.Error) as error:
        print(f"sllm: REGISTRY_PATH={path!r}: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def add_worker_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a worker that reports to the coordinator",
        description="Run a worker: it reports its queue and model tiers every "
        "REPORT_INTERVAL and runs the requests placed on it with each model's engine "
        "(the sim engine unless MODEL_CATALOG names another).",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--node-id", help="worker id (WORKER_ID, default: pod or host name)")
    parser.add_argument("--host", help="address to bind (BIND_HOST, default 0.0.0.0)")
    parser.add_argument("--port", help="UDP port (WORKER_PORT, default 8000; 0 = any)")
    parser.add_argument("--coordinator-host", help="coordinator name or address")
    parser.add_argument("--coordinator-port", help="coordinator UDP port")
    parser.add_argument(
        "--coordinator-http-port",
        help="coordinator HTTP port, to follow its model registry (COORDINATOR_HTTP_PORT)",
    )
    parser.add_argument("--report-interval", help="seconds between reports")
    parser.add_argument(
        "--http-port",
        help="HTTP port of the model requests the front door proxies here, health and "
        "metrics (WORKER_HTTP_PORT, default none; 0 = any)",
    )
    parser.add_argument("--slots", help="requests run at once (WORKER_SLOTS)")
    parser.add_argument("--keep-alive", help="seconds an idle model stays on the GPU")
    parser.add_argument(
        "--prestage", choices=tuple(PRESTAGE), help="checkpoints found at start (PRESTAGE_TIER)"
    )
    parser.add_argument("--catalog", help="model catalog file (MODEL_CATALOG)")
    parser.add_argument("--cache-dir", help="local disk tier of checkpoints (MODEL_CACHE_DIR)")
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
            "coordinator_http_port": args.coordinator_http_port,
            "report_interval": args.report_interval,
            "worker_http_port": args.http_port,
            "worker_slots": args.slots,
            "keep_alive": args.keep_alive,
            "prestage_tier": args.prestage,
            "model_catalog": args.catalog,
            "model_cache_dir": args.cache_dir,
            "log_level": _verbose(args),
        }
    )
    resources = _worker_resources(settings)
    server = WorkerServer(
        worker_id=settings.get_worker_id(),
        host=settings.bind_host,
        port=settings.worker_port,
        coordinator=settings.get_coordinator_address(),
        codec=_codec(settings),
        catalog=_catalog(settings),
        cost=_cost_model(settings),
        resources=resources,
        report_interval=settings.report_interval,
        prestage=PRESTAGE[settings.prestage_tier],
        http_port=settings.worker_http_port,
        model_cache_dir=settings.model_cache_dir,
        http_limits=_http_limits(settings),
        registry_url=_registry_url(settings),
    )
    return run_service(server)


def _registry_url(settings: Settings) -> str | None:
    """Where a worker reads the coordinator's registry: COORDINATOR_HOST at
    COORDINATOR_HTTP_PORT, or None (unset) to serve MODEL_CATALOG only."""
    if settings.coordinator_http_port is None:
        return None
    return f"http://{settings.coordinator_host}:{settings.coordinator_http_port}"


def add_node_parser(sub: Any) -> None:
    defaults = GossipConfig()
    parser = sub.add_parser(
        "node",
        help="run a decentralized node (worker + gossip + scheduler)",
        description="Run a decentralized node: it runs requests with each model's engine "
        "(the sim engine unless MODEL_CATALOG names another, such as transformers), learns "
        "its peers and their load by gossip (SWIM with Lifeguard), and places schedule "
        "requests over its own view with the same policies as the coordinator.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--node-id", help="node id (WORKER_ID, default: pod or host name)")
    parser.add_argument("--host", help="address to bind (BIND_HOST, default 0.0.0.0)")
    parser.add_argument("--port", help="UDP port (WORKER_PORT, default 8000; 0 = any)")
    parser.add_argument("--seed-nodes", help="host:port,... to join through (SEED_NODES)")
    parser.add_argument(
        "--http-port",
        help="front door, health and metrics HTTP port (WORKER_HTTP_PORT, default none; 0 = any)",
    )
    parser.add_argument("--catalog", help="model catalog file (MODEL_CATALOG)")
    parser.add_argument(
        "--advertise-host", default="", help="address peers reach us at (default: bound host)"
    )
    parser.add_argument(
        "--policy", choices=policy_names(), help="placement policy (PLACEMENT_POLICY)"
    )
    parser.add_argument("--report-interval", help="seconds between own load reports")
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=defaults.probe_interval_s,
        help=f"SWIM protocol period, s (default {defaults.probe_interval_s})",
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=defaults.probe_timeout_s,
        help=f"direct probe timeout, s (default {defaults.probe_timeout_s})",
    )
    parser.add_argument(
        "--gossip-interval",
        type=float,
        default=defaults.gossip_interval_s,
        help=f"gossip round period, s (default {defaults.gossip_interval_s})",
    )
    parser.add_argument(
        "--sync-interval",
        type=float,
        default=defaults.sync_interval_s,
        help=f"push-pull anti-entropy period, s (default {defaults.sync_interval_s})",
    )
    parser.add_argument(
        "--probing",
        type=int,
        default=PROBING_CANDIDATES_DEFAULT,
        metavar="D",
        help="Sparrow-style: ask D candidates for their load before placing, and place "
        f"among them (default {PROBING_CANDIDATES_DEFAULT}; 0: over the gossiped view alone)",
    )
    parser.add_argument("--slots", help="requests run at once (WORKER_SLOTS)")
    parser.add_argument("--keep-alive", help="seconds an idle model stays on the GPU")
    parser.add_argument(
        "--prestage", choices=tuple(PRESTAGE), help="checkpoints found at start (PRESTAGE_TIER)"
    )
    parser.add_argument("--seed", type=int, help="seed for gossip and the random policies")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    parser.set_defaults(run=run_node)


def run_node(args: argparse.Namespace) -> int:
    settings = _settings(
        {
            "worker_id": args.node_id,
            "bind_host": args.host,
            "worker_port": args.port,
            "seed_nodes": args.seed_nodes,
            "worker_http_port": args.http_port,
            "model_catalog": args.catalog,
            "placement_policy": args.policy,
            "report_interval": args.report_interval,
            "worker_slots": args.slots,
            "keep_alive": args.keep_alive,
            "prestage_tier": args.prestage,
            "log_level": _verbose(args),
        }
    )
    try:
        gossip = GossipConfig(
            probe_interval_s=args.probe_interval,
            probe_timeout_s=args.probe_timeout,
            gossip_interval_s=args.gossip_interval,
            sync_interval_s=args.sync_interval,
        )
        refresh = max(10.0, 10 * settings.report_interval)
        config = NodeConfig(
            policy=settings.placement_policy,
            report_interval_s=settings.report_interval,
            report_refresh_s=refresh,
            report_stale_s=6 * refresh,
            gossip=gossip,
            probing=ProbingConfig(candidates=args.probing),
            admission_deadline_s=settings.admission_deadline or None,
            admission_hold_s=settings.admission_hold or None,
        )
    except ValueError as error:
        print(f"sllm node: invalid configuration:\n  {error}", file=sys.stderr)
        return EXIT_CONFIG
    resources = _worker_resources(settings)
    server = NodeServer(
        node_id=settings.get_worker_id(),
        host=settings.bind_host,
        port=settings.worker_port,
        codec=_codec(settings),
        catalog=_catalog(settings),
        cost=_cost_model(settings),
        resources=resources,
        config=config,
        seeds=settings.seed_nodes,
        advertise_host=args.advertise_host,
        prestage=PRESTAGE[settings.prestage_tier],
        seed=args.seed,
        http_port=settings.worker_http_port,
        api_keys=settings.api_keys,
        http_limits=_http_limits(settings),
        admission=_admission(settings, settings.max_members),
        registry=_registry(settings),
        admin_key=settings.admin_key,
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
    parser.add_argument(
        "--node", help="HOST:PORT of a decentralized node: its view plus its gossip state"
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
    settings = _settings({"log_level": "WARNING"}, service=False)
    try:
        target = parse_address(args.coordinator) if args.coordinator else None
        node = parse_address(args.node) if args.node else None
    except ValueError as error:
        print(f"sllm status: {error}", file=sys.stderr)
        return EXIT_CONFIG
    target = node or target or settings.get_coordinator_address()

    async def fetch() -> dict[str, Any]:
        endpoint = await Endpoint.bind(_codec(settings), "0.0.0.0", 0)
        try:
            if node is not None:
                return await get_node_state(endpoint, target, args.timeout)
            return await get_cluster_state(endpoint, target, args.timeout)
        finally:
            endpoint.close()

    try:
        state = asyncio.run(fetch())
    except (TimeoutError, OSError) as error:
        print(
            f"sllm status: no answer from {'node' if node else 'coordinator'} "
            f"{target[0]}:{target[1]} "
            f"({type(error).__name__}: {str(error) or 'timed out'})",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(state, indent=2))
    elif "gossip" in state:
        print(render_table(state) + "\n" + render_gossip(state["gossip"]))
    else:
        print(render_table(state))
    # Never a silent subset: say on stderr what is missing, and exit non-zero.
    incomplete = [
        part["incomplete"] for part in (state, state.get("gossip", {})) if part.get("incomplete")
    ]
    for reason in incomplete:
        print(f"sllm status: incomplete: {reason}", file=sys.stderr)
    return EXIT_INCOMPLETE if incomplete else 0


def add_bench_parser(sub: Any) -> None:
    from sllm.bench import add_bench_parsers

    parser = sub.add_parser("bench", help="run a benchmark (see bench/README.md)")
    add_bench_parsers(parser)


def add_make_test_model_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "make-test-model",
        help="write a tiny Llama-style checkpoint and its catalog (needs the torch extra)",
        description="Write a tiny Llama-style checkpoint (random weights, a tokenizer trained "
        "here; nothing is downloaded) into DIR, with DIR/catalog.json naming its files, "
        "sizes and sha256 for MODEL_CATALOG.",
    )
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.set_defaults(run=run_make_test_model)


def run_make_test_model(args: argparse.Namespace) -> int:
    try:
        from sllm.engines.testmodel import make_test_model
    except ImportError as error:
        print(f"sllm make-test-model: needs the torch extra ({error})", file=sys.stderr)
        return 1
    catalog = make_test_model(args.directory, seed=args.seed)
    name = catalog["models"][0]["name"]
    print(f"wrote {name} to {args.directory}; its catalog is {args.directory}/catalog.json")
    return 0


def add_openapi_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "openapi",
        help="print the front door's OpenAPI document (docs/openapi.json)",
        description="Print the OpenAPI document of the front door's OpenAI-compatible "
        "routes as JSON on stdout: the one shipped as docs/openapi.json and served at "
        "/openapi.json. Needs the serve extra.",
    )
    parser.set_defaults(run=run_openapi)


def run_openapi(args: argparse.Namespace) -> int:
    from sllm.api.frontdoor import shipped_openapi

    print(json.dumps(shipped_openapi(), indent=2, sort_keys=True))
    return 0


# -- sllm calibrate: this machine's tier bandwidths, for COST_MODEL ---------------------


def add_calibrate_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="measure this machine's host and disk load bandwidths into a COST_MODEL file",
        description="Load a generated checkpoint (random weights, written under --cache-dir "
        "and reused) with the loader, warm and cold, and write the measured "
        "host_bandwidth_Bps and disk_bandwidth_Bps as a JSON file for COST_MODEL. "
        "Needs the torch extra. See docs/loading.md.",
    )
    parser.add_argument("--out", type=Path, required=True, help="the calibration file to write")
    parser.add_argument("--gb", type=float, default=1.0, help="checkpoint size in GB")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to time loads to the GPU")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sllm-calibrate",
        help="where the generated checkpoint is written and reused",
    )
    parser.set_defaults(run=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    try:
        from sllm.bench.loading import calibrate
    except ImportError as error:
        print(f"sllm calibrate: needs the torch extra ({error})", file=sys.stderr)
        return 1
    fields = calibrate(gb=args.gb, cache_dir=args.cache_dir, device=args.device, log=print)
    CostModel().with_overrides(fields)  # what the worker will accept when it reads the file
    args.out.write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}; start workers and the coordinator with COST_MODEL={args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sllm",
        description="Serverless LLM inference on a shared GPU pool.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders: list[Callable[[Any], None]] = [
        add_coordinator_parser,
        add_worker_parser,
        add_node_parser,
        add_status_parser,
        add_bench_parser,
        add_make_test_model_parser,
        add_openapi_parser,
        add_calibrate_parser,
        sim_cli.add_parser,
        experiment_suite.add_parser,
        admin_cli.add_parsers,
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

"""Workload options shared by every driver: the same flags build the same requests.

Why here, in `workload`: the simulator, the live experiments and the benchmarks all read
them, and the workload is below each of them.

The ``--policy`` flag is here too (`add_policy_argument`): the simulator and both live
experiments offer exactly the registry's policies.

`centralized_simulation.py`, `decentralized_simulation.py` and `sllm simulate` take these
flags, so one seed and one set of flags give one workload whatever runs it.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

from sllm.core.placement import policy_names
from sllm.workload import (
    Arrival,
    GammaProcess,
    ModelPopularity,
    ModelSpec,
    PoissonProcess,
    build_workload,
    default_catalog,
    load_azure_trace,
    load_popularity,
)
from sllm.workload.compose import ArrivalSource

# After the last arrival, requests still running get this long to finish before they are
# counted as failed ("unfinished"): long enough for most cold starts from local disk.
DEFAULT_DRAIN_S = 30.0
# How often a live driver prints the cluster state: often enough to watch a 30 s run
# change, seldom enough that the blocks do not bury the log.
DEFAULT_STATUS_INTERVAL_S = 10.0
DEFAULT_RATE_RPS = 5.0  # about the Azure conversation trace's mean rate (5.5 req/s)
DEFAULT_MODELS = 8


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    duration_s: float
    seed: int = 0
    rate_rps: float = DEFAULT_RATE_RPS
    cv: float = 1.0
    trace: str | None = None
    popularity: str | None = None
    models: int = DEFAULT_MODELS
    time_scale: float = 1.0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The report file, the drain and the status period, alike in both live drivers
    (`sllm simulate` lists the drain among its cluster settings)."""
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument(
        "--drain", type=float, default=DEFAULT_DRAIN_S, help="seconds to let requests finish"
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=DEFAULT_STATUS_INTERVAL_S,
        metavar="S",
        help=f"seconds between cluster state printouts (default {DEFAULT_STATUS_INTERVAL_S:g})",
    )


def add_policy_argument(parser: argparse.ArgumentParser, *, help: str) -> None:
    """``--policy``, one of the registry's policies (`sllm.core.placement.POLICIES`), read
    when the parser is built, so the simulator and every experiment offer the same ones."""
    parser.add_argument("--policy", choices=policy_names(), default="startup-aware", help=help)


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--seed", type=int, default=0, help="seed of the workload (default 0)")
    group.add_argument(
        "--rate", type=float, default=DEFAULT_RATE_RPS, help="mean requests/s (default 5)"
    )
    group.add_argument(
        "--cv", type=float, default=1.0, help="coefficient of variation of gaps; 1 = Poisson"
    )
    group.add_argument(
        "--trace", help="Azure-format LLM trace CSV: replay its arrivals and token counts"
    )
    group.add_argument(
        "--popularity",
        help="model popularity: popularity JSON or Alibaba-GenAI request CSV "
        "(default: the shipped Alibaba GenAI skew)",
    )
    group.add_argument(
        "--models", type=int, default=DEFAULT_MODELS, help="distinct models (default 8)"
    )
    group.add_argument(
        "--time-scale", type=float, default=1.0, help="stretch (>1) or compress (<1) a trace"
    )


def options_from_args(args: argparse.Namespace, duration_s: float) -> WorkloadOptions:
    return WorkloadOptions(
        duration_s=duration_s,
        seed=args.seed,
        rate_rps=args.rate,
        cv=args.cv,
        trace=args.trace,
        popularity=args.popularity,
        models=args.models,
        time_scale=args.time_scale,
    )


def make_workload(options: WorkloadOptions) -> tuple[list[ModelSpec], list[Arrival]]:
    """The models and the time-sorted requests of one run.

    Popularity shares go to the models in an order shuffled by the seed, so the most
    popular model is not always the smallest one. Raises ValueError or OSError on a bad
    trace or popularity file.
    """
    if options.models < 1:
        raise ValueError(f"--models must be >= 1, got {options.models}")
    rng = random.Random(options.seed)
    models = default_catalog(options.models)
    names = [model.name for model in models]
    random.Random(rng.getrandbits(64)).shuffle(names)
    popularity = ModelPopularity.from_table(load_popularity(options.popularity), names)
    source: ArrivalSource
    if options.trace:
        source = load_azure_trace(
            options.trace, time_scale=options.time_scale, duration_s=options.duration_s
        )
    elif options.cv == 1.0:
        source = PoissonProcess(options.rate_rps)
    else:
        source = GammaProcess(options.rate_rps, options.cv)
    arrivals = build_workload(source, popularity, rng, duration_s=options.duration_s)
    return models, arrivals

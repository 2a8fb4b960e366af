"""Benchmarks (`sllm bench ...`); results are recorded in docs/benchmarks.md."""

from __future__ import annotations

from typing import Any


def add_bench_parsers(parser: Any) -> None:
    from sllm.bench import chaos, engine, fuzz, gateway, gossip, loading, placement, simulator

    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    placement.add_parser(sub)
    gossip.add_parser(sub)
    simulator.add_parser(sub)
    gateway.add_parser(sub)
    fuzz.add_parser(sub)
    chaos.add_parser(sub)
    engine.add_parser(sub)
    loading.add_parser(sub)

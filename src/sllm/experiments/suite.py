"""`python3 -m sllm experiment exp1|exp2|exp3|scale --out DIR`: the guide's experiments.

Each experiment runs the simulator (`sllm.sim`) on seeded workloads and writes into DIR:
``<name>.json`` (every number), ``<name>.md`` (a summary with tables) and
``<name>-*.png`` (plots; needs the optional ``plot`` extra, matplotlib, and is skipped
with a note otherwise). Progress goes to stderr: a bar on a terminal, elsewhere a plain
line every 10 s, with an ETA that weighs each run by its cost.

Every experiment has a centralized arm (`sllm.sim.cluster`) and a decentralized arm
(`sllm.sim.decentralized`: gossiping nodes that each schedule from their own view), in
the JSON under ``"centralized"`` and ``"decentralized"``.

- **exp1, performance**: every placement policy on the same workload, in both
  architectures: warm start rate and cold starts, warm placement rate, TTFT and
  end-to-end distributions (CDF
  plots), against the guide's ``seed`` policy as the baseline.
- **exp2, fault tolerance**: centralized, the coordinator is killed mid-run and restarted
  (and, as a second arm, a quarter of the workers are killed for good); decentralized, the
  same quarter of the nodes is killed for good: time to recovery, time until the failure
  is detected everywhere, and the request success rate over time.
- **exp3, utilization distribution**: per-worker queue depth and GPU utilization over
  time for every policy in both architectures, with their variance across workers and
  Gini coefficients.
- **pressure**: policies where they can differ: 64 models with a long-tail popularity, 20
  workers of four kinds with constrained GPU and host memory and different disks, load
  swept from 30% to 120% of warm capacity; every placement policy with the worker's
  learned keep-alive, expected-cost eviction and pre-warm, the coordinator's admission
  deadline, and the worker's hand-back and migration on and off; failures next to p50/p99
  TTFT; seed, startup-aware and admission decentralized too, against their centralized
  twins. Every level replays the whole trace (26 minutes of simulated time at 30%, 6.5 at
  120%); ``--hours`` sets the simulated hours per run instead. ``--seeds 0,1,2`` runs it
  once per seed, each into ``DIR/seed-<S>/`` (up to ``--jobs`` seeds at once, one process
  each: the machine's cores by default), and tallies the level-seed cells where the
  targets hold and the twins within 1.2x into ``DIR/pressure-seeds.md`` (and ``.json``,
  and a plot of the ratios by load, ``pressure-seeds-tally.png``). ``--replicas N`` runs
  each arm and level N times with the same arrivals and other cluster seeds and pools
  them, since one run's p99 moves with its network jitter and report phases alone.
  ``--levels 0.3`` runs only the levels named (fractions of warm capacity).
- **scale**: 10 to 10,000 workers centralized, 10 to 300 nodes decentralized (gossip
  costs the simulator about 2 minutes of wall time per 40 simulated seconds at 1,000
  nodes; ``sllm simulate --mode decentralized --workers 1000`` runs that size):
  placement quality (p99 TTFT, cold-start rate) and control-plane cost (messages/s and
  bytes/s in total and per node).

Each experiment is a module of four steps (`sllm.experiments.summary`): run the
simulations, analyse them into typed figures, write the Markdown, draw the plots.
`EXPERIMENTS` ties a name to them: `performance` (exp1), `recovery` (exp2), `spread`
(exp3), `scale`.

``digest`` is not an experiment: it reads exp1, exp2 and exp3's JSON from ``--out`` and
rewrites the generated section of ``--doc`` (docs/simulator.md), so the figures the guide
quotes come from a run, not from a hand (`sllm.experiments.digest`).

Default sizes finish in about a minute or two each on a 2-core machine (pressure, 72 runs,
in about five and a half); ``--quick`` runs tiny versions (seconds) for tests.

Not handled yet: decentralized scale runs beyond 300 nodes (too slow in the simulator
for the default budget; see above).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sllm.experiments import digest, performance, plots, pressure, recovery, scale, spread
from sllm.experiments.summary import (
    DEFAULT_OPTIONS,
    Context,
    Experiment,
    Plots,
    RunOptions,
    write_files,
)
from sllm.sim.progress import Progress

EXPERIMENTS: dict[str, Experiment[Any, Any]] = {
    "exp1": Experiment(
        run=performance.run_exp1,
        analyse=performance.analyse_exp1,
        write=performance.write_exp1,
        plot=performance.plot_exp1,
    ),
    "exp2": Experiment(
        run=recovery.run_exp2,
        analyse=recovery.analyse_exp2,
        write=recovery.write_exp2,
        plot=recovery.plot_exp2,
    ),
    "exp3": Experiment(
        run=spread.run_exp3,
        analyse=spread.analyse_exp3,
        write=spread.write_exp3,
        plot=spread.plot_exp3,
    ),
    "pressure": Experiment(
        run=pressure.run_pressure,
        analyse=pressure.analyse_pressure,
        write=pressure.write_pressure,
        plot=pressure.plot_pressure,
    ),
    "scale": Experiment(
        run=scale.run_scale,
        analyse=scale.analyse_scale,
        write=scale.write_scale,
        plot=scale.plot_scale,
    ),
}


# Not an experiment: rewrites a document's generated figures from experiments' results.
DIGEST = "digest"
# The files of pressure's tally over several seeds (`--seeds`).
PRESSURE_SEEDS = "pressure-seeds"


def run_experiment(name: str, out: Path, options: RunOptions = DEFAULT_OPTIONS) -> list[Path]:
    """Run one experiment into `out` (created if needed); return the files written."""
    return _carry_out(_Run(name=name, out=out, options=options, label=name))[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Run:
    """One experiment to carry out, as `run_experiment` or a process of
    `run_pressure_seeds` receives it."""

    name: str
    out: Path
    options: RunOptions
    label: str  # on its progress
    plain: bool = False  # progress in plain lines: other runs share the terminal


def _carry_out(run: _Run) -> tuple[Any, list[Path]]:
    """`run` into its folder: its result and its files."""
    run.out.mkdir(parents=True, exist_ok=True)
    pictures = Plots(folder=run.out, name=run.name)
    with Progress(run.label, plain=run.plain) as progress:
        ctx = Context(name=run.name, progress=progress, options=run.options)
        result, written = EXPERIMENTS[run.name].carry_out(ctx, pictures)
        progress.update(1.0, "done")
    return result, write_files(run.out, run.name, written, pictures)


def run_pressure_seeds(
    out: Path, seeds: Sequence[int], options: RunOptions = DEFAULT_OPTIONS, jobs: int = 1
) -> list[Path]:
    """The pressure experiment once per seed (in place of `options`' seed), each into
    ``out/seed-<S>/``, then their tally (`pressure.tally_pressure`,
    `pressure.plot_pressure_seeds`) into ``out/pressure-seeds.{json,md}`` and
    ``out/pressure-seeds-tally.png``.

    Up to `jobs` seeds run at once, each in a process of its own (the simulator uses one
    core); a seed's outcome does not depend on it, only the wall time does.
    """
    jobs = max(1, min(jobs, len(seeds)))
    runs = [
        _Run(
            name="pressure",
            out=out / f"seed-{seed}",
            options=replace(options, seed=seed),
            label=f"pressure seed {seed} ({turn} of {len(seeds)})",
            plain=jobs > 1,
        )
        for turn, seed in enumerate(seeds, start=1)
    ]
    if jobs == 1:
        outcomes = [_carry_out(run) for run in runs]
    else:
        # spawned, not forked: each child starts clean rather than from a copy of this one
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            outcomes = list(pool.map(_carry_out, runs))
    results = {seed: result for seed, (result, _) in zip(seeds, outcomes, strict=True)}
    written = [path for _, files in outcomes for path in files]
    pictures = Plots(folder=out, name=PRESSURE_SEEDS)
    pressure.plot_pressure_seeds(results, pictures)
    tally = pressure.tally_pressure(results)
    return write_files(out, PRESSURE_SEEDS, tally, pictures) + written


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "experiment",
        help="run one of the guide's experiments on the simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name",
        choices=(*EXPERIMENTS, DIGEST),
        help=f"which experiment; {DIGEST}: write the headline figures of "
        f"{', '.join(digest.DIGESTED)} (their JSON, read from --out) into --doc",
    )
    parser.add_argument("--out", default="results", help="output folder (default results/)")
    parser.add_argument(
        "--doc",
        default="docs/simulator.md",
        help=f"the document whose generated section {DIGEST} rewrites (default docs/simulator.md)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument(
        "--seeds",
        default=None,
        metavar="S,S,...",
        help="pressure only: run it once per seed (each into --out/seed-<S>/) and tally "
        f"the cells where the targets hold into --out/{PRESSURE_SEEDS}.md (e.g. 0,1,2)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="with --seeds: run up to N seeds at once, one process each (default: the "
        "machine's cores; the results do not depend on it)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=None,
        help="simulated hours per run (pressure only; default: each level replays the whole trace)",
    )
    parser.add_argument(
        "--refusal-retries",
        type=int,
        default=0,
        metavar="N",
        help="pressure only: clients ask again after a refusal with a Retry-After, up to N "
        "times, that much later (the official openai client: 2; default 0, a refusal fails "
        "the request)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="pressure only: run each arm and level N times, with the same arrivals and "
        "other cluster seeds (network jitter, report phases, probes), and pool them: one "
        "run's slowest 1%% is luck as much as policy (default 1; N times the wall time)",
    )
    parser.add_argument(
        "--levels",
        default=None,
        metavar="L,L,...",
        help="pressure only: the load levels to run, as fractions of warm capacity "
        "(default 0.3,0.6,0.9,1.2; e.g. 0.3 reruns only the lowest)",
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    if args.name == DIGEST:
        try:
            digest.write_digest(Path(args.out), Path(args.doc))
        except digest.DigestError as error:
            print(f"sllm experiment {DIGEST}: {error}", file=sys.stderr)
            return 1
        print(args.doc)
        return 0
    try:
        problems = []
        if args.hours is not None and not args.hours > 0:
            problems.append("--hours must be > 0")
        if args.refusal_retries < 0:
            problems.append("--refusal-retries must be >= 0")
        if args.replicas < 1:
            problems.append("--replicas must be >= 1")
        seeds = _seeds(args.seeds, problems)
        if seeds and args.name != "pressure":
            problems.append("--seeds is for pressure only")
        if args.replicas > 1 and args.name != "pressure":
            problems.append("--replicas is for pressure only")
        levels = _levels(args.levels, problems)
        if levels and args.name != "pressure":
            problems.append("--levels is for pressure only")
        if args.jobs < 1:
            problems.append("--jobs must be >= 1")
        if problems:
            print(f"sllm experiment: {'; '.join(problems)}", file=sys.stderr)
            return 2
        options = RunOptions(
            quick=args.quick,
            seed=args.seed,
            hours=args.hours,
            refusal_retries=args.refusal_retries,
            replicas=args.replicas,
            levels=levels or None,
        )
        if seeds:
            written = run_pressure_seeds(Path(args.out), seeds, options, args.jobs)
        else:
            written = run_experiment(args.name, Path(args.out), options)
    except OSError as error:
        print(f"sllm experiment: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    if plots.unavailable():
        print(f"plots skipped: {plots.unavailable()}", file=sys.stderr)
    return 0


def _seeds(text: str | None, problems: list[str]) -> list[int]:
    """The seeds of ``--seeds`` (none when not given); a bad list adds to `problems`."""
    if text is None:
        return []
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        problems.append(f"--seeds must be seeds separated by commas, like 0,1,2; got {text!r}")
        return []
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        problems.append(f"--seeds must be distinct seeds >= 0; got {text!r}")
        return []
    return seeds


def _levels(text: str | None, problems: list[str]) -> tuple[float, ...]:
    """The load levels of ``--levels`` (none when not given); a bad list adds to
    `problems`."""
    if text is None:
        return ()
    try:
        levels = tuple(float(part) for part in text.split(","))
    except ValueError:
        problems.append(
            f"--levels must be fractions separated by commas, like 0.3,0.6; got {text!r}"
        )
        return ()
    if not all(0.0 < level <= 10.0 for level in levels) or len(set(levels)) != len(levels):
        problems.append(f"--levels must be distinct fractions of capacity in (0, 10]; got {text!r}")
        return ()
    return levels

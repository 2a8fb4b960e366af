"""HTTP timeouts and the connection limit, against a real coordinator process.

The limits are set the way an operator sets them (HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT,
HTTP_MAX_CONNECTIONS in the environment), and raw sockets on 127.0.0.1 play the slow
clients: a slowloris flood is closed within the header timeout while ordinary requests
keep their latency, a body that stops coming gets 408 and a close, and a connection over
the limit is closed at once while the ones under it are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from sllm.experiments.launcher import ServiceProcess, isolated_environment

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 0.5
BODY_TIMEOUT_S = 0.5
# A closed connection is seen by the client within this much beyond its timeout: the
# timer is exact, the rest is scheduling on two busy cores.
SLACK_S = 2.5
SLOW_CLIENTS = 200
SAMPLES = 15  # ordinary requests timed before and during the flood
# The flood may slow ordinary requests a little (it is 200 sockets to accept and close);
# the bound only catches a server that stalls behind them. Medians of the same run.
LATENCY_RATIO_MAX = 10.0
LIMIT = 20


@contextlib.asynccontextmanager
async def _coordinator(**env: str) -> AsyncIterator[int]:
    """A coordinator process with HTTP on 127.0.0.1 and `env`; yields its HTTP port."""
    settings = isolated_environment({"BIND_HOST": "127.0.0.1", "LOG_FORMAT": "json", **env})
    args = ["coordinator", "--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
    service = await ServiceProcess.start("coordinator", args, settings)
    try:
        yield int(service.events("http_listening")[0]["port"])
    finally:
        await service.stop()


async def _closed_by_server(reader: asyncio.StreamReader, deadline_s: float) -> bytes | None:
    """What the server sent before closing, or None if it is still open at the deadline."""
    received = bytearray()
    try:
        async with asyncio.timeout(deadline_s):
            while piece := await reader.read(4096):
                received.extend(piece)
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return bytes(received)


async def _median_latency(http: httpx.AsyncClient, url: str) -> float:
    times = []
    for _ in range(SAMPLES):
        began = time.perf_counter()
        answer = await http.get(url)
        times.append(time.perf_counter() - began)
        assert answer.status_code == 200
    return statistics.median(times)


async def test_a_slowloris_flood_is_closed_in_time_and_others_keep_their_latency() -> None:
    env = {"HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S), "HTTP_MAX_CONNECTIONS": "1000"}
    async with _coordinator(**env) as port, httpx.AsyncClient(timeout=5.0) as http:
        url = f"http://127.0.0.1:{port}/healthz"
        before = await _median_latency(http, url)

        slow = []
        opened_at = time.monotonic()
        for index in range(SLOW_CLIENTS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if index % 2:  # half send part of a request head, half send nothing at all
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append((reader, writer))
        during = await _median_latency(http, url)
        deadline = HEADER_TIMEOUT_S + SLACK_S - (time.monotonic() - opened_at)
        closings = await asyncio.gather(
            *(_closed_by_server(reader, max(deadline, 0.1)) for reader, _ in slow)
        )
        took = time.monotonic() - opened_at
        for _, writer in slow:
            writer.close()

        still_open = sum(1 for received in closings if received is None)
        assert still_open == 0, f"{still_open} of {SLOW_CLIENTS} slow connections still open"
        assert all(received == b"" for received in closings)  # closed without an answer
        assert took <= HEADER_TIMEOUT_S + SLACK_S
        assert during <= LATENCY_RATIO_MAX * before, (before, during)
        # And a fresh ordinary request is served as before.
        assert (await http.get(url)).status_code == 200


async def test_a_body_that_stops_coming_gets_408_and_a_close() -> None:
    env = {"HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT_S)}
    async with _coordinator(**env) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        began = time.monotonic()
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: 200\r\n\r\n"
            b'{"model": "llama-3.2-1b", "prom'
        )
        received = await _closed_by_server(reader, BODY_TIMEOUT_S + SLACK_S)
        writer.close()
        assert received is not None, "the connection is still open"
        assert time.monotonic() - began <= BODY_TIMEOUT_S + SLACK_S
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), received
        assert json.loads(body)["error"]["code"] == "request_timeout"


async def test_a_connection_over_the_limit_is_closed_at_once(eventually) -> None:
    # A long header timeout: only the limit may close anything here.
    env = {"HTTP_MAX_CONNECTIONS": str(LIMIT), "HTTP_HEADER_TIMEOUT": "30"}
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    async with _coordinator(**env) as port:
        held = []
        for _ in range(LIMIT):  # each answered once, then kept alive: counted as open
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            held.append((reader, writer))

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionError):
            writer.write(request)
        assert await _closed_by_server(reader, SLACK_S) == b""  # closed, nothing answered
        writer.close()

        _, first = held.pop()
        first.close()  # one under the limit again: a new connection is served

        async def served() -> bool:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
                writer.close()
                return head.startswith(b"HTTP/1.1 200 ")
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                return False

        await eventually(served, 5.0, "a connection under the limit served")
        for _, writer in held:
            writer.close()


def test_bad_limits_stop_startup_with_every_problem_listed() -> None:
    from sllm.config import ConfigError, Settings

    env = {"HTTP_HEADER_TIMEOUT": "0", "HTTP_BODY_TIMEOUT": "soon", "HTTP_MAX_CONNECTIONS": "0"}
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert sorted(problem.split("=")[0] for problem in error.value.problems) == [
        "HTTP_BODY_TIMEOUT",
        "HTTP_HEADER_TIMEOUT",
        "HTTP_MAX_CONNECTIONS",
    ]
    good = Settings.from_env({"HTTP_HEADER_TIMEOUT": "2.5", "HTTP_MAX_CONNECTIONS": "64"})
    assert (good.http_header_timeout, good.http_body_timeout) == (2.5, 60.0)
    assert good.http_max_connections == 64

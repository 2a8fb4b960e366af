"""The front door's client to workers keeps at most its bound of idle connections.

A small aiohttp server on 127.0.0.1 stands in for a worker: each POST waits until the test
lets every request in flight go, then answers one event. The server records whether each
request asked it to close the connection afterwards, and how many connections it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from sllm.api.worker_client import WorkerClient

pytestmark = pytest.mark.integration

KEEPALIVE_BOUND = 3
STREAMS = 8


class FakeWorker:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived = 0
        self.asked_to_close: list[bool] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        self.asked_to_close.append(request.headers.get("connection", "").lower() == "close")
        await self.release.wait()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def open_connections(self) -> int:
        assert self.runner is not None and self.runner.server is not None
        return len(self.runner.server.connections)


@contextlib.asynccontextmanager
async def fake_worker() -> AsyncIterator[FakeWorker]:
    worker = FakeWorker()
    app = web.Application()
    app.router.add_post("/v1/completions", worker.completions)
    worker.runner = web.AppRunner(app)
    await worker.runner.setup()
    site = web.TCPSite(worker.runner, "127.0.0.1", 0)
    await site.start()
    port = worker.runner.addresses[0][1]
    worker.url = f"http://127.0.0.1:{port}/v1/completions"
    try:
        yield worker
    finally:
        await worker.runner.cleanup()


async def _stream(client: WorkerClient, url: str) -> bytes:
    response = await client.post(url, b"{}", "req-test")
    try:
        return await response.read()
    finally:
        client.finish(response)


async def test_streams_beyond_the_bound_close_their_connections(eventually) -> None:
    client = WorkerClient(max_keepalive_connections=KEEPALIVE_BOUND)
    try:
        async with fake_worker() as worker:
            streams = [asyncio.ensure_future(_stream(client, worker.url)) for _ in range(STREAMS)]
            await eventually(lambda: worker.arrived == STREAMS, 5, "every request arrived")
            assert client.streams == STREAMS
            assert worker.open_connections() == STREAMS
            worker.release.set()
            assert await asyncio.gather(*streams) == [b"data: [DONE]\n\n"] * STREAMS

            # The first `KEEPALIVE_BOUND` went out below the bound; the rest asked to close.
            assert worker.asked_to_close.count(False) == KEEPALIVE_BOUND
            assert client.streams == 0
            await eventually(
                lambda: worker.open_connections() == KEEPALIVE_BOUND,
                5,
                "only the kept-alive connections left",
            )

            # Reused: a second round opens no connection beyond those kept.
            worker.release.clear()
            again = [asyncio.ensure_future(_stream(client, worker.url)) for _ in range(2)]
            await eventually(lambda: worker.arrived == STREAMS + 2, 5, "the second round")
            assert worker.open_connections() == KEEPALIVE_BOUND
            worker.release.set()
            await asyncio.gather(*again)
    finally:
        await client.close()


async def test_a_failed_post_is_not_counted_as_a_stream() -> None:
    client = WorkerClient()
    with socket_nobody_listens_on() as port:
        try:
            with pytest.raises(aiohttp.ClientConnectionError):
                await client.post(f"http://127.0.0.1:{port}/v1/completions", b"{}", "req-test")
            assert client.streams == 0
        finally:
            await client.close()


@contextlib.contextmanager
def socket_nobody_listens_on() -> Iterator[int]:
    """A port bound but not listening: a connection to it is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]

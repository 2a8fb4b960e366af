"""The front door's client to workers: pooled connections, bounded, and failures it reports.

A small aiohttp server on 127.0.0.1 stands in for a worker: each POST waits until the test
lets every request in flight go, then answers. The server counts the connections it holds
and the requests whose client went away first.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from sllm.api.worker_client import READ_BUFFER_BYTES, UpstreamClosed, WorkerClient

pytestmark = pytest.mark.integration

KEEPALIVE_BOUND = 3
STREAMS = 8


class FakeWorker:
    def __init__(self, answer: bytes = b"data: [DONE]\n\n") -> None:
        self.answer = answer
        self.release = asyncio.Event()
        self.arrived = 0
        self.request_ids: list[str] = []
        self.cancelled = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        self.request_ids.append(request.headers.get("x-request-id", ""))
        try:
            await self.release.wait()
        except asyncio.CancelledError:  # the client closed the connection
            self.cancelled += 1
            raise
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(self.answer), 4096):
            await response.write(self.answer[start : start + 4096])
        await response.write_eof()
        return response

    def open_connections(self) -> int:
        assert self.runner is not None and self.runner.server is not None
        return len(self.runner.server.connections)


@contextlib.asynccontextmanager
async def fake_worker(
    answer: bytes = b"data: [DONE]\n\n", keepalive_timeout: float = 75.0
) -> AsyncIterator[FakeWorker]:
    worker = FakeWorker(answer)
    app = web.Application()
    app.router.add_post("/v1/completions", worker.completions)
    # handler_cancellation: a handler is cancelled when its client disconnects.
    worker.runner = web.AppRunner(
        app, keepalive_timeout=keepalive_timeout, handler_cancellation=True
    )
    await worker.runner.setup()
    site = web.TCPSite(worker.runner, "127.0.0.1", 0)
    await site.start()
    worker.port = worker.runner.addresses[0][1]
    try:
        yield worker
    finally:
        await worker.runner.cleanup()


async def _stream(client: WorkerClient, port: int) -> bytes:
    response = await client.post("127.0.0.1", port, "/v1/completions", b"{}", "req-test")
    try:
        return await response.read()
    finally:
        client.finish(response)


async def test_streams_beyond_the_bound_close_their_connections(eventually) -> None:
    client = WorkerClient(max_keepalive_connections=KEEPALIVE_BOUND)
    try:
        async with fake_worker() as worker:
            streams = [asyncio.ensure_future(_stream(client, worker.port)) for _ in range(STREAMS)]
            await eventually(lambda: worker.arrived == STREAMS, 5, "every request arrived")
            assert client.streams == STREAMS
            assert worker.open_connections() == STREAMS
            worker.release.set()
            assert await asyncio.gather(*streams) == [b"data: [DONE]\n\n"] * STREAMS

            assert worker.request_ids == ["req-test"] * STREAMS
            assert client.streams == 0
            # Only `KEEPALIVE_BOUND` stay open for reuse; the others were closed.
            await eventually(
                lambda: worker.open_connections() == KEEPALIVE_BOUND,
                5,
                "only the kept-alive connections left",
            )

            # Reused: a second round opens no connection beyond those kept.
            worker.release.clear()
            again = [asyncio.ensure_future(_stream(client, worker.port)) for _ in range(2)]
            await eventually(lambda: worker.arrived == STREAMS + 2, 5, "the second round")
            assert worker.open_connections() == KEEPALIVE_BOUND
            worker.release.set()
            await asyncio.gather(*again)
    finally:
        await client.close()


async def test_a_long_answer_arrives_whole_through_paused_reads() -> None:
    answer = bytes(range(256)) * (4 * READ_BUFFER_BYTES // 256)  # 4x the read buffer
    client = WorkerClient()
    try:
        async with fake_worker(answer) as worker:
            worker.release.set()
            response = await client.post(
                "127.0.0.1", worker.port, "/v1/completions", b"{}", "req-test"
            )
            await asyncio.sleep(0)  # let it arrive past the buffer's bound unread
            try:
                assert await response.read() == answer
            finally:
                client.finish(response)
            # Read to its end: the connection is reused.
            assert await _stream(client, worker.port) == answer
            assert worker.open_connections() == 1
    finally:
        await client.close()


async def test_an_answer_left_unread_closes_its_connection(eventually) -> None:
    client = WorkerClient()
    try:
        async with fake_worker() as worker:
            pending = asyncio.ensure_future(
                client.post("127.0.0.1", worker.port, "/v1/completions", b"{}", "req-test")
            )
            await eventually(lambda: worker.arrived == 1, 5, "the request arrived")
            pending.cancel()  # the client went away before the answer
            await asyncio.gather(pending, return_exceptions=True)
            assert client.streams == 0
            await eventually(lambda: worker.cancelled == 1, 5, "the worker saw it go")
    finally:
        await client.close()


async def test_a_connection_the_worker_closed_while_idle_is_not_reused(eventually) -> None:
    client = WorkerClient()
    try:
        async with fake_worker(keepalive_timeout=0.05) as worker:
            worker.release.set()
            assert await _stream(client, worker.port) == b"data: [DONE]\n\n"
            await eventually(lambda: worker.open_connections() == 0, 5, "the worker closed it")
            assert await _stream(client, worker.port) == b"data: [DONE]\n\n"
    finally:
        await client.close()


async def test_a_request_the_worker_drops_on_a_reused_connection_goes_again_on_a_new_one() -> None:
    """The worker's keep-alive runs out just as the pool hands the connection out: it closes
    it without answering the request that arrived. The request goes again, once."""
    answered: list[int] = []  # the connection number of each answer

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(answered)
        answers = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if number == 0 and answers == 1:
                break  # the first connection: dropped as its second request arrives
            answered.append(number)
            answers += 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(worker, "127.0.0.1", 0)
    client = WorkerClient()
    try:
        port = server.sockets[0].getsockname()[1]
        for _ in range(2):
            response = await client.post("127.0.0.1", port, "/v1/completions", b"{}", "req")
            try:
                assert await response.read() == b"ok"
            finally:
                client.finish(response)
        assert answered == [0, 1]  # the second answer came on a second connection
        assert client.streams == 0
    finally:
        await client.close()
        server.close()


async def test_an_answer_that_is_not_http_is_a_connection_error() -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    client = WorkerClient()
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(UpstreamClosed, match="not HTTP"):
            await client.post("127.0.0.1", port, "/v1/completions", b"{}", "req-test")
        assert client.streams == 0
    finally:
        await client.close()
        server.close()


async def test_a_failed_post_is_not_counted_as_a_stream() -> None:
    client = WorkerClient()
    with socket_nobody_listens_on() as port:
        try:
            with pytest.raises(ConnectionRefusedError):
                await client.post("127.0.0.1", port, "/v1/completions", b"{}", "req-test")
            assert client.streams == 0
        finally:
            await client.close()


@contextlib.contextmanager
def socket_nobody_listens_on() -> Iterator[int]:
    """A port bound but not listening: a connection to it is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]

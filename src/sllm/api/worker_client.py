"""The front door's HTTP/1.1 client to workers: pooled keep-alive connections, streamed reads.

Why not a general client: the front door opens one upstream stream per request, so the
client's cost per request is the front door's cost, and it needs one thing only: POST a
JSON body to a worker and read the answer as it comes. aiohttp did that for about a fifth
of the front door's CPU per request (`docs/benchmarks.md`, "Gateway"); this client writes
the request in one call and parses the answer with httptools (the C parser uvicorn uses
on the serving side), for a fraction of that.

Theory of operation:

- **Connections** are asyncio protocols, one response at a time. A response read to its
  end (`UpstreamResponse.complete`) leaves its connection reusable; `finish` puts it back
  in the pool of its worker. A response finished early (the client went away, or the
  stream broke) closes its connection, which is how the worker learns that nobody wants
  the rest.
- **The pool** keeps at most `max_keepalive_connections` idle connections in all; one more
  is closed when it is finished. An idle connection is used only while it is younger than
  `IDLE_TIMEOUT_S`, so the pool never hands out one the worker is closing at that moment
  (uvicorn closes idle connections after `sllm.config.HTTP_KEEP_ALIVE_S`). One the worker
  closed is dropped from the pool when that is noticed.
- **Reads** are pushed: the protocol buffers what the parser decodes (chunked transfer
  undone) and wakes the reader. Past `READ_BUFFER_BYTES` unread, it pauses reading from
  the worker until the front door has sent it on, so a slow client cannot make the front
  door buffer a fast worker's whole answer.
- **Credentials.** Built with a `credential_key` (derived from the cluster secret), the
  client signs every request it sends (`sllm.api.credential`), so that a worker that has
  the secret serves it.
- **Failures** are `ConnectionError`s (`UpstreamClosed` for a connection that ended or an
  answer the parser refused, the OS's own for a refused connection) or `TimeoutError`
  (connecting took over `CONNECT_TIMEOUT_S`). Timeouts on reads are the gateway's.

Not handled: TLS to workers, HTTP/2, redirects, bodies in requests other than POST.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import httptools

from sllm.api import credential
from sllm.api.request_id import CLIENT_HEADER
from sllm.config import HTTP_KEEP_ALIVE_S

# Connections to workers: established quickly or not at all (the worker is then tried
# elsewhere); reads are bounded by the gateway's own first-byte and between-event timeouts.
CONNECT_TIMEOUT_S = 3.0
# Idle connections kept open to workers for reuse, in all; more are closed once finished.
MAX_KEEPALIVE_CONNECTIONS = 256
# An idle connection is dropped before the worker's server would close it, so the pool
# never hands out one the worker is closing at that moment.
IDLE_TIMEOUT_S = HTTP_KEEP_ALIVE_S - 1.0
# Unread bytes of one answer past which reading from the worker pauses.
READ_BUFFER_BYTES = 64 * 1024


class UpstreamClosed(ConnectionError):
    """The worker's connection ended, or sent what is not HTTP, before the answer ended."""


class UpstreamResponse:
    """A worker's answer: its status once the headers are in, then its body as it comes."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.status = 0
        self.complete = False  # the whole answer has arrived
        self._buffer = bytearray()
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def readany(self) -> bytes:
        """What has arrived since the last read (waiting for something); b"" at the end."""
        while not self._buffer and not self.complete and self._error is None:
            await self._wait()
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self.connection.resume()
            return data
        if self._error is not None:
            raise self._error
        return b""

    async def read(self) -> bytes:
        """The rest of the body, to its end."""
        pieces = []
        while piece := await self.readany():
            pieces.append(piece)
        return b"".join(pieces)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- called by the connection -----------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._buffer.extend(data)
        if len(self._buffer) > READ_BUFFER_BYTES:
            self.connection.pause()
        self._wake()

    def _fail(self, error: Exception) -> None:
        if not self.complete and self._error is None:
            self._error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One kept-alive connection to a worker; the httptools parser calls its ``on_*``."""

    def __init__(self, key: tuple[str, int], client: WorkerClient) -> None:
        self.key = key
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.headers_in: asyncio.Future[None] | None = None
        self.open = False
        self.paused = False
        self.idle_since = 0.0

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._lost(UpstreamClosed(f"the worker's answer is not HTTP: {error}"))
            self.close()

    def eof_received(self) -> None:
        self.open = False  # the transport closes itself (returning None says so)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(UpstreamClosed("the worker closed the connection"))
        self.client._forget(self)

    # -- the parser's callbacks ---------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.status = self.parser.get_status_code()
        if self.headers_in is not None and not self.headers_in.done():
            self.headers_in.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response.complete = True
            self.response._wake()
        if not self.parser.should_keep_alive():
            self.open = False  # the worker closes it: never reused

    # -- the client's side ---------------------------------------------------------------

    def send(self, request: bytes) -> UpstreamResponse:
        assert self.transport is not None
        self.response = UpstreamResponse(self)
        self.headers_in = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.response

    def usable(self) -> bool:
        """Open, as far as this side knows: not closed by either end."""
        return self.open and self.transport is not None and not self.transport.is_closing()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    def _lost(self, error: Exception) -> None:
        self.open = False
        if self.headers_in is not None and not self.headers_in.done():
            self.headers_in.set_exception(error)
        if self.response is not None:
            self.response._fail(error)


class WorkerClient:
    """POSTs to workers whose answers are read as streams; `finish` each one exactly once."""

    def __init__(
        self,
        max_keepalive_connections: int = MAX_KEEPALIVE_CONNECTIONS,
        credential_key: bytes | None = None,
    ) -> None:
        self.max_keepalive_connections = max_keepalive_connections
        self.credential_key = credential_key  # None: requests go unsigned
        self.streams = 0  # posted and not finished yet
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._idle_count = 0
        self._connections: set[_Connection] = set()

    async def post(
        self,
        host: str,
        port: int,
        path: str,
        body: bytes,
        request_id: str,
        client_request_id: str = "",
    ) -> UpstreamResponse:
        """Send `body` (JSON) to `path` on the worker at `host`:`port` under `request_id`
        (the worker's key for it); return its answer once the headers are in.

        `client_request_id`, when given, is the id the client knows the request by, which
        the worker's answer carries.
        """
        extra = f"{CLIENT_HEADER}: {client_request_id}\r\n" if client_request_id else ""
        if self.credential_key is not None:
            signed = credential.sign(
                key=self.credential_key,
                method="POST",
                path=path,
                request_id=request_id,
                body=body,
                now=time.time(),
            )
            extra += f"{credential.HEADER}: {signed}\r\n"
        request = (
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"x-request-id: {request_id}\r\n{extra}\r\n"
        ).encode("latin-1") + body
        key = (host, port)
        pooled = self._pooled(key)
        if pooled is not None:
            try:
                return await self._exchange(pooled, request)
            except UpstreamClosed:
                # The worker closed the idle connection as it was taken (its keep-alive ran
                # out): a request arriving then is not served, so it goes again, once.
                pass
        return await self._exchange(await self._connect(key), request)

    def finish(self, response: UpstreamResponse) -> None:
        """Done with `response`: its connection goes back to the pool if the answer was read
        to its end and the pool has room, and is closed otherwise."""
        self.streams -= 1
        connection = response.connection
        connection.response = None
        connection.headers_in = None
        reusable = response.complete and connection.usable()
        if reusable and self._idle_count < self.max_keepalive_connections:
            connection.resume()  # paused only for an answer left unread: nothing more comes
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.key, deque()).append(connection)
            self._idle_count += 1
        else:
            self._drop(connection)

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        for connection in list(self._connections):
            connection.close()
        self._connections.clear()
        self._idle.clear()
        self._idle_count = 0

    async def _exchange(self, connection: _Connection, request: bytes) -> UpstreamResponse:
        """Send `request` on `connection`; its answer once the headers are in."""
        response = connection.send(request)
        self.streams += 1
        try:
            assert connection.headers_in is not None
            await connection.headers_in
        except BaseException:
            self.finish(response)
            raise
        return response

    def _pooled(self, key: tuple[str, int]) -> _Connection | None:
        """The most recently used idle connection to `key` still fit for use, if any."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable() and now - connection.idle_since < IDLE_TIMEOUT_S:
                return connection
            self._drop(connection)
        return None

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, connection = await loop.create_connection(lambda: _Connection(key, self), *key)
        except TimeoutError:
            raise TimeoutError(
                f"connecting to {key[0]}:{key[1]} took over {CONNECT_TIMEOUT_S:g} s"
            ) from None
        self._connections.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._connections.discard(connection)

    def _forget(self, connection: _Connection) -> None:
        """`connection` has closed: out of the pool, if it was idle there."""
        self._connections.discard(connection)
        idle = self._idle.get(connection.key)
        if idle is not None and connection in idle:
            idle.remove(connection)
            self._idle_count -= 1

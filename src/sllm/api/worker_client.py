"""The front door's HTTP client to workers: aiohttp's pooled client, with idle connections bounded.

Why aiohttp: the front door opens one upstream stream per request, so the client's cost per
request is the front door's cost. aiohttp parses responses in C and hands out a pooled
connection without checking every other one (httpx's pool did, on each request, and that
was most of the front door's CPU).

What aiohttp's pool does not bound is how many idle connections it keeps: every stream in
flight at a peak would stay open to its worker afterwards. `WorkerClient` keeps at most
`MAX_KEEPALIVE_CONNECTIONS` by counting its streams in flight: a stream opened while that
many are already open asks the worker to close its connection once it ends
(``Connection: close``). Only streams opened below the bound can leave a connection in the
pool, and each of those takes an idle one first when there is one, so idle plus in use by
such streams never exceeds the bound.

Not handled yet: TLS to workers, HTTP/2.
"""

from __future__ import annotations

import aiohttp

from sllm.runtime.http import KEEP_ALIVE_S

# Connections to workers: established quickly or not at all (the worker is then tried
# elsewhere); reads are bounded by the gateway's own first-byte and between-event timeouts.
CONNECT_TIMEOUT_S = 3.0
# Connections to workers: enough for 1,000 concurrent streams across workers.
MAX_CONNECTIONS = 2048
# Idle connections kept open to workers for reuse; streams beyond it close theirs.
MAX_KEEPALIVE_CONNECTIONS = 256
# An idle connection is dropped before the worker's server would close it, so the pool
# never hands out one the worker is closing at that moment.
IDLE_TIMEOUT_S = KEEP_ALIVE_S - 1.0


class WorkerClient:
    """POSTs to workers whose responses are read as streams; `finish` each one exactly once."""

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        max_keepalive_connections: int = MAX_KEEPALIVE_CONNECTIONS,
    ) -> None:
        self.max_connections = max_connections
        self.max_keepalive_connections = max_keepalive_connections
        self.streams = 0  # opened and not finished yet
        # Made on first use: aiohttp binds a session to the running event loop.
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=IDLE_TIMEOUT_S
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            # Workers set no cookies, and one client's must never reach another's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Events are relayed byte for byte: ask for no compression and undo none.
            skip_auto_headers=("Accept-Encoding",),
            auto_decompress=False,
        )

    async def post(self, url: str, body: bytes, request_id: str) -> aiohttp.ClientResponse:
        """Send `body` (JSON) and return the response once its headers arrived."""
        if self._session is None:
            self._session = self._new_session()
        headers = {"content-type": "application/json", "x-request-id": request_id}
        if self.streams >= self.max_keepalive_connections:
            headers["connection"] = "close"
        self.streams += 1
        try:
            return await self._session.post(url, data=body, headers=headers)
        except BaseException:
            self.streams -= 1
            raise

    def finish(self, response: aiohttp.ClientResponse) -> None:
        """Close `response`: its connection goes back to the pool only if it was read to the end.

        Closing a stream that is still running closes its connection, which is how the
        worker learns that nobody wants the rest.
        """
        response.close()
        self.streams -= 1

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

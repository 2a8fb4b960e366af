"""The services' HTTP listener: health, readiness and Prometheus metrics on FastAPI and uvicorn.

Why it exists: every long-lived service (coordinator, worker, node) needs a liveness and a
readiness endpoint for container health checks and Kubernetes probes, and ``/metrics`` for
Prometheus. `create_app` builds that ASGI app; the OpenAI-compatible front door adds its
routes to the same app (``app.include_router(...)``), so there is one HTTP server per
process. It needs the ``serve`` extra; `sllm.runtime.monitoring` is the stdlib-only side
that decides whether to import this module at all.

How it runs: `HttpListener` binds its own socket (so a port of 0 is known at once and a bind
error is an `OSError` here, not uvicorn's ``sys.exit``) and runs ``uvicorn.Server.serve`` as
a task in the service's own event loop, next to the UDP endpoint. Every route is ``async``,
so it runs on that loop and reads the core's state without locks. uvicorn's signal
handling is switched off: the service's `run_service` owns SIGINT and SIGTERM and calls
`HttpListener.stop`, which is bounded by `STOP_TIMEOUT_S`.

Endpoints:

- ``GET /healthz``: 200 while the event loop answers (liveness).
- ``GET /readyz``: 200 when the service's readiness check passes, else 503 with the reason.
- ``GET /metrics``: the service's own `CollectorRegistry` (never the global one), in the
  Prometheus text format, or OpenMetrics when the scraper asks for it.

Not handled yet: TLS, HTTP/2, compression of ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sllm.logs import log_event
from sllm.runtime.monitoring import Readiness

log = logging.getLogger("sllm.http")

# Requests in flight get this long to finish once stopping starts; health and metrics
# answer in milliseconds, so one second only waits out a slow scrape (uvicorn takes whole
# seconds).
GRACEFUL_SHUTDOWN_S = 1
# The whole stop, after which the server task is cancelled: inside the services' 3-second
# shutdown grace, with room for their own UDP goodbye.
STOP_TIMEOUT_S = 1.5
# Pending connections the kernel queues before uvicorn accepts them (uvicorn's default).
BACKLOG = 2048
# An idle kept-alive connection is closed after this long (uvicorn's default, named: the
# front door's client drops its idle connections to workers before this).
KEEP_ALIVE_S = 5
# uvicorn's HTTP parser: httptools (in C), which the serve extra installs and the front
# door's client to workers needs too; without it HTTP is off (`HTTP_MODULES`).
HTTP_PARSER = "httptools"


def create_app(
    service: str, registry: CollectorRegistry, readiness: Callable[[], Readiness]
) -> FastAPI:
    """The health, readiness and metrics app of one service."""
    app = FastAPI(title=f"sllm {service}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state = readiness()
        body = {
            "status": "ready" if state.ready else "not_ready",
            "service": service,
            "reason": state.reason,
        }
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    return app


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the hosting service owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (IPv4, or IPv6 for an address with a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every streamed token after the first waits for a delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # A restarted service must rebind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpListener:
    """`create_app` served by uvicorn in the running loop until `stop`."""

    def __init__(
        self,
        service: str,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Callable[[], Readiness],
        also_on: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.host = host
        self.also_on = [extra for extra in dict.fromkeys(also_on) if extra != host]
        self.requested_port = port
        self.app = create_app(service, registry, readiness)
        self._sockets: list[socket.socket] = []
        self._port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await `closer` after the server stops (routes close what they opened)."""
        self._closers.append(closer)

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when asked for 0); 0 before `start`."""
        return self._port

    @property
    def http_parser(self) -> str:
        """The name of uvicorn's protocol class serving HTTP; "" before `start`."""
        if self._server is None:
            return ""
        return self._server.config.http_protocol_class.__name__

    async def start(self) -> None:
        """Bind (raising `OSError` when the port is taken) and start serving.

        `host` is bound first, then each address of `also_on` on the same port. Connections
        are accepted into the socket's backlog from the moment it listens, so the listener
        counts as up as soon as this returns.
        """
        self._sockets = [bind_tcp(self.host, self.requested_port)]
        self._port = int(self._sockets[0].getsockname()[1])
        try:
            for extra in self.also_on:
                self._sockets.append(bind_tcp(extra, self._port))
        except OSError:
            self._close_sockets()
            raise
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # keep the process's logging as `configure_logging` set it
            log_level="warning",  # uvicorn's own INFO lines are not fixed event names
            access_log=False,
            server_header=False,
            http=HTTP_PARSER,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        config.load()  # here rather than in `serve`, to log the parser it chose
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=list(self._sockets)))
        self._task.add_done_callback(self._served)
        log_event(
            log,
            logging.INFO,
            "http_listening",
            service=self.service,
            host=self.host,
            port=self.port,
            http_parser=self.http_parser,
            **({"also_on": ",".join(self.also_on)} if self.also_on else {}),
        )

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def _served(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log_event(
                log,
                logging.ERROR,
                "http_crashed",
                service=self.service,
                error=str(task.exception()),
            )

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish, and close; at most `STOP_TIMEOUT_S`."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
            except TimeoutError:
                self._server.force_exit = True
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                log_event(log, logging.WARNING, "http_stop_timed_out", service=self.service)
            except Exception:  # logged by `_served`; stopping goes on
                pass
        self._close_sockets()
        for closer in self._closers:
            await closer()

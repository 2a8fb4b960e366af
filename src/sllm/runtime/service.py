"""Running a long-lived service: start, wait for SIGINT/SIGTERM, stop within a bound.

Every live process (coordinator, worker, node) is a `Service`: `start()` binds and
spawns its loops, `stop()` releases everything. `run_service` hosts one in `asyncio.run`,
turns the first SIGINT or SIGTERM into a clean stop, gives the stop `SHUTDOWN_GRACE_S`,
and restores the previous signal handlers afterwards (as uvicorn does).

Once a service has started, `tune_gc` sets the garbage collector for a server's life: the
objects made by imports and startup (most of the heap) are frozen out of every later
collection, and young collections run less often, since each request in flight holds
hundreds of live objects that a small threshold keeps walking. Measured by
`sllm bench gateway`: at CPython's default thresholds the collector took about a tenth of
the front door's CPU. Full collections, which free cyclic garbage that has grown old (an
evicted model's network), still come about as often as with the defaults. What is made
after startup (a model loaded on demand) is never frozen.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import Protocol

from sllm.logs import log_event

# The bound is 5 s from signal to exit; stopping a service only closes sockets and
# cancels tasks, so 3 s leaves room for the interpreter to exit.
SHUTDOWN_GRACE_S = 3.0

# The collector's thresholds. Young collections every 10,000 net new container objects
# (CPython: 700): enough for thousands of requests in flight between two, while the young
# cyclic garbage waiting for one stays within a few megabytes. Each older generation after
# every third collection of the younger one (CPython: every eleventh), so that a full
# collection still comes every ~90,000 net new objects (CPython: ~84,700).
GC_THRESHOLDS = (10_000, 2, 2)

log = logging.getLogger("sllm.service")


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signalled(service: Service, stop: asyncio.Event | None = None) -> None:
    """Start `service`, run until SIGINT/SIGTERM (or `stop` is set), then stop it."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await service.start()
        tune_gc()
        await stop.wait()
        log_event(log, logging.INFO, "shutting_down", service=service.name)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        try:
            await asyncio.wait_for(service.stop(), SHUTDOWN_GRACE_S)
        except TimeoutError:
            log_event(log, logging.WARNING, "shutdown_timed_out", service=service.name)
    log_event(log, logging.INFO, "stopped", service=service.name)


def run_service(service: Service) -> int:
    """Host `service` in a fresh event loop; return the process exit code."""
    try:
        asyncio.run(serve_until_signalled(service))
    except OSError as error:
        log_event(log, logging.ERROR, "start_failed", service=service.name, error=str(error))
        return 1
    return 0


def tune_gc() -> None:
    """Freeze what startup made, and collect young objects less often (module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

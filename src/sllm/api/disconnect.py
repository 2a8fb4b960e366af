"""Noticing a client that goes away, before its response starts or while it streams.

Starlette notices a disconnect only while it streams a response; a handler that waits
(for a worker's first byte on the front door, for a queue slot on a worker) would go on
waiting for a client that is gone and then do the work for nobody. `unless_disconnected`
runs such a wait next to a watcher of the ASGI ``receive`` channel and cancels the wait
when the client disconnects. The front door's relay runs under it too, in place of
Starlette's per-response task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its response started."""


async def _disconnected(receive: Receive) -> None:
    """Return once the client has disconnected (the request body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`; cancel it and raise `ClientGone` if the client disconnects first.

    `receive` is the request's ASGI channel (``request.receive`` in a route).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientGone
    return task.result()

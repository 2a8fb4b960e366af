"""A blocking engine behind the `Engine` protocol: each call in a worker thread.

A real engine's calls block for seconds (reading a checkpoint, a forward pass per token).
`InThread` runs each one in the event loop's default executor, and streams a generation
token by token through a queue into the loop. Closing the stream early sets a flag the
blocking generator checks between two tokens, then waits for its thread to return, so no
generation outlives its request.

The blocking engine itself is built on first use, in a thread, once: building it imports
its libraries (torch takes seconds), which must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Protocol

from sllm.core.tiers import Tier
from sllm.engines.base import Delta, GenerationParams, Prompt


class BlockingEngine(Protocol):
    """What `InThread` runs in threads (`sllm.engines.transformers_engine.TransformersEngine`)."""

    def load(self, name: str, source: Tier) -> None: ...

    def evict(self, name: str, source: Tier, destination: Tier) -> None: ...

    def host_copy_bytes(self, name: str) -> int | None: ...

    def encode_prompt(self, name: str, prompt: Prompt) -> list[int]: ...

    def generate(
        self,
        name: str,
        prompt_ids: list[int],
        params: GenerationParams,
        cancelled: Callable[[], bool],
    ) -> Iterator[Delta]: ...


class InThread:
    """The async half of a ``THREAD`` engine; subclasses declare the rest of `Engine`."""

    def __init__(self, make: Callable[[], BlockingEngine]) -> None:
        self._make = make
        self._blocking: BlockingEngine | None = None
        self._lock = threading.Lock()

    def blocking(self) -> BlockingEngine:
        """The blocking engine, built on first use (from any thread, once)."""
        with self._lock:
            if self._blocking is None:
                self._blocking = self._make()
            return self._blocking

    async def load(self, model: str, source: Tier) -> None:
        await asyncio.to_thread(lambda: self.blocking().load(model, source))

    async def evict(self, model: str, source: Tier, destination: Tier) -> None:
        await asyncio.to_thread(lambda: self.blocking().evict(model, source, destination))

    def host_copy_bytes(self, model: str) -> int | None:
        """Asked of the blocking engine directly (it answers at once); None before it is
        built, when it holds nothing."""
        blocking = self._blocking
        return None if blocking is None else blocking.host_copy_bytes(model)

    async def encode_prompt(self, model: str, prompt: Prompt) -> Sequence[int]:
        return await asyncio.to_thread(lambda: self.blocking().encode_prompt(model, prompt))

    async def generate(
        self,
        model: str,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        batch_size: int,  # each request runs its own forward passes (no batching yet)
    ) -> AsyncGenerator[Delta, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()
        stop = threading.Event()
        ids = list(prompt_ids)

        def produce() -> None:
            try:
                for delta in self.blocking().generate(model, ids, params, stop.is_set):
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
            except BaseException as error:  # handed to the stream, which ends with an error
                loop.call_soon_threadsafe(queue.put_nowait, error)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        producer = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await asyncio.shield(producer)

"""What the worker's routes (`sllm.api.worker_api`) ask of the worker: start a request, stream it.

Why a module of its own: the worker's runtime implements `GenerationBackend`
(`sllm.runtime.generation.HttpRequests`) and must import on a bare ``python3``, while the
routes need FastAPI. This module imports only the standard library and the engines'
types, so the runtime reads it from below without pulling in the HTTP stack, and the API
never imports the runtime (`tests/test_layering.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from sllm.engines.base import Delta, GenerationParams, Prompt


@dataclass(slots=True)
class Generation:
    """An admitted, running request: its prompt size, its stream of deltas, and `close`.

    `close` ends the request as cancelled unless the stream already finished it; it may be
    called any number of times.
    """

    prompt_tokens: int
    deltas: AsyncIterator[Delta]
    close: Callable[[], None]


class GenerationBackend(Protocol):
    """The worker, as its routes see it."""

    def model_names(self) -> Collection[str]: ...

    async def start(
        self,
        request_id: str,
        model: str,
        prompt: Prompt,
        params: GenerationParams,
    ) -> Generation:
        """Admit and start the request; raises `ApiError` when this worker cannot take it."""
        ...

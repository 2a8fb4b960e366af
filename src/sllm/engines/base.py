"""What every engine agrees on: generation parameters and the deltas a stream yields."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """New text since the last delta; `finish_reason` is set on the last one.

    `completion_tokens` counts the tokens generated so far.
    """

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0

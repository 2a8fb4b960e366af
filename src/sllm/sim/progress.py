"""A one-line progress bar on stderr, shown only when stderr is a terminal.

Why hand-written: the simulator is standard library only (the seed scripts run on a bare
``python3``), so it cannot depend on a progress-bar package. This one draws at most
`REDRAWS_PER_S` times a second, and draws nothing at all into a pipe, a file or a test's
captured output.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

REDRAWS_PER_S = 10  # smooth to the eye, and a negligible cost to a long run
WIDTH = 30


class Progress:
    """``with Progress("exp1") as bar: bar.update(0.5)``; fractions in [0, 1]."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self._last_draw = 0.0
        self._started = time.monotonic()
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def update(self, fraction: float, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < 1.0 / REDRAWS_PER_S and fraction < 1.0:
            return
        self._last_draw = now
        fraction = min(1.0, max(0.0, fraction))
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        elapsed = now - self._started
        text = f"\r{self.label} [{bar}] {fraction:4.0%} {elapsed:5.0f}s {note}"
        self.stream.write(text[:120].ljust(80))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

"""Progress on stderr: a redrawn bar on a terminal, plain lines anywhere else.

Why hand-written: the simulator is standard library only (the seed scripts run on a bare
``python3``), so it cannot depend on a progress-bar package.

- **On a terminal** one line is redrawn in place, at most `REDRAWS_PER_S` times a second.
- **Into a pipe or a file** (a CI log, ``nohup``, ``2> run.log``) a carriage return would
  pile every redraw onto one line, so a plain line is printed instead, at most one every
  `PLAIN_LINE_PERIOD_S` and one at the end: a long run shows it is alive and when it will
  end, and a log gets a few dozen lines, not thousands.

A line reads ``exp1 [#########-----] 60% 0:12 of ~0:20, ETA 0:08 run 3/5``: the share
done, the time spent, the total time the run will take and the time left, both estimated
from the rate so far (work is assumed to go on at that rate, so the caller's share should
weigh each piece of work by its cost: `sllm.experiments.summary.Context` does), then the
caller's note. Until some work is done there is no rate, and the estimates show as ``?``.
Only the commands that run simulations use it (``sllm simulate``, ``sllm experiment``,
``sllm bench simulator``), never the services, whose stderr is their log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

REDRAWS_PER_S = 10  # smooth to the eye, and a negligible cost to a long run
# A plain line every 10 s: often enough to see a run is alive, few enough that an
# experiment of several minutes writes a screenful.
PLAIN_LINE_PERIOD_S = 10.0
WIDTH = 30
# The longest line drawn; a terminal narrower than this wraps it (a note can be long).
LINE_MAX = 120
# A shorter line is padded to this, so that it covers the longer one drawn before it.
LINE_MIN = 80
UNKNOWN = "?"


def clock_text(seconds: float) -> str:
    """``0:07``, ``12:34`` or ``2:03:04``: minutes and seconds, hours when there are any."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render_line(label: str, fraction: float, elapsed_s: float, note: str = "") -> str:
    """The bar's text at `fraction` done after `elapsed_s` seconds (no carriage return)."""
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * WIDTH)
    bar = "#" * filled + "-" * (WIDTH - filled)
    if fraction > 0.0:
        total_s = elapsed_s / fraction
        total, left = f"~{clock_text(total_s)}", clock_text(total_s - elapsed_s)
    else:
        total, left = UNKNOWN, UNKNOWN
    text = f"{label} [{bar}] {fraction:4.0%} {clock_text(elapsed_s)} of {total}, ETA {left}"
    return f"{text} {note}" if note else text


class Progress:
    """``with Progress("exp1") as bar: bar.update(0.5)``; fractions in [0, 1].

    `clock` is the time source in seconds (a fake one in tests); `plain` prints plain lines
    even on a terminal.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        plain: bool = False,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        # `plain`: lines even on a terminal, where several processes share it (one
        # redrawn line each would overwrite the others')
        self.terminal = not plain and bool(isatty and isatty())
        self._clock = clock
        self._started = clock()
        self._last_draw: float | None = None
        self._drawn = False
        self._ended = False

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
        now = self._clock()
        period = 1.0 / REDRAWS_PER_S if self.terminal else PLAIN_LINE_PERIOD_S
        # The first plain line waits a period too: a run shorter than that prints one line.
        last = self._last_draw if self._last_draw is not None or self.terminal else self._started
        recent = last is not None and now - last < period
        if (recent and fraction < 1.0) or (self._ended and not self.terminal):
            return  # (a plain line for the end is printed once, however often it is told)
        self._ended = fraction >= 1.0
        self._last_draw = now
        line = render_line(self.label, fraction, now - self._started, note)[:LINE_MAX]
        if self.terminal:
            self.stream.write("\r" + line.ljust(LINE_MIN))
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.terminal and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

"""Loader for production LLM request traces in the Azure LLM inference 2023 format.

Why: synthetic processes only say what we assume; a real trace says what a service saw. The
Azure LLM inference trace 2023 (Patel et al., "Splitwise: Efficient generative LLM inference
using phase splitting", ISCA 2024; CC-BY 4.0) records, per request, its arrival time and its
prompt and output token counts. Its schema is three columns:

    TIMESTAMP,ContextTokens,GeneratedTokens
    2023-11-16 18:15:46.6805900,374,44

Any file of that schema loads: the ``conv`` and ``code`` services, or a file of your own.
Columns are found by header name, so their order does not matter and extra columns are ignored.

Timestamps are parsed by hand into integer nanoseconds (the trace has 7 fractional digits,
more than `datetime` keeps), so offsets are exact before they become floats, and a 20,000-row
file loads in tens of milliseconds. Offsets are seconds from the earliest row, which is the
first row of a time-sorted file; a file that is not sorted is sorted (stably) on load.

A malformed file raises `TraceFormatError` (a `ValueError`) naming the file and line.

Not handled yet: time zones or UTC offsets in TIMESTAMP (the Azure trace has none), other
trace schemas (BurstGPT, Mooncake), and streaming a file larger than memory.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

TIMESTAMP_COLUMN = "TIMESTAMP"
PROMPT_COLUMN = "ContextTokens"
OUTPUT_COLUMN = "GeneratedTokens"

_NS_PER_S = 1_000_000_000
# "YYYY-MM-DD HH:MM:SS" with an optional fraction of 1..9 digits (the Azure trace has 7).
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?", re.ASCII
)


class TraceFormatError(ValueError):
    """A trace file that does not follow the expected schema; names the file and line."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestTrace:
    """Arrival offsets and token counts of a loaded trace, one entry per request.

    Column-oriented (three equal-length tuples) so that a large trace costs three lists,
    not one object per row. It is also an arrival source for `build_workload`.
    """

    path: str
    offsets_s: tuple[float, ...]
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.offsets_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError("offsets_s, prompt_tokens and output_tokens differ in length")

    def __len__(self) -> int:
        return len(self.offsets_s)

    @property
    def span_s(self) -> float:
        """Seconds from the first to the last request (0.0 for an empty trace)."""
        return self.offsets_s[-1] if self.offsets_s else 0.0

    def times(self, rng: random.Random, duration_s: float | None) -> Iterator[float]:
        """The trace's offsets below `duration_s` (all of them when None); `rng` is unused."""
        del rng  # a replayed trace is already fixed
        if duration_s is None:
            return iter(self.offsets_s)
        return (t for t in self.offsets_s if t < duration_s)


def load_azure_trace(
    path: str | os.PathLike[str],
    *,
    time_scale: float = 1.0,
    limit: int | None = None,
    duration_s: float | None = None,
) -> RequestTrace:
    """Load a trace in the Azure LLM 2023 format.

    `time_scale` multiplies every offset: 0.5 replays the trace twice as fast (twice the rate),
    2.0 half as fast. `limit` keeps the first N requests; `duration_s` keeps the requests whose
    scaled offset is below it. Raises `TraceFormatError` on a malformed file and `OSError` when
    it cannot be read.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a positive finite number, got {time_scale!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")
    if duration_s is not None and not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s!r}")

    name = os.fspath(path)
    stamps, prompts, outputs = _read_rows(name)

    if any(b < a for a, b in itertools.pairwise(stamps)):
        order = sorted(range(len(stamps)), key=stamps.__getitem__)
        stamps = [stamps[i] for i in order]
        prompts = [prompts[i] for i in order]
        outputs = [outputs[i] for i in order]

    start = stamps[0]
    factor = time_scale / _NS_PER_S
    offsets = [(ns - start) * factor for ns in stamps]

    keep = len(offsets) if limit is None else min(limit, len(offsets))
    if duration_s is not None:
        keep = bisect.bisect_left(offsets, duration_s, 0, keep)
    return RequestTrace(
        path=name,
        offsets_s=tuple(offsets[:keep]),
        prompt_tokens=tuple(prompts[:keep]),
        output_tokens=tuple(outputs[:keep]),
    )


def _read_rows(path: str) -> tuple[list[int], list[int], list[int]]:
    stamps: list[int] = []
    prompts: list[int] = []
    outputs: list[int] = []
    day_ordinals: dict[str, int] = {}
    # utf-8-sig: files saved by spreadsheet tools start with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise TraceFormatError(path, 1, "empty file, expected a header row")
        columns = [c.strip() for c in header]
        indices = []
        for wanted in (TIMESTAMP_COLUMN, PROMPT_COLUMN, OUTPUT_COLUMN):
            if wanted not in columns:
                raise TraceFormatError(
                    path, reader.line_num, f"missing column {wanted!r} in header {columns!r}"
                )
            indices.append(columns.index(wanted))
        i_time, i_prompt, i_output = indices
        width = max(indices) + 1
        try:
            for row in reader:
                if not row:
                    continue  # a blank line, e.g. at the end of the file
                if len(row) < width:
                    raise _RowError(f"expected at least {width} fields, got {len(row)}")
                stamps.append(_parse_timestamp_ns(row[i_time], day_ordinals))
                prompts.append(_parse_count(PROMPT_COLUMN, row[i_prompt]))
                outputs.append(_parse_count(OUTPUT_COLUMN, row[i_output]))
        except _RowError as e:
            raise TraceFormatError(path, reader.line_num, str(e)) from None
        except csv.Error as e:
            raise TraceFormatError(path, reader.line_num, f"CSV error: {e}") from None
        except UnicodeDecodeError as e:
            raise TraceFormatError(
                path, reader.line_num + 1, f"not UTF-8 text (near here): {e}"
            ) from None
    if not stamps:
        raise TraceFormatError(path, 2, "no requests after the header")
    return stamps, prompts, outputs


class _RowError(Exception):
    """Raised inside the row loop; `_read_rows` adds the file and line."""


def _parse_timestamp_ns(text: str, day_ordinals: dict[str, int]) -> int:
    """``YYYY-MM-DD HH:MM:SS[.fffffffff]`` as integer nanoseconds since 0001-01-01."""
    m = _TIMESTAMP.fullmatch(text.strip())
    if m is None:
        raise _RowError(f"bad TIMESTAMP {text!r}, expected 'YYYY-MM-DD HH:MM:SS.fffffff'")
    day_text = m.string[:10]
    day = day_ordinals.get(day_text)
    if day is None:
        try:
            day = date(int(m[1]), int(m[2]), int(m[3])).toordinal()
        except ValueError as e:
            raise _RowError(f"bad TIMESTAMP {text!r}: {e}") from None
        day_ordinals[day_text] = day
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    if hour > 23 or minute > 59 or second > 59:
        raise _RowError(f"bad TIMESTAMP {text!r}: time of day out of range")
    fraction = m[7]
    ns = int(fraction.ljust(9, "0")) if fraction else 0
    return ((day * 86400 + hour * 3600 + minute * 60 + second) * _NS_PER_S) + ns


def _parse_count(column: str, text: str) -> int:
    digits = text.strip()
    # isascii + isdigit: int() alone would accept "+5", "1_000" and non-ASCII digits.
    if not (digits.isascii() and digits.isdigit()):
        raise _RowError(f"bad {column} {text!r}, expected a non-negative integer")
    return int(digits)

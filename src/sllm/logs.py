"""Process-wide logging setup: one stdlib handler on stdout, text for people, JSON for containers.

Why it exists: every process (coordinator, worker, node, simulator CLI) logs the same way, so
that one `LOG_FORMAT=json` turns a whole cluster's output into lines a log pipeline can parse,
and so that a reader of the text output sees the same event names and fields.

Convention
----------
- **One logger per subsystem**, named under the package: ``sllm.coordinator``, ``sllm.worker``,
  ``sllm.node``, ``sllm.gossip``, ``sllm.wire``, ``sllm.http``, ``sllm.sim``. Get it with
  ``logging.getLogger("sllm.worker")`` at module level.
- **The message is a fixed event name** in snake_case (``"worker_joined"``,
  ``"datagram_dropped"``), never a sentence with values formatted into it. Grep and dashboards key
  on it.
- **Details go in fields.** Log through `log_event`::

      log_event(log, logging.INFO, "worker_joined", worker_id="w3", models=2)

  which is ``log.log(logging.INFO, "worker_joined", extra={"fields": {...}})``. Code that calls
  the logger directly may do exactly that; plain ``extra={"key": value}`` attributes are shown too.
- **The core never logs.** The runtime logs what the core decided.

Output
------
- ``text`` (default)::

      2024-05-01T12:00:00.123Z INFO sllm.coordinator worker_joined worker_id=w3 models=2

  Values containing spaces, quotes or ``=`` are JSON-quoted, so each line stays splittable.
- ``json``: one object per line with ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``event``
  (the message), then every field. A field named like one of those four keys is written as
  ``field_<name>`` so it cannot hide them. A traceback goes under ``exc``.

Times are UTC in both formats: a cluster spans machines and time zones.

Third-party output under ``json``
---------------------------------
A log pipeline that parses lines breaks on the first line that is not JSON, and libraries
write such lines behind logging's back: transformers draws a "Loading weights" progress bar
(tqdm, on stderr) on every model load, its own loggers have a handler of their own on
stderr, and Python prints warnings there. So the process-wide call
(``configure_logging(level, "json")``, no `stream`) also

- turns the Hugging Face progress bars off (``HF_HUB_DISABLE_PROGRESS_BARS``, which
  transformers follows too, for libraries imported later; their switches for ones imported
  already);
- routes `warnings` into logging (``logging.captureWarnings``: logger ``py.warnings``);
- replaces ``sys.stderr`` with `JsonLines`, which writes every line that still reaches it
  as one JSON record (logger ``sllm.stderr``, event ``stderr_output``, field ``text``) on
  the stderr it replaced. Streams stay apart: what went to stderr still does.

A later process-wide call with ``text`` puts stderr and warnings back. A call with a
`stream` (tests, a host embedding sllm) changes nothing outside its own handler.

Not handled yet: rate limiting (a flood of bad datagrams must be rate-limited by the caller),
log files or rotation (containers log to stdout; the platform collects it), per-subsystem
levels, and bytes written straight to file descriptor 2 by C code (a torch C++ warning):
only writes through Python's ``sys.stderr`` become JSON.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, TextIO, cast

# Level names accepted by `configure_logging` and by the LOG_LEVEL variable.
LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Output formats accepted by `configure_logging` and by the LOG_FORMAT variable.
FORMATS: tuple[str, ...] = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # added to LogRecord in Python 3.12
}
_FIELDS_KEY = "fields"
_JSON_CORE_KEYS = ("ts", "level", "logger", "event")


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    """Log the fixed event name `event` at `level` with `fields` as its details.

    The first three parameters are positional-only, so a field may be called ``level`` or
    ``event`` without clashing with them.
    """
    if logger.isEnabledFor(level):
        # Made directly rather than by `logger.log`, which would walk the stack for the
        # caller's file and line: no format prints them, and the walk was a fifth of the
        # cost of a line on the front door's hot path.
        record = logger.makeRecord(
            logger.name, level, "", 0, event, (), None, extra={_FIELDS_KEY: fields}
        )
        logger.handle(record)


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields of `record`: its ``extra={"fields": {...}}`` mapping, then any other extras."""
    attrs = vars(record)
    fields: dict[str, object] = {}
    nested = attrs.get(_FIELDS_KEY)
    if isinstance(nested, Mapping):
        fields.update((str(key), value) for key, value in nested.items())
    for key in attrs.keys() - _RECORD_ATTRS:  # the set difference runs in C
        if key != _FIELDS_KEY:
            fields[key] = attrs[key]
    if nested is not None and not isinstance(nested, Mapping):
        fields[_FIELDS_KEY] = nested
    return fields


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """``2024-05-01T12:00:00``, the same for every line logged within that UTC second."""
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _utc_iso(created: float) -> str:
    """``2024-05-01T12:00:00.123Z``: ISO-8601, UTC, milliseconds."""
    second, micros = divmod(round(created * 1_000_000), 1_000_000)  # as datetime rounds
    return f"{_utc_second(second)}.{micros // 1000:03d}Z"


# A text value is JSON-quoted when it has whitespace, a quote or "=" (or is empty).
_NEEDS_QUOTING = re.compile(r'[\s"=]')
_HAS_SPACE = re.compile(r"\s")


def _text_value(value: object) -> str:
    """A value for ``key=value``: bare if it splits cleanly, else JSON-quoted."""
    if isinstance(value, Mapping | list | tuple):
        # Compact JSON is unambiguous as it stands unless a string inside it has a space.
        text = json.dumps(value, default=str, separators=(",", ":"))
        return json.dumps(text) if _HAS_SPACE.search(text) else text
    text = value if isinstance(value, str) else str(value)
    if not text or _NEEDS_QUOTING.search(text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger> <event> key=value ...``, then any traceback."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in record_fields(record).items())
        if pairs:
            line = f"{line} {pairs}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            out[f"field_{key}" if key in _JSON_CORE_KEYS else key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # default=str: a field that JSON cannot hold (a Path, an enum) is logged as its str().
        return json.dumps(out, default=str, ensure_ascii=False)


# The logger and event of a line that reached stderr outside logging under LOG_FORMAT=json.
STDERR_LOGGER = "sllm.stderr"
STDERR_EVENT = "stderr_output"
# Where a line ends on stderr: a newline, or the carriage return a progress bar redraws with.
_LINE_END = re.compile(r"\r\n|\r|\n")
# Read by huggingface_hub when it is imported, and by transformers through it.
HF_PROGRESS_BARS_VARIABLE = "HF_HUB_DISABLE_PROGRESS_BARS"


# Text held back waiting for the end of its line: past this it is written as one record,
# so a library that writes without newlines cannot grow it without bound.
PENDING_MAX_CHARS = 64 * 1024


class JsonLines(io.TextIOBase):
    """A stand-in for ``sys.stderr`` that writes each line as one JSON log record.

    A line ends at a newline, at a carriage return (a progress bar's redraw) or at a
    `flush`; blank lines are dropped. The records go to `original`, the stream replaced.
    """

    def __init__(self, original: IO[str]) -> None:
        super().__init__()
        self.original = original
        self._formatter = JsonFormatter()
        self._pending = ""
        self._lock = threading.Lock()  # libraries write from their own threads

    # typeshed declares TextIOBase.encoding a plain attribute; at run time it is a
    # read-only property, which only a property can override.
    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # so that nothing draws a progress bar into it

    def fileno(self) -> int:
        return self.original.fileno()  # faulthandler writes there directly

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._pending = _LINE_END.split(self._pending + text)
            if len(self._pending) > PENDING_MAX_CHARS:  # a writer that never ends its line
                lines.append(self._pending)
                self._pending = ""
            for line in lines:
                self._emit(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
            self._emit(line)
            self.original.flush()

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        record = logging.LogRecord(STDERR_LOGGER, logging.WARNING, "", 0, STDERR_EVENT, (), None)
        setattr(record, _FIELDS_KEY, {"text": line})
        self.original.write(self._formatter.format(record) + "\n")


def _route_third_party_output(json_lines: bool) -> None:
    """Under ``json``, make what libraries print JSON too (see the module docstring)."""
    logging.captureWarnings(json_lines)
    if json_lines:
        os.environ[HF_PROGRESS_BARS_VARIABLE] = "1"
        hub_utils = sys.modules.get("huggingface_hub.utils")
        if hub_utils is not None:
            hub_utils.disable_progress_bars()
        transformers_logging = sys.modules.get("transformers.utils.logging")
        if transformers_logging is not None:
            transformers_logging.disable_progress_bar()
        if sys.stderr is not None and not isinstance(sys.stderr, JsonLines):  # None: fd 2 shut
            sys.stderr.flush()
            # The type checker knows sys.stderr as TextIO; JsonLines is a TextIOBase.
            sys.stderr = cast(TextIO, JsonLines(sys.stderr))
    elif isinstance(sys.stderr, JsonLines):
        sys.stderr.flush()
        sys.stderr = cast(TextIO, sys.stderr.original)


class _ConfiguredHandler(logging.StreamHandler[IO[str]]):
    """The handler `configure_logging` installs; its type is how a second call finds it."""


def configure_from_environment() -> None:
    """Log like the parent service, in a process that this project's code reaches without
    having started it (vLLM's engine core, running `sllm.engines.vllm_loader`).

    The LOG_LEVEL and LOG_FORMAT the process inherited apply (the service checked them at
    its start; a value that is not valid here falls back to the default). A process whose
    root logger has a handler already (its own logging set up, by us or anyone) is left
    alone.
    """
    if logging.getLogger().handlers:
        return
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    fmt = os.environ.get("LOG_FORMAT", "text").strip().lower()
    configure_logging(level if level in LEVELS else "INFO", fmt if fmt in FORMATS else "text")


def configure_logging(level: str, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send all log records at `level` and above to `stream` (stdout by default) in `fmt`.

    `level` is a name from `LEVELS`, case-insensitive; `fmt` is ``"text"`` or ``"json"``.
    `stream` defaults to the ``sys.stdout`` of the moment of the call. Calling again replaces
    the handler installed by the previous call instead of adding a second one; handlers
    installed by anyone else are left alone. Without a `stream`, the call is for the whole
    process: under ``json`` it also makes third-party output JSON (the module docstring
    says how), and under ``text`` it undoes that. Raises ValueError for an unknown level or format
    (configuration has already validated both, so that is a programming error).
    """
    level_name = level.strip().upper()
    if level_name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    formatter: logging.Formatter
    if fmt == "text":
        formatter = TextFormatter()
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")

    # No format prints a record's thread or process, so records need not look them up
    # (the logging HOWTO's "Optimization" switches): a line costs a tenth less.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ConfiguredHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _ConfiguredHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level_name)
    if stream is None:
        _route_third_party_output(json_lines=fmt == "json")

"""Logging: JSON and text formatters carry the event's fields; configuring is idempotent."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sllm.experiments.launcher import child_environment
from sllm.logs import (
    STDERR_EVENT,
    STDERR_LOGGER,
    JsonFormatter,
    JsonLines,
    TextFormatter,
    _utc_iso,
    configure_logging,
    log_event,
)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if isinstance(h.formatter, TextFormatter | JsonFormatter)]


def test_json_line_parses_and_carries_fields() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("sllm.coordinator")
    log_event(log, logging.INFO, "worker_joined", worker_id="w3", models=2, level="x")
    log.warning("queue_full", extra={"fields": {"depth": 64}, "worker_id": "w4"})
    log_event(log, logging.DEBUG, "below_level", ignored=True)

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "sllm.coordinator"
    assert first["event"] == "worker_joined"
    assert first["worker_id"] == "w3"
    assert first["models"] == 2
    assert first["field_level"] == "x"  # a field cannot hide a core key
    assert first["ts"].endswith("Z")
    ts = datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == timedelta(0)
    assert second["event"] == "queue_full"
    assert second["depth"] == 64
    assert second["worker_id"] == "w4"
    assert "fields" not in second


def test_json_holds_unserializable_values_and_tracebacks() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    log = logging.getLogger("sllm.wire")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception(
            "decode_failed", extra={"fields": {"peer": ("127.0.0.9", 9000), "obj": object()}}
        )
    record = json.loads(out.getvalue())
    assert record["peer"] == ["127.0.0.9", 9000]
    assert record["obj"].startswith("<object")
    assert "ValueError: boom" in record["exc"]


def test_text_format_includes_fields() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    log_event(
        logging.getLogger("sllm.worker"),
        logging.INFO,
        "model_loaded",
        model="llama-7b",
        seconds=1.5,
        reason="cold start",
        peer=("127.0.0.9", 9000),
    )
    line = out.getvalue().rstrip("\n")
    assert "\n" not in line
    assert " INFO sllm.worker model_loaded " in line
    assert line.endswith('model=llama-7b seconds=1.5 reason="cold start" peer=["127.0.0.9",9000]')
    assert line.split(" ", 1)[0].endswith("Z")  # UTC timestamp first


def test_configure_twice_keeps_one_handler() -> None:
    root = logging.getLogger()
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "text", stream=first)
    configure_logging("WARNING", "json", stream=second)
    assert len(ours(root)) == 1
    assert root.level == logging.WARNING
    logging.getLogger("sllm.test").warning("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_configure_rejects_unknown_level_and_format() -> None:
    with pytest.raises(ValueError, match="level"):
        configure_logging("LOUD")
    with pytest.raises(ValueError, match="format"):
        configure_logging("INFO", "xml")


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1714564800.123, "2024-05-01T12:00:00.123Z"),
        (1714564800.9994, "2024-05-01T12:00:00.999Z"),
        (1.9999999, "1970-01-01T00:00:02.000Z"),  # rounds into the next second, as datetime
    ],
)
def test_times_are_utc_iso_with_milliseconds(created: float, expected: str) -> None:
    assert _utc_iso(created) == expected
    reference = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    assert reference.replace("+00:00", "Z") == expected


def test_json_lines_turns_each_line_and_redraw_into_a_record() -> None:
    original = io.StringIO()
    stderr = JsonLines(original)
    stderr.write("Loading weights:   0%|\rLoading weights: 100%|\n")
    stderr.write("half a ")
    assert len(original.getvalue().splitlines()) == 2  # the unfinished line waits
    stderr.write("line\n\n   \n")
    stderr.write("cut short")
    stderr.flush()
    records = [json.loads(line) for line in original.getvalue().splitlines()]
    assert [record["text"] for record in records] == [
        "Loading weights:   0%|",
        "Loading weights: 100%|",
        "half a line",
        "cut short",
    ]
    assert {(r["logger"], r["event"], r["level"]) for r in records} == {
        (STDERR_LOGGER, STDERR_EVENT, "WARNING")
    }
    assert not stderr.isatty()


# What a library does behind logging's back: a warning, a progress bar on stderr, a raw line.
THIRD_PARTY = textwrap.dedent(
    """
    import sys, warnings
    from sllm.logs import configure_logging
    configure_logging("INFO", "{fmt}")
    warnings.warn("careful", UserWarning)
    sys.stderr.write("\\rbar  0%\\rbar 100%\\n")
    print("raw line", file=sys.stderr)
    """
)


def run_third_party(fmt: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", THIRD_PARTY.format(fmt=fmt)],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


def test_json_process_writes_only_json_on_stdout_and_stderr() -> None:
    done = run_third_party("json")
    out = [json.loads(line) for line in done.stdout.splitlines()]
    err = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["logger"], "careful" in r["event"]) for r in out] == [("py.warnings", True)]
    assert [r["text"] for r in err] == ["bar  0%", "bar 100%", "raw line"]


def test_text_process_leaves_warnings_and_stderr_alone() -> None:
    done = run_third_party("text")
    assert done.stdout == ""
    assert "UserWarning: careful" in done.stderr
    assert "raw line\n" in done.stderr


def test_a_line_that_never_ends_is_written_once_it_grows_too_long() -> None:
    from sllm.logs import PENDING_MAX_CHARS, JsonLines

    sink = io.StringIO()
    lines = JsonLines(sink)
    lines.write("x" * (PENDING_MAX_CHARS + 1))
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert len(records) == 1 and len(records[0]["text"]) == PENDING_MAX_CHARS + 1

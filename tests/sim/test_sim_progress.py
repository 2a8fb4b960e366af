"""Progress: a bar redrawn on a terminal, plain lines into a pipe or a file."""

from __future__ import annotations

import io

import pytest

from sllm.sim.progress import Progress, clock_text, render_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_into_a_pipe_plain_lines_come_at_most_once_a_period_and_once_at_the_end() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with Progress("exp1", stream, clock=clock) as bar:
        for _ in range(30):  # 3 s apart for 90 s: a line at 12, 24, ... 84 s (10 s or more apart)
            clock.now += 3.0
            bar.update((clock.now - 1000.0) / 100.0, "run 1/2")
        clock.now += 1.0
        bar.update(1.0, "done")
        bar.update(1.0, "done")  # told twice: printed once
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 7 + 1
    assert lines[0] == render_line("exp1", 0.12, 12.0, "run 1/2")
    assert lines[-1] == render_line("exp1", 1.0, 91.0, "done")
    assert "of ~1:40, ETA 1:28" in lines[0]


def test_a_run_shorter_than_a_period_prints_only_its_end_into_a_pipe() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with Progress("simulate", stream, clock=clock) as bar:
        clock.now += 1.0
        bar.update(0.5)
        clock.now += 1.0
        bar.update(1.0)
    assert stream.getvalue() == render_line("simulate", 1.0, 2.0) + "\n"


def test_draws_and_ends_the_line_on_a_terminal() -> None:
    stream = Terminal()
    with Progress("run", stream) as bar:
        bar.update(0.25)
        bar.update(1.0, "done")
    text = stream.getvalue()
    assert text.startswith("\rrun [")
    assert "100%" in text and "done" in text
    assert text.endswith("\n")


def test_plain_prints_lines_even_on_a_terminal_that_others_share() -> None:
    stream, clock = Terminal(), FakeClock()
    with Progress("seed 1", stream, clock=clock, plain=True) as bar:
        clock.now += 1.0
        bar.update(0.5)
        clock.now += 1.0
        bar.update(1.0)
    assert stream.getvalue() == render_line("seed 1", 1.0, 2.0) + "\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_shows_the_estimated_total_and_the_time_left() -> None:
    line = render_line("exp1", 0.25, 30.0, "run 1/4")
    assert line == "exp1 [#######-----------------------]  25% 0:30 of ~2:00, ETA 1:30 run 1/4"


def test_before_any_progress_the_estimates_are_unknown() -> None:
    assert render_line("sim", 0.0, 5.0).endswith(" 0% 0:05 of ?, ETA ?")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0:00"), (59.6, "1:00"), (754, "12:34"), (7384, "2:03:04")]
)
def test_clock_text(seconds: float, text: str) -> None:
    assert clock_text(seconds) == text


def test_the_bar_on_a_terminal_counts_time_from_its_clock() -> None:
    stream, clock = Terminal(), FakeClock()
    with Progress("simulate", stream, clock=clock) as bar:
        clock.now += 10.0
        bar.update(0.5)
        clock.now += 0.01  # within a redraw period: not drawn
        bar.update(0.6)
        clock.now += 20.0
        bar.update(1.0, "done")
    draws = stream.getvalue().rstrip("\n").split("\r")[1:]
    assert [draw.rstrip() for draw in draws] == [
        render_line("simulate", 0.5, 10.0),
        render_line("simulate", 1.0, 30.01, "done"),
    ]
    assert "0:10 of ~0:20, ETA 0:10" in draws[0]
    assert "0:30 of ~0:30, ETA 0:00 done" in draws[1]

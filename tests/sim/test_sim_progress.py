"""The progress bar draws only on a terminal."""

from __future__ import annotations

import io

from sllm.sim.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("run", stream) as bar:
        bar.update(0.5)
        bar.update(1.0)
    assert stream.getvalue() == ""


def test_draws_and_ends_the_line_on_a_terminal() -> None:
    stream = Terminal()
    with Progress("run", stream) as bar:
        bar.update(0.25)
        bar.update(1.0, "done")
    text = stream.getvalue()
    assert text.startswith("\rrun [")
    assert "100%" in text and "done" in text
    assert text.endswith("\n")

"""`sllm bench engine` starts both servers alike: vLLM's in a session of its own, as the
project's services are, so that session-grouped CPU scheduling (Linux's autogroup) treats
both stacks the same (docs/benchmarks.md, engine section)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sllm.bench import engine


class _FakeServer:
    """What `vllm_server` needs of a started process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.kwargs = kwargs
        started.append(self)

    def poll(self) -> int | None:
        return None

    def terminate(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


started: list[_FakeServer] = []


def test_vllm_serve_starts_in_its_own_session_like_the_services(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started.clear()
    monkeypatch.setattr(engine.subprocess, "Popen", _FakeServer)
    monkeypatch.setattr(engine, "_wait_serving", lambda url, process, log: None)
    with engine.vllm_server(tmp_path / "model", tmp_path):
        pass
    assert len(started) == 1
    assert started[0].kwargs.get("start_new_session") is True

"""Starting `sllm` services as child processes and knowing when they are ready.

A child runs ``python -m sllm SUBCOMMAND ...`` with JSON logs on stdout. The launcher
reads those lines: the ``listening`` event says the socket is bound (and on which port,
so port 0 works), and the last lines are kept to explain a child that dies early. The
simulation scripts and the integration tests start their clusters through this one class.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sllm
from sllm.config import ENVIRONMENT_VARIABLES

# A child that does not bind within this long is broken (an import takes ~0.2 s).
READY_TIMEOUT_S = 15.0
# SIGTERM first; after this long, SIGKILL. The services promise to stop within 5 s.
STOP_TIMEOUT_S = 5.0
KEPT_LOG_LINES = 200

SOURCE_ROOT = str(Path(sllm.__file__).resolve().parent.parent)


def isolated_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """Every variable a service reads, empty (unset: its default) unless `settings` names it.

    Starting children with this keeps a developer's own variables (a CLUSTER_SECRET, a
    COORDINATOR_PORT) out of a test or an experiment.
    """
    env = dict.fromkeys(ENVIRONMENT_VARIABLES, "")
    env.update(settings)
    return env


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment, with this source tree importable and JSON logs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SOURCE_ROOT, *filter(None, [env.get("PYTHONPATH")])])
    env["LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


class ServiceProcess:
    """One running `sllm` service process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, echo: bool) -> None:
        self.name = name
        self.process = process
        self.echo = echo
        self.lines: deque[str] = deque(maxlen=KEPT_LOG_LINES)
        self.port = 0
        self._ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_output())

    @classmethod
    async def start(
        cls,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        echo: bool = False,
        ready_timeout: float = READY_TIMEOUT_S,
        command_prefix: Sequence[str] = (),
    ) -> ServiceProcess:
        """Start ``python -m sllm *args`` and wait until it logs ``listening``.

        `command_prefix` runs it through another command that then execs it, such as
        ``ip netns exec NAME`` (the network-namespace tests).
        """
        process = await asyncio.create_subprocess_exec(
            *command_prefix,
            sys.executable,
            "-m",
            "sllm",
            *args,
            env=child_environment(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl+C goes to the parent, which stops us
        )
        service = cls(name, process, echo)
        try:
            service.port = await asyncio.wait_for(asyncio.shield(service._ready), ready_timeout)
        except (TimeoutError, RuntimeError) as error:
            await service.kill()
            tail = "\n".join(service.lines) or "(no output)"
            raise RuntimeError(f"{name} did not start: {error or 'timed out'}\n{tail}") from None
        return service

    async def _read_output(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if self.echo:
                print(f"[{self.name}] {line}", file=sys.stderr)
            event = _parse_event(line)
            if event is not None and event.get("event") == "listening" and not self._ready.done():
                self._ready.set_result(int(event.get("port", 0)))
        if not self._ready.done():
            self._ready.set_exception(RuntimeError(f"exited with {await self.process.wait()}"))

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def events(self, name: str) -> list[dict[str, Any]]:
        """The kept log events called `name`, oldest first."""
        parsed = (_parse_event(line) for line in self.lines)
        return [event for event in parsed if event is not None and event.get("event") == name]

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                await self.kill()
        await self._finish_reading()
        code = self.process.returncode
        return -1 if code is None else code

    async def kill(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        await self._finish_reading()

    async def _finish_reading(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 1.0)
        if not self._ready.done():
            self._ready.cancel()


def _parse_event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None

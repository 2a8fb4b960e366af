"""`run_and_report`: how the live scripts run a driver and hand its report out.

The report itself (`RunReport`, `build_report`, `render_report`) is `sllm.sim.report`:
the simulator builds the same one, and `sim` may not import the package above it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from sllm.sim.report import RunReport, dumps, render_report


def run_and_report(
    program: str,
    run: Callable[[], Coroutine[Any, Any, RunReport]],
    json_path: str | None,
    extra_render: Callable[[RunReport], str] | None = None,
) -> int:
    """Run a driver, print its report (and write it as JSON); the scripts' exit code."""
    try:
        report = asyncio.run(run())
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 1
    print(render_report(report))
    if extra_render is not None:
        print(extra_render(report))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as out:
            out.write(dumps(report.as_dict()))
        print(f"report written to {json_path}")
    return 0

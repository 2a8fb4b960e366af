"""A hosted service tunes the garbage collector once it has started (`tune_gc`)."""

from __future__ import annotations

import asyncio
import gc

from sllm.runtime.service import GC_THRESHOLDS, serve_until_signalled


class StartsAndStops:
    name = "test"

    def __init__(self) -> None:
        self.frozen_at_start = -1

    async def start(self) -> None:
        self.frozen_at_start = gc.get_freeze_count()

    async def stop(self) -> None:
        pass


async def test_a_started_service_freezes_startup_objects_and_collects_young_ones_less() -> None:
    before = gc.get_threshold()
    service = StartsAndStops()
    stop = asyncio.Event()
    stop.set()  # stop at once, after starting
    try:
        await serve_until_signalled(service, stop)
        assert service.frozen_at_start == 0
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:  # the test process keeps its own settings
        gc.unfreeze()
        gc.set_threshold(*before)

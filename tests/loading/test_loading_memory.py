"""`HostMemory`: a model's buffer is free again once its last tensor dies, and is reused.

Why it matters: a fresh allocation costs a page fault per page at first touch, which
halved warm loads on the test VM; recycling the memory of a model that is gone keeps
the next load at the speed of the read alone. What must never happen is the reverse:
a buffer handed out again while a live tensor still views it.
"""

from __future__ import annotations

import gc

import pytest

from sllm.loading.pool import ALIGNMENT, HostMemory

torch = pytest.importorskip("torch", reason="views are torch tensors")


def test_a_buffer_is_reused_only_after_every_view_of_it_died() -> None:
    memory = HostMemory(keep_free_bytes=1 << 20)
    first = memory.lease(3 * ALIGNMENT)
    view = torch.frombuffer(first, dtype=torch.uint8)[100:200].view(torch.int16)
    view.fill_(7)
    del first
    gc.collect()
    assert memory.leased_bytes == 3 * ALIGNMENT  # a view is alive: still leased
    second = memory.lease(3 * ALIGNMENT)
    assert memory.allocations == 2  # not the same buffer
    torch.frombuffer(second, dtype=torch.uint8).fill_(0)
    assert int(view[0]) == 7  # the live view was not overwritten
    del view, second
    gc.collect()
    assert memory.leased_bytes == 0
    assert memory.free_bytes == 6 * ALIGNMENT
    memory.lease(2 * ALIGNMENT)
    assert memory.allocations == 2  # a freed buffer, no new allocation


def test_free_buffers_beyond_the_bound_are_dropped_largest_first() -> None:
    memory = HostMemory(keep_free_bytes=2 * ALIGNMENT)
    small, large = memory.lease(ALIGNMENT), memory.lease(4 * ALIGNMENT)
    del small, large
    gc.collect()
    assert memory.free_bytes == ALIGNMENT  # the large one did not fit the bound

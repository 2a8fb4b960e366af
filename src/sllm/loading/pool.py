"""Parallel chunked reads of checkpoint files into one reusable host allocation.

Why a pool: allocating host memory for every load costs as much as reading it (the shared
calibration data measured 3.6 s to allocate 7 GB of pinned memory on an H200 host, where
the warm read takes 0.35 s), so a worker allocates its pool once and grows it only when a
larger model comes. Why parallel: one thread copying from the page cache reaches a
fraction of memory bandwidth, and one outstanding request leaves an NVMe queue idle; the
same data measured 29.8 GB/s for a warm read with 8 threads.

`HostPool` is page-aligned anonymous memory (`mmap`), so it also serves O_DIRECT reads.
`read_files` reads each file into the pool at an aligned offset with ``os.preadv`` from
`READ_THREADS` threads, in `CHUNK_BYTES` pieces; ``preadv`` releases the GIL, so the
threads read truly in parallel. Standard library only: pinning the pool for CUDA and
the device copies are `sllm.loading.loader`'s, which imports torch.

Not handled yet: reading from object storage (files must be local), and sharing one pool
between two loads at once (a worker loads one model at a time).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# 8 threads: the shared calibration data's page-cache read peaks at 8 threads on a 16-core
# host, and 8 outstanding requests is enough queue depth for one NVMe disk.
READ_THREADS = 8
# 16 MiB pieces: large enough that a system call's cost is lost in the copy (under 1% at
# 10 GB/s), small enough that 8 threads share a 100 MB tensor and a device copy can start
# while the rest is read.
CHUNK_BYTES = 16 << 20
# O_DIRECT wants buffers, offsets and lengths aligned to the logical block size; a page
# (4 KiB) is a multiple of every common block size.
ALIGNMENT = 4096


def align_up(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


class HostPool:
    """One page-aligned host allocation, reused from load to load (grown, never shrunk)."""

    def __init__(
        self, capacity: int = 0, allocate: Callable[[int], memoryview] | None = None
    ) -> None:
        self._allocate: Callable[[int], memoryview] = allocate or _anonymous_memory
        self._memory: memoryview | None = None
        self.capacity = 0
        self.allocations = 0  # how often memory was allocated: a test and a metric read it
        if capacity:
            self.reserve(capacity)

    def reserve(self, size: int) -> memoryview:
        """At least `size` bytes of the pool, allocating only when it is too small."""
        size = align_up(max(size, 1))
        if self._memory is None or self.capacity < size:
            # The old memory is dropped, not closed: tensors may still view it.
            self._memory = None
            self._memory = self._allocate(size)
            self.capacity = size
            self.allocations += 1
        assert self._memory is not None
        return self._memory[:size]


def _anonymous_memory(size: int) -> memoryview:
    """Page-aligned memory of the process's own (what O_DIRECT reads need)."""
    return memoryview(mmap.mmap(-1, size))


class HostMemory:
    """Host memory that models' tensors live in on CPU, recycled from model to model.

    Why: a fresh allocation is paid for again at first touch (the kernel zeroes every
    page), which on this project's 2-core test VM halved a warm load's speed (3.5 GB/s
    into fresh memory against 7 to 12 GB/s into memory already touched). So a buffer
    whose model is gone goes back to a free list, already faulted in, and the next load
    of a model no larger reuses it.

    `lease` hands out a ctypes array over a buffer (it has the buffer protocol and takes
    weak references); when the last tensor viewing it dies, the buffer is free again.
    Free buffers are kept up to `keep_free_bytes`, the largest dropped first.
    """

    def __init__(self, keep_free_bytes: int) -> None:
        self.keep_free_bytes = keep_free_bytes
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self.leased_bytes = 0  # bytes of buffers some model's tensors still view
        self.allocations = 0

    @property
    def free_bytes(self) -> int:
        with self._lock:
            return sum(len(buffer) for buffer in self._free)

    def lease(self, size: int) -> memoryview:
        """A writable page-aligned buffer of `size` bytes, free again once nothing views it."""
        size = align_up(max(size, 1))
        with self._lock:
            fitting = [buffer for buffer in self._free if len(buffer) >= size]
            if fitting:
                buffer = min(fitting, key=len)
                self._free.remove(buffer)
            else:
                buffer = mmap.mmap(-1, size)
                self.allocations += 1
            self.leased_bytes += len(buffer)
        view = (ctypes.c_char * size).from_buffer(buffer)
        weakref.finalize(view, self._give_back, buffer)
        return memoryview(view).cast("B")

    def _give_back(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self.leased_bytes -= len(buffer)
            self._free.append(buffer)
            self._free.sort(key=len)
            while self._free and sum(map(len, self._free)) > self.keep_free_bytes:
                self._free.pop()  # dropped: unmapped once nothing else refers to it


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where a file lies in the pool, and how many of its bytes were read."""

    path: Path
    pool_offset: int
    file_bytes: int


def plan(paths: Sequence[Path]) -> tuple[list[Placement], int]:
    """Each file at an aligned offset, one after another; and the bytes the pool needs."""
    placements: list[Placement] = []
    offset = 0
    for path in paths:
        size = path.stat().st_size
        placements.append(Placement(path=path, pool_offset=offset, file_bytes=size))
        offset += align_up(size)
    return placements, offset


def read_files(
    *,
    placements: Sequence[Placement],
    into: memoryview,
    threads: int = READ_THREADS,
    chunk_bytes: int = CHUNK_BYTES,
    direct: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> None:
    """Read every file into `into` at its placement, `chunk_bytes` at a time in parallel.

    `direct` opens with O_DIRECT (bypassing the page cache, for cold reads) where the
    system and the file system allow it, else falls back to buffered reads. `on_chunk`
    gets (pool offset, length) of each piece once it is in the pool, from the reading
    thread: the device copy starts there.
    """
    if chunk_bytes % ALIGNMENT:
        raise ValueError(f"chunk_bytes {chunk_bytes} is not a multiple of {ALIGNMENT}")
    descriptors = [_open(placement.path, direct=direct) for placement in placements]
    try:
        pieces = [
            (
                descriptor,
                placement.pool_offset + start,
                start,
                min(chunk_bytes, placement.file_bytes - start),
            )
            for descriptor, placement in zip(descriptors, placements, strict=True)
            for start in range(0, placement.file_bytes, chunk_bytes)
        ]

        def read_piece(piece: tuple[int, int, int, int]) -> None:
            descriptor, pool_at, file_at, length = piece
            # O_DIRECT reads whole blocks: the file's last piece is read rounded up, into
            # the pool's alignment padding, and comes back short at the end of the file.
            wanted = align_up(length)
            done = 0
            while done < length:
                got = os.preadv(
                    descriptor, [into[pool_at + done : pool_at + wanted]], file_at + done
                )
                if got <= 0:
                    raise OSError(f"unexpected end of file after {file_at + done} bytes")
                done += got
            if on_chunk is not None:
                on_chunk(pool_at, length)

        with ThreadPoolExecutor(max_workers=max(1, threads)) as executor:
            for _ in executor.map(read_piece, pieces):
                pass
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _open(path: Path, *, direct: bool) -> int:
    flags = os.O_RDONLY
    if direct and hasattr(os, "O_DIRECT"):
        try:
            return os.open(path, flags | os.O_DIRECT)
        except OSError:
            pass  # tmpfs and some overlay file systems refuse O_DIRECT: read buffered
    return os.open(path, flags)


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget `path`'s cached pages (no root needed), for cold reads."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)

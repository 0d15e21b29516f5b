"""Give the kernel back the zeroed pages of memory an engine has just allocated.

llama.cpp zeroes its whole KV cache when it makes a context (so that padding never reads as NaN), which makes
every page of it resident: 180 MB for 4 slots of 2,048 tokens, although a sequence only ever reaches the cells
up to its own length. A private anonymous page given back with MADV_DONTNEED reads as zeros again, which is
exactly what it held, and costs memory again only when something is written to it. So the memory a context
holds grows with the tokens in use instead of its size (up to the same total when every slot is full).

Linux only (/proc/self/maps, madvise); elsewhere nothing is released.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
from pathlib import Path

import numpy as np

MAPS = Path("/proc/self/maps")
PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4  # <sys/mman.h> on Linux; Python's mmap module has it only for its own mappings

log = logging.getLogger(__name__)


def anonymous_ranges() -> list[tuple[int, int]]:
    """The process's private, writable, anonymous mappings as (start, end) addresses; [] where there is no /proc."""
    if not MAPS.exists():
        return []
    ranges = []
    for line in MAPS.read_text().splitlines():
        fields = line.split()
        if fields[1] == "rw-p" and len(fields) == 5:  # no path: anonymous (not the heap, the stack, a file)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _new_parts(after: list[tuple[int, int]], before: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The address ranges in `after` that no range of `before` covered (mappings merge, so compare addresses)."""
    parts = []
    for start, end in after:
        cuts = sorted((max(s, start), min(e, end)) for s, e in before if s < end and e > start)
        for s, e in cuts:
            if s > start:
                parts.append((start, s))
            start = max(start, e)
        if start < end:
            parts.append((start, end))
    return parts


def release_zero_pages(before: list[tuple[int, int]], min_bytes: int = 16 << 20) -> int:
    """Release every all-zero page of the anonymous memory mapped since `before` was taken, in new ranges of at
    least `min_bytes` (an engine's buffers, not the interpreter's small arenas). Returns the bytes released.

    Call it right after the allocation, before any thread writes to that memory: a page written between the
    check and the release would lose the write."""
    parts = [(start, end) for start, end in _new_parts(anonymous_ranges(), before) if end - start >= min_bytes]
    if not parts:  # also where there is no /proc (and no madvise to call)
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    released = 0
    for start, end in parts:
        pages = np.ctypeslib.as_array((ctypes.c_uint8 * (end - start)).from_address(start)).reshape(-1, PAGE)
        zero = ~pages.any(axis=1)
        # runs of zero pages: where the flag flips on (a run starts) and off (it ends)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.view(np.int8), [0]))))
        for first, stop in edges.reshape(-1, 2):
            addr, size = start + int(first) * PAGE, int(stop - first) * PAGE
            if libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size), MADV_DONTNEED) != 0:
                log.warning("madvise(MADV_DONTNEED) failed at %#x: %s", addr, os.strerror(ctypes.get_errno()))
                continue
            released += size
    return released

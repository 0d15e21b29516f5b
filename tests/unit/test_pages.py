"""Zeroed memory given back to the kernel (genforge.engines.pages): the contents stay, the resident memory goes."""

from __future__ import annotations

import mmap

import numpy as np

from genforge.engines.pages import PAGE, anonymous_ranges, release_zero_pages

SIZE = 64 << 20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _private_zeroed(size: int) -> tuple[mmap.mmap, np.ndarray]:
    """A private anonymous mapping with every page touched (written with zeros), as llama.cpp leaves its KV cache."""
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pages = np.frombuffer(m, dtype=np.uint8).reshape(-1, PAGE)
    pages[:] = 0
    return m, pages


def test_zeroed_pages_are_given_back_and_written_ones_keep_their_bytes():
    before = anonymous_ranges()
    m, pages = _private_zeroed(SIZE)
    pages[5, :3] = (1, 2, 3)
    pages[-1, -1] = 9
    resident = _rss_bytes()
    released = release_zero_pages(before)
    assert released >= SIZE - 2 * PAGE  # everything but the two written pages (other new zeroed memory may add)
    assert _rss_bytes() <= resident - (SIZE - 2 * PAGE) * 0.9
    assert pages[5, :3].tolist() == [1, 2, 3] and pages[-1, -1] == 9
    assert not pages[:5].any() and not pages[6:-1].any() and not pages[-1, :-1].any()  # zeros read as zeros
    pages[100, 0] = 7  # released memory takes writes again
    assert pages[100, 0] == 7
    del pages
    m.close()


def test_memory_mapped_before_is_left_alone():
    m, pages = _private_zeroed(SIZE)
    before = anonymous_ranges()
    resident = _rss_bytes()
    assert release_zero_pages(before) == 0  # only what was mapped since: nothing
    assert _rss_bytes() >= resident - SIZE // 4
    del pages
    m.close()

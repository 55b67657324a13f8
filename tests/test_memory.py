"""Resident-memory helpers on the real process (Linux /proc and glibc)."""

from __future__ import annotations

import mmap
import sys

import pytest
import torch

from liteasr_hf.compression.memory import RssPeak, current_rss_mb, peak_rss_mb, release_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")


def _spike(mb: int) -> None:
    """Make ``mb`` MB resident and give them back, in fresh anonymous pages. A tensor of that size can come from free
    memory the C heap still holds resident from earlier tests, and then adds nothing to the RSS (seen in CI: growth
    0.0 in the tests below)."""
    with mmap.mmap(-1, mb * 2**20, flags=mmap.MAP_PRIVATE) as pages:
        for offset in range(0, len(pages), mmap.PAGESIZE):
            pages[offset] = 1


def test_rss_peak_sees_a_transient_allocation_and_not_what_came_before():
    before = torch.ones(50 * 2**20 // 4)  # 50 MB resident before the measured stretch: not counted as growth
    with RssPeak(interval=0.001) as memory:
        _spike(200)
    assert memory.start_mb is not None and memory.peak_mb is not None
    assert 150 < memory.growth_mb < 400, memory.growth_mb
    assert peak_rss_mb() >= memory.peak_mb - 1  # the lifetime peak is at least the sampled one
    del before


def test_rss_peak_catches_a_spike_no_sampler_would_see():
    with RssPeak(interval=60.0) as memory:  # the sampler's first look would come after a minute
        _spike(200)
    if not memory.exact:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert 150 < memory.growth_mb < 400, memory.growth_mb


def test_nested_rss_peaks_and_the_lifetime_peak_keep_what_came_before_each_reset():
    _spike(300)
    lifetime = peak_rss_mb()
    with RssPeak() as outer:
        _spike(200)  # the outer block's spike, over before the inner block resets the mark
        with RssPeak() as inner:
            _spike(20)
    assert 150 < outer.growth_mb < 400, outer.growth_mb
    assert inner.growth_mb < 100, inner.growth_mb  # the outer spike came before the inner block began
    assert peak_rss_mb() >= lifetime - 1  # the resets did not lower the lifetime peak


def test_release_freed_memory_gives_heap_back():
    # Freeing one 3 MB buffer raises glibc's mmap threshold past 3 MB, so the next ones come from the heap;
    # freeing every other one leaves holes that glibc keeps resident until the heap is trimmed.
    torch.ones(2**20 // 4 * 3).add_(1)  # a temporary, freed at once
    blocks = [torch.ones(2**20 // 4 * 3) for _ in range(60)]  # 60 x 3 MB, resident (ones() writes them)
    holes = blocks[::2]
    keep = blocks[1::2]
    del blocks
    holes.clear()
    freed_but_held = current_rss_mb()
    release_freed_memory()
    trimmed = current_rss_mb()
    assert freed_but_held - trimmed > 45, (freed_but_held, trimmed)  # most of the 90 MB of holes
    assert all(block.sum() == block.numel() for block in keep)  # what is still used is untouched

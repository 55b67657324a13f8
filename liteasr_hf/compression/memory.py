"""Resident memory of this process: the lifetime peak, and the peak over one stretch of work."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import threading
from functools import cache
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float | None:
    """Resident memory now, in MB; ``None`` where ``/proc`` is not available (not Linux)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE / 2**20
    except OSError:
        return None


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Hand memory that PyTorch has freed back to the operating system (glibc's ``malloc_trim``).

    glibc keeps freed buffers of a few MB to tens of MB in its heap, and the heap a loop of same-sized
    forward passes leaves behind grows with the number of passes; trimming after each pass keeps resident
    memory flat. A no-op where the C library has no ``malloc_trim`` (macOS, musl, Windows).
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class RssPeak:
    """Samples resident memory in a background thread while the ``with`` block runs.

    ``ru_maxrss`` cannot be reset, so it cannot say what one step of a longer run needed; this can:
    ``start_mb`` is the RSS on entry, ``peak_mb`` the highest RSS seen inside, ``growth_mb`` the difference.
    Sampling every ``interval`` seconds can miss a spike shorter than that; 2 ms is far below the
    duration of a forward pass. Off Linux every figure is ``None``.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def growth_mb(self) -> float | None:
        return None if self.start_mb is None or self.peak_mb is None else self.peak_mb - self.start_mb

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = current_rss_mb()
            if now is not None and now > (self.peak_mb or 0.0):
                self.peak_mb = now

    def __enter__(self) -> RssPeak:
        self.start_mb = self.peak_mb = current_rss_mb()
        if self.start_mb is not None:
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = current_rss_mb()
        if now is not None and self.peak_mb is not None:
            self.peak_mb = max(self.peak_mb, now)

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
    """Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in KB), including what came
    before any reset of the kernel's mark by :class:`RssPeak`."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _HIGH_WATER.lifetime_mb)


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
    """The peak resident memory of this process while the ``with`` block runs.

    ``ru_maxrss`` is the peak of the process's whole life, so it cannot say what one step of a longer run needed;
    this can: ``start_mb`` is the RSS on entry, ``peak_mb`` the highest RSS inside, ``growth_mb`` the difference.
    On Linux the kernel's high-water mark (``VmHWM``) is reset on entry (``/proc/self/clear_refs``) and read on exit,
    so no spike is missed however short; blocks may nest, and :func:`peak_rss_mb` still reports the lifetime peak.
    Where the mark cannot be reset, a background thread samples the RSS every ``interval`` seconds instead, which can
    miss a spike shorter than that. Off Linux every figure is ``None``.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self.exact = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def growth_mb(self) -> float | None:
        return None if self.start_mb is None or self.peak_mb is None else self.peak_mb - self.start_mb

    def _see(self, mb: float | None) -> None:
        if mb is not None and self.peak_mb is not None and mb > self.peak_mb:
            self.peak_mb = mb

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._see(current_rss_mb())

    def __enter__(self) -> RssPeak:
        self.start_mb = self.peak_mb = current_rss_mb()
        if self.start_mb is None:
            return self
        with _HIGH_WATER.lock:
            self.exact = _HIGH_WATER.reset()  # before joining: the mark it erases is the open blocks', not this one's
            _HIGH_WATER.active.add(self)
        if not self.exact:
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _HIGH_WATER.lock:
            _HIGH_WATER.active.discard(self)
            if self.exact:
                self._see(_HIGH_WATER.read_mb())
        self._see(current_rss_mb())


class _HighWaterMark:
    """The kernel's peak RSS of this process, reset for each :class:`RssPeak` block. Each reset first hands the mark
    it erases to every open block and to the lifetime record, so that nothing measured before it is lost."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: set[RssPeak] = set()
        self.lifetime_mb = 0.0
        self.resettable: bool | None = None  # found out on the first reset

    def read_mb(self) -> float | None:
        try:
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def reset(self) -> bool:
        """Reset the mark (the caller holds ``lock``); False where the kernel does not allow it."""
        if self.resettable is None:
            self.resettable = _CLEAR_REFS.exists()
        if not self.resettable:
            return False
        mark = self.read_mb()
        if mark is None:
            self.resettable = False
            return False
        self.lifetime_mb = max(self.lifetime_mb, mark)
        for block in self.active:
            block._see(mark)
        try:
            _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS (Linux 4.0+; Documentation/filesystems/proc.rst)
        except OSError:
            self.resettable = False
            return False
        return True


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_HIGH_WATER = _HighWaterMark()

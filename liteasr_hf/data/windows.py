"""Whisper's 30 s input windows from clips of speech: short clips joined to fill a window (calibration), long ones
cut into utterance-length pieces (healing)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from .audio import SAMPLING_RATE


def pack_clips(clips: Iterable[np.ndarray], max_seconds: float, sampling_rate: int = SAMPLING_RATE,
               gap_seconds: float = 0.4, limit: int | None = None) -> list[np.ndarray]:
    """Join consecutive clips (with short silences) into windows of at most ``max_seconds``; at most ``limit``
    windows, taking no clip from ``clips`` beyond the one that starts window ``limit + 1`` (a lazy ``clips`` is
    then decoded only as far as the windows need).

    Whisper pads every input to 30 s; calibrating on mostly-padding windows skews the statistics toward
    silence, so short clips are joined to fill the window the way real long-form audio does.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 window, got {limit}.")
    if max_seconds <= 0:
        return list(itertools.islice(clips, limit))
    size = int(max_seconds * sampling_rate)
    gap = np.zeros(int(gap_seconds * sampling_rate), dtype=np.float32)
    packed, current = [], []
    length = 0
    for clip in clips:
        clip = np.asarray(clip, dtype=np.float32)[:size]
        extra = clip.size + (gap.size if current else 0)
        if current and length + extra > size:
            packed.append(np.concatenate(current))
            if len(packed) == limit:
                return packed
            current, length = [], 0
            extra = clip.size
        if current:
            current.append(gap)
        current.append(clip)
        length += extra
    if current:
        packed.append(np.concatenate(current))
    return packed


def cut_pieces(clips: Sequence[np.ndarray], seconds: tuple[float, float], seed: int = 0,
               sampling_rate: int = SAMPLING_RATE) -> list[np.ndarray]:
    """Cut every clip into consecutive pieces whose lengths are drawn uniformly from ``seconds``; a clip shorter
    than the shortest piece stays whole, and a remainder under half the shortest piece is dropped."""
    rng = np.random.default_rng(seed)
    low, high = (int(s * sampling_rate) for s in seconds)
    pieces = []
    for clip in clips:
        clip = np.asarray(clip, dtype=np.float32)
        if clip.size <= low:
            pieces.append(clip)
            continue
        start = 0
        while clip.size - start >= low // 2:
            length = int(rng.integers(low, high + 1))
            pieces.append(clip[start : start + length])
            start += length
    return pieces

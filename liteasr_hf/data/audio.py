"""Decode one audio item into the float32 mono waveform at 16 kHz that Whisper's feature extractor expects.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG, MP3 with libsndfile >= 1.1) rather than ``datasets``'
own decoding, which since datasets 4 needs torchcodec: cast audio columns with ``Audio(decode=False)`` and
pass the resulting ``{"bytes", "path"}`` dicts here.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLING_RATE = 16_000


class AudioError(ValueError):
    """An audio item that cannot be used: missing, unreadable, empty or not finite."""


def load_audio(source: Any, sampling_rate: int = SAMPLING_RATE, name: str | None = None) -> np.ndarray:
    """Decode ``source`` to a float32 mono waveform at ``sampling_rate``; shape ``(samples,)``.

    ``source`` is a path, encoded bytes, or a dict as ``datasets`` yields it: ``{"array", "sampling_rate"}``
    (decoded), ``{"raw", "sampling_rate"}`` (the ASR pipeline's form) or ``{"bytes", "path"}`` (not decoded).
    Several channels are averaged; another rate is resampled with a polyphase filter. ``name`` is used
    in error messages (default: the path, when there is one). Raises :class:`AudioError`.
    """
    name = name or _describe(source)
    if isinstance(source, dict):
        array = source.get("array", source.get("raw"))
        if array is not None:
            if "sampling_rate" not in source:
                raise AudioError(f"{name}: an audio array comes without its sampling_rate.")
            audio, rate = _channels_last(np.asarray(array, dtype=np.float32), name), int(source["sampling_rate"])
        elif source.get("bytes") is not None:
            audio, rate = _decode(source["bytes"], name)
        elif source.get("path") is not None:
            audio, rate = _decode(source["path"], name)
        else:
            raise AudioError(f"{name}: the audio dict has no 'array', 'bytes' or 'path' (keys: {sorted(source)}).")
    elif isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        audio, rate = _decode(source, name)
    elif hasattr(source, "get_all_samples"):  # a torchcodec AudioDecoder, as datasets >= 4 decodes Audio
        samples = source.get_all_samples()
        audio, rate = np.asarray(samples.data, dtype=np.float32).T, int(samples.sample_rate)
    else:
        raise AudioError(f"{name}: cannot read audio from a {type(source).__name__}.")
    return _to_mono_at_rate(audio, rate, sampling_rate, name)


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, dict) and source.get("path"):
        return str(source["path"])
    return f"<{type(source).__name__} audio>"


def _decode(source: str | os.PathLike | bytes | bytearray | memoryview, name: str) -> tuple[np.ndarray, int]:
    """soundfile's ``(frames, channels)`` float32 array and the file's sampling rate."""
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise AudioError(f"{name}: no such audio file: {source}")
        file = source
    else:
        if len(source) == 0:
            raise AudioError(f"{name}: the audio bytes are empty.")
        file = io.BytesIO(bytes(source))
    try:
        audio, rate = sf.read(file, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:  # TypeError: soundfile on unknown formats
        raise AudioError(f"{name}: unreadable audio ({err}).") from err
    return audio, int(rate)


def _channels_last(array: np.ndarray, name: str) -> np.ndarray:
    """``(frames, channels)`` from a 1-D array or a 2-D array in either layout (fewer channels than frames)."""
    if array.ndim == 1:
        return array[:, None]
    if array.ndim == 2:
        return array if array.shape[0] >= array.shape[1] else array.T
    raise AudioError(f"{name}: an audio array must have 1 or 2 dimensions, not shape {array.shape}.")


def _to_mono_at_rate(audio: np.ndarray, rate: int, target_rate: int, name: str) -> np.ndarray:
    """Average ``(frames, channels)`` to mono and resample ``rate`` -> ``target_rate``."""
    if audio.size == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples).")
    if rate <= 0:
        raise AudioError(f"{name}: invalid sampling rate {rate}.")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{name}: the audio contains NaN or infinite samples.")
    if rate != target_rate:
        # resample_poly low-pass filters before decimating, so downsampling does not alias.
        g = math.gcd(rate, target_rate)
        mono = resample_poly(mono, target_rate // g, rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)

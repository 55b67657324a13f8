"""Audio conditioning shared by synthetic and real clips: mono 16 kHz, silence trimmed, level normalized."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly

from .audio import SAMPLING_RATE as SAMPLE_RATE  # Whisper's rate; one definition for the package


def to_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(samples,) or (samples, channels) at ``sample_rate`` -> float32 (samples,) at 16 kHz."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        g = math.gcd(SAMPLE_RATE, sample_rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, sample_rate // g)
    return audio.astype(np.float32)


def _frame_rms_db(audio: np.ndarray, frame: int) -> np.ndarray:
    """RMS level of consecutive frames in dB relative to full scale: (samples,) -> (frames,)."""
    n = max(1, math.ceil(len(audio) / frame))
    padded = np.zeros(n * frame, dtype=np.float64)
    padded[: len(audio)] = audio
    rms = np.sqrt(np.mean(padded.reshape(n, frame) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def trim_silence(
    audio: np.ndarray, keep_seconds: float = 0.2, threshold_db: float = -45.0, frame_seconds: float = 0.01
) -> np.ndarray:
    """Cut leading and trailing silence to at most ``keep_seconds``; (samples,) at 16 kHz -> (samples',).

    Silence is a 10 ms frame more than ``-threshold_db`` dB below the loudest frame; the threshold is relative
    so that quiet engines are trimmed like loud ones.
    """
    frame = int(frame_seconds * SAMPLE_RATE)
    level = _frame_rms_db(audio, frame)
    voiced = np.flatnonzero(level > level.max() + threshold_db)
    if voiced.size == 0:
        raise ValueError("trim_silence: the audio is silent.")
    keep = int(keep_seconds * SAMPLE_RATE)
    start = max(0, voiced[0] * frame - keep)
    end = min(len(audio), (voiced[-1] + 1) * frame + keep)
    return audio[start:end]


def normalize_level(
    audio: np.ndarray, target_rms_db: float = -20.0, peak: float = 0.89, gate_db: float = -40.0
) -> np.ndarray:
    """Scale (samples,) so that speech sits at ``target_rms_db`` dBFS, with peaks at most ``peak``.

    The RMS is taken over frames within ``-gate_db`` dB of the loudest one, so pauses do not count: a clip of
    several sentences ends at the same loudness as a clip of one.
    """
    frame = int(0.02 * SAMPLE_RATE)
    level = _frame_rms_db(audio, frame)
    active = level > level.max() + gate_db
    active_rms_db = 10 * np.log10(np.mean(10 ** (level[active] / 10)))
    gain = 10 ** ((target_rms_db - active_rms_db) / 20)
    max_abs = float(np.abs(audio).max())
    gain = min(gain, peak / max_abs)
    return (audio * gain).astype(np.float32)


"""Augmentation of calibration and healing audio: other voices, rooms and channels than the recordings hold.

Calibration keeps the directions its audio uses, and healing fits the factors to its audio: both only generalize to
speakers and conditions that look like what they read. Each transform here widens that from the same recordings:

- ``speed``: tempo, pitch and formants together (resampling, as speed perturbation does);
- ``child``: pitch and formants raised by a factor (a shorter vocal tract), tempo kept (resample, then a phase
  vocoder brings the duration back);
- ``noise``: white or speech-shaped noise at a signal-to-noise ratio;
- ``reverb``: a synthetic room impulse response (exponentially decaying noise) of a given RT60;
- ``telephone``: 300-3400 Hz band, 8 kHz sampling and mu-law companding, back at 16 kHz.

Every transform is a pure function of its input and a ``numpy.random.Generator``: the same seed gives the same audio.
Only numpy and scipy are used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from scipy.signal import butter, fftconvolve, istft, lfilter, resample_poly, sosfiltfilt, stft

from .conditioning import SAMPLE_RATE

KINDS = ("speed", "child", "noise", "reverb", "telephone")


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """``audio`` played ``speed`` times as fast: tempo, pitch and formants together. (samples,) -> (samples / speed,)."""
    if speed <= 0:
        raise ValueError(f"speed = {speed!r}: must be positive.")
    if speed == 1.0:
        return np.asarray(audio, dtype=np.float32)
    ratio = Fraction(speed).limit_denominator(100)
    return resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)


def time_stretch(audio: np.ndarray, factor: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """``audio`` made ``factor`` times as long with its pitch kept (phase vocoder). (samples,) -> (~samples * factor,).

    Phases advance by each bin's measured frequency, so tones stay continuous; 32 ms frames suit speech.
    """
    if factor <= 0:
        raise ValueError(f"factor = {factor!r}: must be positive.")
    audio = np.asarray(audio, dtype=np.float64)
    if factor == 1.0 or audio.size < n_fft:
        return audio.astype(np.float32)
    _, _, spec = stft(audio, nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros", padded=True)
    frames = spec.shape[1]
    steps = np.arange(0, frames - 1, 1 / factor)  # read positions in the input's frames
    expected = 2 * np.pi * hop * np.arange(spec.shape[0]) / n_fft  # phase advance of each bin's centre per hop
    phase = np.angle(spec[:, 0])
    out = np.empty((spec.shape[0], steps.size), dtype=np.complex128)
    for k, position in enumerate(steps):
        i, frac = int(position), position - int(position)
        magnitude = (1 - frac) * np.abs(spec[:, i]) + frac * np.abs(spec[:, i + 1])
        out[:, k] = magnitude * np.exp(1j * phase)
        delta = np.angle(spec[:, i + 1]) - np.angle(spec[:, i]) - expected
        delta -= 2 * np.pi * np.round(delta / (2 * np.pi))
        phase = phase + expected + delta
    _, stretched = istft(out, nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    length = round(audio.size * factor)
    stretched = np.pad(stretched, (0, max(0, length - stretched.size)))  # the last frame's hop, as silence
    return stretched[:length].astype(np.float32)


def shift_voice(audio: np.ndarray, factor: float) -> np.ndarray:
    """Pitch and formants raised by ``factor`` (1.2: about a child's vocal tract against an adult's), tempo kept."""
    return time_stretch(change_speed(audio, factor), factor)[: len(audio)]


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "speech") -> np.ndarray:
    """``audio`` plus noise at ``snr_db`` dB below its active level. ``colour``: ``white``, or ``speech`` (white noise
    through the long-term spectrum of the clip itself, so the noise masks the bands the voice uses)."""
    audio = np.asarray(audio, dtype=np.float64)
    noise = rng.standard_normal(audio.size)
    if colour == "speech":
        spectrum = np.abs(np.fft.rfft(audio))
        width = max(1, spectrum.size // 64)  # smooth to the envelope, not the harmonics
        envelope = np.convolve(spectrum, np.ones(width) / width, mode="same")
        noise = np.fft.irfft(np.fft.rfft(noise) * envelope, n=audio.size)
    elif colour != "white":
        raise ValueError(f"colour = {colour!r}: use 'white' or 'speech'.")
    signal_power = _active_power(audio)
    noise *= math.sqrt(signal_power / (np.mean(noise**2) + 1e-20) / 10 ** (snr_db / 10))
    return _fit(audio + noise)


def add_reverb(audio: np.ndarray, rt60: float, rng: np.random.Generator, direct_to_reverb_db: float = 0.0
               ) -> np.ndarray:
    """``audio`` in a room whose reverberation falls 60 dB in ``rt60`` seconds (a synthetic impulse response:
    a direct path, then exponentially decaying noise), at the same length."""
    if rt60 <= 0:
        raise ValueError(f"rt60 = {rt60!r}: must be positive seconds.")
    audio = np.asarray(audio, dtype=np.float64)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000): -60 dB at rt60
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflections arrive after the direct sound
    tail *= 10 ** (-direct_to_reverb_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-20)
    response = np.concatenate([[1.0], tail[1:]])
    return _fit(fftconvolve(audio, response)[: audio.size], like=audio)


def telephone(audio: np.ndarray) -> np.ndarray:
    """``audio`` as a narrow-band call sounds: 300-3400 Hz, 8 kHz, mu-law (8 bits), resampled to 16 kHz."""
    audio = np.asarray(audio, dtype=np.float64)
    band = butter(6, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = resample_poly(sosfiltfilt(band, audio), 1, 2)
    peak = np.abs(narrow).max() + 1e-12
    mu = 255.0
    x = narrow / peak
    coded = np.round((np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)) * 127) / 127
    decoded = np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu * peak
    return _fit(resample_poly(decoded, 2, 1)[: audio.size], like=audio)


def _active_power(audio: np.ndarray) -> float:
    """Mean power of the 20 ms frames within 40 dB of the loudest (pauses do not count)."""
    frame = int(0.02 * SAMPLE_RATE)
    n = max(1, audio.size // frame)
    power = np.mean(audio[: n * frame].reshape(n, -1) ** 2, axis=1) if audio.size >= frame else np.array(
        [np.mean(audio**2)])
    return float(np.mean(power[power > power.max() * 1e-4])) if power.max() > 0 else 0.0


def _fit(audio: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """float32, at the active level of ``like`` (if given), peaks within [-0.99, 0.99]."""
    if like is not None:
        audio = audio * math.sqrt(_active_power(like) / (_active_power(audio) + 1e-20))
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    return audio.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One transform with its parameter: ``speed`` (factor), ``child`` (factor), ``noise`` (SNR dB), ``reverb``
    (RT60 s) or ``telephone`` (no parameter)."""

    kind: str
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Augmentation kind {self.kind!r}: use one of {', '.join(KINDS)}.")
        if (self.kind == "telephone") != (self.value is None):
            raise ValueError(f"Augmentation {self.kind!r}: " + (
                "takes no value." if self.kind == "telephone" else "needs a value (factor, SNR in dB or RT60 in s)."))

    @property
    def name(self) -> str:
        return self.kind if self.value is None else f"{self.kind}{self.value:g}"

    @classmethod
    def parse(cls, text: str) -> "Augmentation":
        """``"speed0.9"``, ``"child1.25"``, ``"noise10"``, ``"reverb0.4"``, ``"telephone"``."""
        for kind in KINDS:
            if text.startswith(kind):
                rest = text[len(kind):]
                try:
                    return cls(kind, float(rest) if rest else None)
                except ValueError as err:
                    raise ValueError(f"Augmentation {text!r}: {err}") from None
        raise ValueError(f"Augmentation {text!r}: start with one of {', '.join(KINDS)} (e.g. noise10, speed1.1).")

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        transforms: dict[str, Callable[[], np.ndarray]] = {
            "speed": lambda: change_speed(audio, self.value),
            "child": lambda: shift_voice(audio, self.value),
            "noise": lambda: add_noise(audio, self.value, rng),
            "reverb": lambda: add_reverb(audio, self.value, rng),
            "telephone": lambda: telephone(audio),
        }
        return transforms[self.kind]()


#: What the default calibration and healing audio add to each real recording, each clip getting one of them in turn.
DEFAULT_AUGMENTATIONS = tuple(Augmentation.parse(a) for a in (
    "speed0.9", "speed1.1", "child1.2", "child1.35", "noise20", "noise10", "noise5", "reverb0.3", "reverb0.7",
    "telephone"))


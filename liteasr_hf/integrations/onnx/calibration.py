"""Real speech for the activation ranges of a statically quantized encoder: log-mel windows packed as the compressor
packs its calibration audio, fed to ONNX Runtime's calibrator a batch at a time."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...compression.settings import CompressionSettings
from ...data.speech import LoadFailure, SpeechSource
from ...data.windows import pack_clips

#: 30 s windows of the default calibration mix, packed as rank calibration packs them (the compressor's defaults).
CALIBRATION_WINDOWS = CompressionSettings.num_samples
PACK_SECONDS = CompressionSettings.pack_seconds


@dataclass(frozen=True)
class CalibrationAudio:
    """Which audio set the ranges, as ``export_info.json`` records it."""

    data: str
    split: str | None
    windows: int
    pack_seconds: float
    uses: tuple[str, ...]  # what the scheme measured on it (see Q8Scheme.calibration_uses)

    def to_dict(self) -> dict:
        return {**asdict(self), "uses": list(self.uses)}


def calibration_features(feature_extractor, source: SpeechSource | None = None, windows: int = CALIBRATION_WINDOWS,
                         pack_seconds: float = PACK_SECONDS) -> np.ndarray:
    """Log-mel features ``(windows, mels, 3000)`` of ``source`` (default: the compressor's speaker mix, every group
    in turn), short clips joined into windows of ``pack_seconds`` as :func:`~liteasr_hf.data.windows.pack_clips`
    does for rank calibration. Raises when the audio fills no window."""
    from ...data.suite import speaker_mix

    source = source or speaker_mix(progress=False)
    clips = (row.audio for row in source.stream() if not isinstance(row, LoadFailure))
    packed = pack_clips(clips, pack_seconds, limit=windows)
    if not packed:
        raise ValueError(f"No usable calibration audio in {source.data} (split {source.split}).")
    return feature_extractor(packed, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)


class EncoderFeedReader:
    """An ONNX Runtime ``CalibrationDataReader`` over log-mel windows: ``{"input_features": (batch, mels, 3000)}``
    per call, then None. The calibrator keeps running minima and maxima, so the windows are read once, a batch at a
    time."""

    def __init__(self, features: np.ndarray, batch_size: int = 1):
        if features.ndim != 3 or not len(features):
            raise ValueError(f"features must be (windows, mels, frames) with at least one window, got {features.shape}.")
        self.features = features
        self.batch_size = batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.features):
            return None
        batch = self.features[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {"input_features": batch}

    def rewind(self) -> None:
        self.position = 0

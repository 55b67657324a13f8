"""What an encoder graph's intermediate tensors look like on calibration audio: each tensor's peak per channel and
its root mean square, accumulated window by window (the tensors themselves are not kept)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx


@dataclass
class TensorStatistics:
    """Running statistics of one tensor over its last axis."""

    peaks: np.ndarray  # (channels,) max |x| per channel
    squares: float  # sum of x**2
    count: int  # number of values
    channel_squares: np.ndarray | None = None  # (channels,) sum of x**2 per channel (float64)

    @property
    def peak_to_rms(self) -> float:
        """``max |x| / rms(x)``: how far one 8-bit step (set by the peak) is from typical values."""
        rms = np.sqrt(self.squares / max(self.count, 1))
        return float(self.peaks.max() / rms) if rms > 0 else 0.0

    def add(self, value: np.ndarray) -> None:
        flat = np.abs(value).reshape(-1, value.shape[-1])
        self.peaks = np.maximum(self.peaks, flat.max(axis=0))
        per_channel = np.square(flat, dtype=np.float64).sum(axis=0)
        self.channel_squares = per_channel if self.channel_squares is None else self.channel_squares + per_channel
        self.squares += float(per_channel.sum())
        self.count += flat.size


def activation_statistics(model: onnx.ModelProto, names: list[str], features: np.ndarray,
                          threads: int | None = None) -> dict[str, TensorStatistics]:
    """:class:`TensorStatistics` of the tensors ``names`` of the encoder ``model`` (weights loaded) over the log-mel
    windows ``features`` ``(n, mels, 3000)``, one window at a time."""
    import onnxruntime as ort

    from .runtime import session_options

    names = list(dict.fromkeys(names))
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in outputs)
    stats: dict[str, TensorStatistics] = {}
    with tempfile.TemporaryDirectory() as folder:  # a file with its weights beside it: no 2 GiB limit
        path = Path(folder) / "probe.onnx"
        onnx.save_model(probe, path, save_as_external_data=True, location="probe.onnx_data")
        session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        for window in features:
            values = session.run(names, {"input_features": window[None].astype(np.float32)})
            for name, value in zip(names, values):
                if name not in stats:
                    stats[name] = TensorStatistics(np.zeros(value.shape[-1], np.float32), 0.0, 0)
                stats[name].add(value)
    return stats

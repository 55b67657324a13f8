"""Speech recognition pipeline for LiteWhisper models.

transformers' ASR pipeline chooses Whisper's pre- and post-processing (30 s chunking, sequential long-form,
timestamps, language and task) by ``model.config.model_type == "whisper"``; a ``lite-whisper`` model would
otherwise fall into the generic sequence-to-sequence branch. This class is that pipeline, with ``lite-whisper``
treated as Whisper and every other model as before. It reaches users two ways:

- with remote code: ``config.custom_pipelines`` of a saved folder names this file, so
  ``pipeline("automatic-speech-recognition", model=path, trust_remote_code=True)`` uses it;
- in a process that imported ``liteasr_hf``: the package makes it the implementation of the
  ``automatic-speech-recognition`` task, so ``pipeline(...)`` needs no remote code, for the published
  lite-whisper repos' folders too.

For every model it also checks the audio before the model sees it (empty or non-finite audio is an error, silence a
warning) and resamples arrays at another rate in torch, where the parent needs torchaudio.

This file travels to the Hugging Face Hub next to the weights: it imports only torch and transformers.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from transformers import AutomaticSpeechRecognitionPipeline
from transformers.pipelines.audio_utils import ffmpeg_read
from transformers.utils import is_numpy_array

SILENCE_WARNING = ("the audio is silent (every sample is zero); Whisper tends to make up words for silence "
                   "(such as ' you') and may take long to do so")


class LiteWhisperSpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """`AutomaticSpeechRecognitionPipeline` that treats a ``lite-whisper`` model as Whisper."""

    # The parent's `__init__` assigns `type` from model_type and, in transformers 4.57, already checks the call
    # parameters against it (a lite-whisper model is "ctc" there, which rejects `return_timestamps=False`): so
    # `type` reads as Whisper's for a lite-whisper model from the start, and as the parent set it otherwise.
    @property
    def type(self) -> str:
        return "seq2seq_whisper" if self.model.config.model_type == "lite-whisper" else self._type

    @type.setter
    def type(self, value: str) -> None:
        self._type = value

    # Adapted for transformers 4.57 and 5.x, whose preprocess runs from input to features with no hook between: it
    # hands empty or NaN audio to the model (which hears "You" or "0") and resamples arrays only with torchaudio. So
    # the audio is decoded, checked and resampled here, and the parent chunks and batches an array at its rate.
    def preprocess(self, inputs: Any, chunk_length_s: float = 0, stride_length_s: Any = None):
        inputs = self._checked_audio(inputs)
        yield from super().preprocess(inputs, chunk_length_s=chunk_length_s, stride_length_s=stride_length_s)

    def _checked_audio(self, inputs: Any) -> Any:
        """``inputs`` with a local file or bytes decoded, a dict's array resampled to the feature extractor's rate,
        and the samples checked (:func:`check_samples`); other inputs unchanged, for the parent to accept or refuse."""
        rate = self.feature_extractor.sampling_rate
        if isinstance(inputs, str) and not inputs.startswith(("http://", "https://")):
            with open(inputs, "rb") as file:
                inputs = file.read()
        if isinstance(inputs, bytes):
            inputs = ffmpeg_read(inputs, rate)  # as the parent decodes it: ffmpeg resamples to `rate`
        if hasattr(inputs, "get_all_samples"):  # a torchcodec AudioDecoder (datasets >= 4), as the parent reads it
            decoded = inputs.get_all_samples()
            samples = decoded.data[0] if decoded.data.shape[0] == 1 else decoded.data  # (channels, samples)
            inputs = {"array": samples, "sampling_rate": decoded.sample_rate}
        if isinstance(inputs, dict) and "sampling_rate" in inputs:
            key = "raw" if inputs.get("raw") is not None else "array"
            if not (torch.is_tensor(inputs.get(key)) or is_numpy_array(inputs.get(key))):
                return inputs
            inputs = dict(inputs)  # the parent pops its keys: the caller's dict stays as it was
            check_samples(inputs[key])
            if inputs["sampling_rate"] != rate:
                ratio = rate / inputs["sampling_rate"]
                inputs[key] = resample(inputs[key], inputs["sampling_rate"], rate).cpu().numpy()
                inputs["sampling_rate"] = rate
                if inputs.get("stride") is not None:  # in input samples, which the parent scales by its own ratio
                    inputs["stride"] = tuple(int(round(side * ratio)) for side in inputs["stride"])
        elif torch.is_tensor(inputs) or is_numpy_array(inputs):
            check_samples(inputs)
        return inputs


def _as_tensor(audio: Any) -> torch.Tensor:
    """A torch tensor or numpy array as a tensor, sharing its memory where torch can."""
    if torch.is_tensor(audio):
        return audio
    # torch.from_numpy warns about a read-only array (ffmpeg_read returns one): that one is copied
    return torch.from_numpy(audio if audio.flags.writeable else audio.copy())


def check_samples(audio: Any) -> None:
    """Raise ValueError for empty audio or NaN / infinite samples; warn (once, by Python's default filter) for
    silence, which is legitimate audio but makes Whisper invent words. ``audio``: tensor or array ``(..., samples)``.
    """
    samples = _as_tensor(audio)
    if samples.numel() == 0:
        raise ValueError(f"the audio is empty (0 samples, shape {tuple(samples.shape)}); pass at least one sample")
    bad = samples.numel() - int(torch.isfinite(samples).sum())
    if bad:
        raise ValueError(f"the audio holds NaN or infinite samples ({bad} of {samples.numel()}); "
                         "clean or re-decode it")
    if not samples.any():
        warnings.warn(SILENCE_WARNING, stacklevel=2)


def resample(audio: Any, orig_rate: int, new_rate: int, zero_crossings: int = 64, rolloff: float = 0.9475,
             beta: float = 14.77) -> torch.Tensor:
    """Band-limited resampling of ``audio`` ``(..., samples)`` from ``orig_rate`` to ``new_rate`` Hz, along the last
    axis: a Kaiser-windowed sinc low-pass at ``rolloff`` times the lower Nyquist frequency, ``zero_crossings`` on
    each side, applied as a polyphase filter (one strided convolution, one output channel per phase). The defaults
    are torchaudio's "kaiser_best". Returns float32 (float64 for float64 input), ``(..., ceil(samples * new / orig))``.
    """
    if int(orig_rate) != orig_rate or int(new_rate) != new_rate or orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sampling rates must be positive whole numbers of Hz, got {orig_rate!r} -> {new_rate!r}")
    samples = _as_tensor(audio)
    samples = samples.to(torch.float64 if samples.dtype == torch.float64 else torch.float32)
    common = math.gcd(int(orig_rate), int(new_rate))
    down, up = int(orig_rate) // common, int(new_rate) // common
    # Output sample q * up + p lies at input time q * down + p * down / up: phase p weighs the input samples around
    # it by the kernel at (its time - their index). Times and cutoff are in input samples.
    cutoff = rolloff * min(1.0, up / down) / 2  # cycles per input sample
    half_width = zero_crossings / (2 * cutoff)
    pad = math.ceil(half_width)
    offsets = (torch.arange(up, dtype=torch.float64)[:, None] * down / up + pad
               - torch.arange(down + 2 * pad + 1, dtype=torch.float64))  # (up, taps)
    beta = torch.tensor(beta, dtype=torch.float64)
    window = torch.special.i0(beta * (1 - (offsets / half_width) ** 2).clamp(min=0).sqrt()) / torch.special.i0(beta)
    kernel = 2 * cutoff * torch.sinc(2 * cutoff * offsets) * window * (offsets.abs() <= half_width)  # (up, taps)

    length = samples.shape[-1]
    out_length = -(-length * up // down)
    frames = -(-out_length // up)
    right = max((frames - 1) * down + kernel.shape[1] - pad - length, 0)
    padded = torch.nn.functional.pad(samples.reshape(-1, 1, length), (pad, right))  # (batch, 1, pad + length + right)
    phases = torch.nn.functional.conv1d(padded, kernel.to(padded)[:, None, :], stride=down)  # (batch, up, frames)
    return phases.transpose(1, 2).reshape(*samples.shape[:-1], frames * up)[..., :out_length]

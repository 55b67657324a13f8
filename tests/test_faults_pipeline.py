"""The ASR pipeline refuses degenerate audio with its reason, and resamples arrays at any rate without torchaudio
(real tiny.en, real speech; the resampler against scipy and against the exact signal)."""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly
from transformers import pipeline

from liteasr_hf import LiteWhisperSpeechRecognitionPipeline
from liteasr_hf.models.lite_whisper import pipeline_lite_whisper

SPEECH = Path(__file__).resolve().parent.parent / "data" / "speech" / "evaluation"
CLIP = SPEECH / "librivox-sense_and_sensibility_01_austen_64kb-0880.flac"  # "He was not an ill-disposed young man."
# Degenerate audio reached generate before it was checked: a short greedy run keeps such a test quick either way.
QUICK = {"generate_kwargs": {"max_new_tokens": 5, "num_beams": 1}}
NAN_MESSAGE = "the audio holds NaN or infinite samples ({} of {}); clean or re-decode it"
# One torch thread: on a machine shared with other work, threads waiting for busy cores make generate many times
# slower (about 15 times, seen here).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def asr(tiny_en_dir):
    transcriber = pipeline("automatic-speech-recognition", model=str(tiny_en_dir), device="cpu")
    assert isinstance(transcriber, LiteWhisperSpeechRecognitionPipeline)
    return transcriber


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    audio, rate = sf.read(CLIP, dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


def at_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """``audio`` (16 kHz) at ``rate``, by scipy's polyphase resampler (independent of the pipeline's)."""
    common = math.gcd(rate, 16000)
    return resample_poly(audio, rate // common, 16000 // common).astype(np.float32)


def first_line(error: pytest.ExceptionInfo) -> str:
    return str(error.value).splitlines()[0]


def decode_like_ffmpeg(payload: bytes, sampling_rate: int) -> np.ndarray:
    """Stand-in for transformers' ffmpeg_read (ffmpeg is not installed here): float32 mono at ``sampling_rate``."""
    import io

    audio, rate = sf.read(io.BytesIO(payload), dtype="float32")
    assert rate == sampling_rate
    audio.flags.writeable = False  # as np.frombuffer returns it
    return audio


def with_bad_samples(audio: np.ndarray, value: float, count: int) -> np.ndarray:
    audio = audio.copy()
    audio[1000:1000 + count] = value
    return audio


@pytest.mark.parametrize("form", ["array", "tensor", "dict raw", "dict array at 8 kHz", "file", "bytes"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(asr, clip, tmp_path, monkeypatch, form, value):
    bad = with_bad_samples(clip, value, 37)
    if form == "array":
        inputs = bad
    elif form == "tensor":
        inputs = torch.from_numpy(bad)
    elif form == "dict raw":
        inputs = {"raw": bad, "sampling_rate": 16000}
    elif form == "dict array at 8 kHz":  # counted before resampling, which would spread them over the whole clip
        bad = with_bad_samples(at_rate(clip, 8000), value, 37)
        inputs = {"array": bad, "sampling_rate": 8000}
    else:
        monkeypatch.setattr(pipeline_lite_whisper, "ffmpeg_read", decode_like_ffmpeg, raising=False)
        path = tmp_path / "bad.wav"
        sf.write(path, bad, 16000, subtype="FLOAT")
        inputs = str(path) if form == "file" else path.read_bytes()
    with pytest.raises(ValueError) as error:
        asr(inputs, **QUICK)
    assert first_line(error) == NAN_MESSAGE.format(37, bad.size)


@pytest.mark.parametrize("inputs", [
    np.zeros(0, dtype=np.float32),
    torch.zeros(0),
    {"raw": np.zeros(0, dtype=np.float32), "sampling_rate": 16000},
    {"array": np.zeros(0, dtype=np.float32), "sampling_rate": 8000},
], ids=["array", "tensor", "dict", "dict at 8 kHz"])
def test_empty_audio_is_refused(asr, inputs):
    with pytest.raises(ValueError) as error:
        asr(inputs, **QUICK)
    assert first_line(error) == "the audio is empty (0 samples, shape (0,)); pass at least one sample"


def test_a_bad_item_in_a_batch_is_refused(asr, clip):
    with pytest.raises(ValueError) as error:
        asr([clip, with_bad_samples(clip, np.nan, 5)], batch_size=2, **QUICK)
    assert first_line(error) == NAN_MESSAGE.format(5, clip.size)


def test_silence_is_transcribed_with_a_warning(asr):
    # Silence is legitimate audio (a muted stretch of a recording): not an error. Whisper makes words up for it
    # though, so the caller is told, once per process by Python's default warning filter.
    with pytest.warns(UserWarning) as record:
        out = asr({"raw": np.zeros(16000, dtype=np.float32), "sampling_rate": 16000}, **QUICK)
    assert isinstance(out["text"], str)
    assert [str(w.message) for w in record if "silent" in str(w.message)] == [pipeline_lite_whisper.SILENCE_WARNING]


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resample_matches_scipy_and_the_exact_tone(rate):
    seconds = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
    ours = pipeline_lite_whisper.resample(tone, rate, 16000).numpy()
    common = math.gcd(rate, 16000)
    reference = resample_poly(tone.astype(np.float64), 16000 // common, rate // common)
    exact = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert ours.shape == reference.shape == (16000,) and ours.dtype == np.float32
    inner = slice(160, -160)  # 10 ms from each end, where both filters see the zero padding
    # scipy's default Kaiser window (beta 5) ripples by about 1e-3 in the pass band; ours is the closer to exact
    assert np.abs(ours - reference)[inner].max() < 1e-3
    assert np.abs(ours - exact)[inner].max() < 1e-5


def test_resample_removes_what_the_new_rate_cannot_hold():
    # A 10 kHz tone at 44.1 kHz is above 16 kHz's Nyquist frequency: without a low-pass it would alias to 6 kHz.
    seconds = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 10_000 * seconds).astype(np.float32)
    assert np.abs(pipeline_lite_whisper.resample(tone, 44100, 16000).numpy()[160:-160]).max() < 1e-4


def test_resample_keeps_channels_apart():
    stereo = torch.randn(2, 8001)
    both = pipeline_lite_whisper.resample(stereo, 8000, 16000)
    assert both.shape == (2, 16002)
    torch.testing.assert_close(both[1], pipeline_lite_whisper.resample(stereo[1], 8000, 16000))


def test_speech_arrays_at_other_rates_transcribe_as_at_16khz(asr, clip):
    original = asr(clip.copy())["text"]
    assert original.strip() == "He was not an ill-disposed young man."
    assert asr({"raw": at_rate(clip, 8000), "sampling_rate": 8000})["text"] == original
    assert asr({"array": torch.from_numpy(at_rate(clip, 44100)), "sampling_rate": 44100})["text"] == original


def test_stride_is_scaled_with_the_audio(asr, clip):
    # A dict's stride counts input samples; at 8 kHz each is two of the model's.
    item = next(asr.preprocess({"raw": at_rate(clip, 8000), "sampling_rate": 8000, "stride": (800, 400)}))
    assert item["stride"] == (clip.size, 1600, 800)


def test_chunked_batched_audio_at_8khz(asr, long_audio):
    audio = long_audio[: 16000 * 40]
    kwargs = {"chunk_length_s": 30, "batch_size": 2, "return_timestamps": True, "generate_kwargs": {"num_beams": 1}}
    original = asr(audio.copy(), **kwargs)
    narrowband = asr({"raw": at_rate(audio, 8000), "sampling_rate": 8000}, **kwargs)
    assert len(narrowband["chunks"]) == len(original["chunks"]) >= 2
    assert narrowband["chunks"][-1]["timestamp"][1] > 35  # the chunks span the whole input
    words, heard = (["".join(c for c in word.lower() if c.isalnum()) for word in out["text"].split()]
                    for out in (original, narrowband))
    assert len(words) > 60 and difflib.SequenceMatcher(None, words, heard).ratio() > 0.9

"""Speech for calibration and evaluation: decoding audio, loading data sets, and the shipped speech set's synthesis."""

from .audio import SAMPLING_RATE, AudioError, load_audio
from .speech import SHIPPED_SPEECH_SET, LoadFailure, SpeechSource, Utterance, load_speech, stream_speech

__all__ = [
    "SAMPLING_RATE",
    "SHIPPED_SPEECH_SET",
    "AudioError",
    "LoadFailure",
    "SpeechSource",
    "Utterance",
    "load_audio",
    "load_speech",
    "stream_speech",
]

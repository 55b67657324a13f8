"""LibriSpeech test-other: real English read by adult LibriVox volunteers, for evaluation only.

LibriSpeech (Panayotov, Chen, Povey and Khudanpur, ICASSP 2015; CC-BY-4.0) is audiobook speech read by LibriVox
volunteers, 16 kHz FLAC, with a transcript per utterance. No package registry this project reaches ships it; the
project ships a sample rebuilt by :func:`build_librispeech_set` from two public repositories:

- the audio: the 10 test-other speakers, 10 utterances each, that github.com/resemble-ai/Resemblyzer commits under
  ``audio_data/librispeech_test-other`` (with the corpus's ``SPEAKERS.TXT`` and ``LICENSE.TXT``);
- the transcripts: the test-other references of github.com/facebookresearch/fbai-speech
  (``is21_deep_bias/ref/test-other.biasing_100.tsv``: utterance id, lower-case text, then biasing word lists),
  which are the corpus's ``*.trans.txt`` lines in lower case.

test-other is the corpus's harder half ("less US-accented" speakers): the readers are adults, not all of them native
speakers, so the group is named for the corpus, not for a first language. A test split: evaluation only, never read
by calibration or healing.

A second folder holds **calibration** audio of other readers, made by :func:`build_librispeech_calibration_set`: the
first utterance of each of the 251 train-clean-100 readers that Resemblyzer commits under
``audio_data/librispeech_train-clean-100`` (no transcripts: calibration and healing need none), each cut to its
first ``max_seconds``. LibriSpeech puts every reader in one subset only, so none of them is an evaluation reader.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import soundfile as sf
from tqdm.auto import tqdm

from ..atomic import atomic_directory
from .conditioning import SAMPLE_RATE, to_mono_16k
from .speech_set import write_clip, write_metadata

#: Bumped when the selection recipe changes.
LIBRISPEECH_SET_VERSION = 1
GROUP = "real LibriSpeech adult"
SOURCE = "librispeech"
CORPUS_SPLIT = "test-other"
AUDIO_REPOSITORY = ("github.com/resemble-ai/Resemblyzer", "15d828edebe06bc72b9cabc8ef8ca5ab2cb457ce",
                    "audio_data/librispeech_test-other")
CALIBRATION_SET_VERSION = 1
CALIBRATION_CORPUS_SPLIT = "train-clean-100"
CALIBRATION_REPOSITORY = (*AUDIO_REPOSITORY[:2], "audio_data/librispeech_train-clean-100")  # the same checkout
#: The corpus's citation and licence, as both data cards give them.
CORPUS_AND_LICENCE = ("LibriSpeech (Panayotov, Chen, Povey and Khudanpur, 'Librispeech: an ASR corpus based on public "
                      "domain audio books', ICASSP 2015), 'LibriSpeech (c) 2014 by Vassil Panayotov ... licensed under "
                      "a Creative Commons Attribution 4.0 International License'")
TRANSCRIPT_REPOSITORY = ("github.com/facebookresearch/fbai-speech", "43cdb3ca9644a755d5c6cc55cbcc91132f85ed44",
                         "is21_deep_bias/ref/test-other.biasing_100.tsv")


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One LibriSpeech utterance: ``<speaker>-<chapter>-<index>``."""

    id: str
    path: Path
    text: str
    speaker: str
    gender: str | None


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """Utterance id -> upper-case text from a LibriSpeech ``*.trans.txt`` (``ID TEXT``) or a tab-separated
    ``ID<TAB>text[<TAB>...]`` file such as fbai-speech's references."""
    texts = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, rest = line.partition("\t") if "\t" in line else line.partition(" ")
        text = rest.split("\t")[0].strip()
        if not text:
            raise ValueError(f"{path}, line {number}: no text after the utterance id {key!r}.")
        texts[key.strip()] = " ".join(text.upper().split())
    return texts


def read_speakers(path: Path) -> dict[str, str]:
    """Speaker id -> gender (``F``/``M``) from the corpus's ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``)."""
    genders = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 2 and not line.lstrip().startswith(";") and fields[0].isdigit():
            genders[fields[0]] = fields[1]
    return genders


def _genders(audio: Path) -> dict[str, str]:
    """The genders of the corpus's ``SPEAKERS.TXT`` beside the clips, if it is there."""
    speakers_file = audio / "SPEAKERS.TXT"
    return read_speakers(speakers_file) if speakers_file.is_file() else {}


def read_librispeech_sample(audio: str | os.PathLike, transcripts: str | os.PathLike) -> list[Utterance]:
    """Every ``<speaker>/<id>.flac`` (or ``<speaker>/<chapter>/<id>.flac``) under ``audio`` with its transcript.
    Raises where a clip has no transcript: a sample must be scored whole."""
    audio = Path(audio)
    clips = sorted(audio.rglob("*.flac"))
    if not clips:
        raise FileNotFoundError(f"No .flac files under {audio}: point --audio at the folder of speaker folders "
                                f"({AUDIO_REPOSITORY[2]} in a checkout of {AUDIO_REPOSITORY[0]}).")
    texts = read_transcripts(transcripts)
    missing = [c.stem for c in clips if c.stem not in texts]
    if missing:
        raise ValueError(f"{len(missing)} clip(s) under {audio} have no transcript in {transcripts} (first: "
                         f"{missing[0]}); give the references of the split the clips come from.")
    genders = _genders(audio)
    return [Utterance(id=c.stem, path=c, text=texts[c.stem], speaker=c.stem.split("-")[0],
                      gender=genders.get(c.stem.split("-")[0])) for c in clips]


def build_librispeech_set(audio: str | os.PathLike, transcripts: str | os.PathLike, output: str | os.PathLike,
                          overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Write the sample under ``audio`` (:func:`read_librispeech_sample`) to ``output/evaluation`` (FLAC, 16 kHz,
    samples unchanged) with its metadata and data card, atomically; the metadata rows."""
    utterances = read_librispeech_sample(audio, transcripts)
    with atomic_directory(output, overwrite=overwrite) as out:
        out.chmod(0o755)
        folder = out / "evaluation"
        folder.mkdir()
        rows = []
        for u in tqdm(utterances, desc="LibriSpeech test-other", unit="clip", disable=not progress):
            samples, rate = sf.read(u.path, dtype="float32")
            rows.append(write_clip(folder, f"ls-{u.id}", to_mono_16k(samples, rate), {
                "text": u.text, "speaker": f"ls-{u.speaker}", "group": GROUP, "gender": u.gender,
                "engine": "recording", "source": SOURCE, "corpus_split": CORPUS_SPLIT}))
        write_metadata(folder, rows)
        (out / "README.md").write_text(data_card(rows), encoding="utf-8")
    return rows


def data_card(rows: list[dict]) -> str:
    """The folder's README: what it holds, who speaks, where it comes from and under which terms."""
    speakers = sorted({r["speaker"] for r in rows})
    women = len({r["speaker"] for r in rows if r.get("gender") == "F"})
    minutes = sum(r["duration"] for r in rows) / 60
    return "\n".join([
        "# LibriSpeech test-other sample: real adult readers, for evaluation only",
        "",
        "Written by `python scripts/make_librispeech_set.py` (`liteasr_hf.data.librispeech.build_librispeech_set`, "
        f"recipe v{LIBRISPEECH_SET_VERSION}); regenerate rather than edit.",
        "",
        "| split | corpus split | use | clips | speakers | women | men | minutes | format |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
        f"| evaluation | {CORPUS_SPLIT} | evaluation only | {len(rows)} | {len(speakers)} | {women} | "
        f"{len(speakers) - women} | {minutes:.1f} | FLAC |",
        "",
        f"`group` is `{GROUP}`: adult LibriVox volunteers reading audiobooks. test-other is the corpus's harder "
        "half, of less US-accented speakers; not every reader is a native speaker, so the group is named for the "
        "corpus. `text` is the corpus's transcript (upper case). A test split: neither calibration nor healing "
        "reads it.",
        "",
        "## Source and licence",
        "",
        f"{CORPUS_AND_LICENCE} (its LICENSE.TXT). The audio is the sample of "
        f"{AUDIO_REPOSITORY[0]} (commit {AUDIO_REPOSITORY[1][:12]}, `{AUDIO_REPOSITORY[2]}`; Apache-2.0), the "
        f"transcripts those of {TRANSCRIPT_REPOSITORY[0]} (commit {TRANSCRIPT_REPOSITORY[1][:12]}, "
        f"`{TRANSCRIPT_REPOSITORY[2]}`; MIT), in upper case as the corpus writes them. Samples are copied unchanged.",
        "",
    ])


def read_librispeech_readers(audio: str | os.PathLike) -> list[Utterance]:
    """Every ``<speaker>-<chapter>-<index>.flac`` under ``audio``, without transcripts (``text`` empty): audio for
    calibration. Raises where a file's name is not a LibriSpeech utterance id."""
    audio = Path(audio)
    clips = sorted(audio.rglob("*.flac"))
    if not clips:
        raise FileNotFoundError(f"No .flac files under {audio}: point --audio at {CALIBRATION_REPOSITORY[2]} in a "
                                f"checkout of {CALIBRATION_REPOSITORY[0]}.")
    bad = [c.name for c in clips if len(c.stem.split("-")) != 3 or not all(p.isdigit() for p in c.stem.split("-"))]
    if bad:
        raise ValueError(f"{len(bad)} file(s) under {audio} are not named <speaker>-<chapter>-<index>.flac (first: "
                         f"{bad[0]}): give a folder of LibriSpeech utterances.")
    genders = _genders(audio)
    return [Utterance(id=c.stem, path=c, text="", speaker=c.stem.split("-")[0],
                      gender=genders.get(c.stem.split("-")[0])) for c in clips]


def build_librispeech_calibration_set(audio: str | os.PathLike, output: str | os.PathLike,
                                      max_seconds: float = 6.0, exclude_speakers: set[str] | frozenset = frozenset(),
                                      overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Write the readers under ``audio`` (:func:`read_librispeech_readers`) to ``output/calibration`` (Opus, 16 kHz),
    each clip cut to its first ``max_seconds``, with metadata and data card, atomically; the metadata rows.

    Cutting keeps the readers' share of the calibration mix near that of the other real speakers (the mix adds the
    same seconds of every group, and healing draws from all of it): many readers, a few seconds each. Raises if a
    reader is in ``exclude_speakers`` (the evaluation readers), so that no evaluation speaker is calibrated on.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive; got {max_seconds}.")
    utterances = read_librispeech_readers(audio)
    shared = sorted({u.speaker for u in utterances} & {s.removeprefix("ls-") for s in exclude_speakers})
    if shared:
        raise ValueError(f"Reader(s) {', '.join(shared)} under {audio} are evaluation readers: calibration must not "
                         "hear them.")
    limit = int(max_seconds * SAMPLE_RATE)
    with atomic_directory(output, overwrite=overwrite) as out:
        out.chmod(0o755)
        folder = out / "calibration"
        folder.mkdir()
        rows = []
        for u in tqdm(utterances, desc=f"LibriSpeech {CALIBRATION_CORPUS_SPLIT}", unit="clip", disable=not progress):
            samples, rate = sf.read(u.path, dtype="float32")
            rows.append(write_clip(folder, f"ls-{u.id}", to_mono_16k(samples, rate)[:limit], {
                "speaker": f"ls-{u.speaker}", "group": GROUP, "gender": u.gender, "engine": "recording",
                "source": SOURCE, "corpus_split": CALIBRATION_CORPUS_SPLIT}, codec="opus"))
        write_metadata(folder, rows)
        (out / "README.md").write_text(calibration_data_card(rows, max_seconds), encoding="utf-8")
    return rows


def calibration_data_card(rows: list[dict], max_seconds: float) -> str:
    """The calibration folder's README: what it holds, who speaks, where it comes from and under which terms."""
    speakers = sorted({r["speaker"] for r in rows})
    women = len({r["speaker"] for r in rows if r.get("gender") == "F"})
    minutes = sum(r["duration"] for r in rows) / 60
    return "\n".join([
        f"# LibriSpeech {CALIBRATION_CORPUS_SPLIT} readers: real adult speech for calibration and healing",
        "",
        "Written by `python scripts/make_librispeech_calibration_set.py` "
        "(`liteasr_hf.data.librispeech.build_librispeech_calibration_set`, "
        f"recipe v{CALIBRATION_SET_VERSION}); regenerate rather than edit.",
        "",
        "| split | corpus split | use | clips | speakers | women | men | minutes | format |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
        f"| calibration | {CALIBRATION_CORPUS_SPLIT} | calibration and healing | {len(rows)} | {len(speakers)} | "
        f"{women} | {len(speakers) - women} | {minutes:.1f} | Opus |",
        "",
        f"One utterance per reader, its first {max_seconds:g} s (the corpus's first utterance of a chapter often "
        "opens with the chapter's or book's title). No transcripts: calibration and healing read audio only. "
        f"`group` is `{GROUP}`. LibriSpeech puts each reader in one subset, so no reader here is one of the "
        "test-other readers that evaluation scores.",
        "",
        "## Source and licence",
        "",
        f"{CORPUS_AND_LICENCE}. The audio is the sample of "
        f"{CALIBRATION_REPOSITORY[0]} (commit {CALIBRATION_REPOSITORY[1][:12]}, `{CALIBRATION_REPOSITORY[2]}`; "
        "Apache-2.0), cut and encoded in Opus.",
        "",
    ])

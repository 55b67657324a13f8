"""The project's speech, split by use: what evaluation judges, what calibration and healing read, and who speaks.

Three shipped folders hold it (each an audiofolder per split, with a data card):

- ``data/speechocean762``: real non-native speakers, children and adults (:mod:`.speechocean`): evaluation speakers
  from the corpus's test half; calibration and development speakers from its train half;
- ``data/speech``: eleven synthetic voices reading Harvard sentences, and a few real native recordings
  (:mod:`.speech_set`).

**Evaluation** (:data:`EVALUATION_MANIFEST`) is one manifest over both folders' evaluation splits, every row with its
speaker ``group``; evaluation summaries report WER per group, real speech first.
**Calibration and healing** read :func:`speaker_mix`: the calibration clips of every group interleaved so that at
any point each group has supplied about the same seconds (no group, and so no voice, can set the ranks alone), with
augmented copies of the real clips as one more group. **Healing stops** on the development speakers, whom neither
calibration nor evaluation hears.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_directory, atomic_write_text
from .augmentation import DEFAULT_AUGMENTATIONS, Augmentation
from ..shipped import DATA_ROOT
from .speech import SHIPPED_SPEECH_SET, SpeechSource, load_speech
from .speech_set import read_metadata, write_clip, write_metadata

SPEECHOCEAN_SET = DATA_ROOT / "speechocean762"
#: Real adult readers of LibriSpeech's test-other (:mod:`.librispeech`): evaluation only, not yet in the manifest.
LIBRISPEECH_SET = DATA_ROOT / "librispeech"
#: Real adult readers of LibriSpeech's train-clean-100 (:mod:`.librispeech`), a few seconds each: calibration audio.
LIBRISPEECH_CALIBRATION_SET = DATA_ROOT / "librispeech-calibration"
#: Every shipped evaluation row, with its group: the default data of evaluation and of ``compress.py``'s comparison.
EVALUATION_MANIFEST = DATA_ROOT / "evaluation.jsonl"
#: Speakers that neither calibration nor evaluation hears: what healing stops on and settings are chosen on.
DEVELOPMENT = SpeechSource(SPEECHOCEAN_SET, split="development")
#: Bumped when the mix's recipe changes, so that a cached mix from an older one is not reused.
SPEAKER_MIX_VERSION = 1
#: The cached mix's folder name, without its version: model cards recognise the default calibration audio by it.
SPEAKER_MIX_PREFIX = "speaker-mix-v"
AUGMENTED = "augmented real"
#: What the default mix is made of: the speechocean762 calibration speakers and the synthetic voices.
MIX_SOURCES = {"speechocean762": SpeechSource(SPEECHOCEAN_SET, split="calibration", text_column=None),
               "synthetic": SpeechSource(SHIPPED_SPEECH_SET, split="calibration", text_column=None)}
#: The same with the LibriSpeech train-clean-100 readers: native adults, whom the default mix lacks.
MIX_WITH_READERS_SOURCES = {"speechocean762": MIX_SOURCES["speechocean762"],
                            "librispeech": SpeechSource(LIBRISPEECH_CALIBRATION_SET, split="calibration",
                                                        text_column=None),
                            "synthetic": MIX_SOURCES["synthetic"]}


#: The calibration mixes by name: what :func:`speaker_mix` builds, and what a preset's ``calibration_mix`` names.
MIXES = {"speakers": MIX_SOURCES, "speakers-and-readers": MIX_WITH_READERS_SOURCES}
DEFAULT_MIX = "speakers"


def group_of(row: dict) -> str:
    """A metadata row's speaker group: its ``group`` column, else ``synthetic`` for engine-made speech and
    ``real native adult`` for the speech set's recordings (LibriVox and CMU readers)."""
    if row.get("group"):
        return row["group"]
    return "real native adult" if row.get("engine") == "recording" else "synthetic"


def write_evaluation_manifest(path: str | os.PathLike = EVALUATION_MANIFEST,
                              splits: Sequence[Path] = (SPEECHOCEAN_SET / "evaluation",
                                                        SHIPPED_SPEECH_SET / "evaluation")) -> list[dict]:
    """Write one JSONL manifest over the evaluation ``splits`` (file paths relative to the manifest), each row with
    ``group``; the rows."""
    path = Path(path)
    rows = []
    for folder in splits:
        for row in read_metadata(folder):
            rows.append({**row, "file_name": os.path.relpath(folder / row["file_name"], path.parent),
                         "group": group_of(row)})
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def interleave_by_seconds(groups: dict[str, list[dict]]) -> list[dict]:
    """Rows of every group in one order in which, at each point, the next row comes from the group that has supplied
    the fewest seconds so far (ties: the first group); each group keeps its own order."""
    queues = {name: list(rows) for name, rows in groups.items() if rows}
    supplied = dict.fromkeys(queues, 0.0)
    order = []
    while queues:
        name = min(queues, key=lambda g: supplied[g])
        row = queues[name].pop(0)
        supplied[name] += float(row["duration"])
        order.append(row)
        if not queues[name]:
            del queues[name]
    return order


def build_speaker_mix(output: str | os.PathLike, sources: dict[str, SpeechSource] | None = None,
                      augmentations: Sequence[Augmentation] = DEFAULT_AUGMENTATIONS, seed: int = 0,
                      overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Write the calibration and healing mix to ``output/calibration`` (atomically); its rows, in mix order.

    ``sources`` maps a name to calibration audio whose rows carry a ``group`` (default: :data:`MIX_SOURCES`, the
    shipped speechocean762 and synthetic calibration splits; :data:`MIX_WITH_READERS_SOURCES` adds the LibriSpeech
    readers); every clip of a real group also gets one augmented copy (the
    ``augmentations`` taken in turn, seeded), which form the ``augmented real`` group.
    """
    sources = sources or MIX_SOURCES
    rng_seeds = iter(np.random.SeedSequence(seed).spawn(100_000))
    with atomic_directory(output, overwrite=overwrite) as out:
        out.chmod(0o755)
        folder = out / "calibration"
        folder.mkdir()
        groups: dict[str, list[dict]] = {}
        turn = 0
        for name, source in sources.items():
            meta = {r.get("id", Path(r["file_name"]).stem): r for r in read_metadata(Path(source.data) / source.split)}
            utterances, failures = load_speech(source.data, split=source.split, text_column=None)
            if failures:
                raise ValueError(f"{len(failures)} clip(s) of {source.data} failed to load: {failures[0]}")
            for u in tqdm(utterances, desc=f"Calibration mix: {name}", unit="clip", disable=not progress):
                group = group_of(meta.get(u.id, {}))
                fields = {"speaker": meta.get(u.id, {}).get("speaker"), "group": group, "source": name,
                          "augmentation": None}
                groups.setdefault(group, []).append(write_clip(folder, u.id, u.audio, fields, codec="flac"))
                if group.startswith("real") and augmentations:
                    augmentation = augmentations[turn % len(augmentations)]
                    turn += 1
                    audio = augmentation(u.audio, np.random.default_rng(next(rng_seeds)))
                    groups.setdefault(AUGMENTED, []).append(write_clip(
                        folder, f"{u.id}-{augmentation.name}", audio,
                        {**fields, "group": AUGMENTED, "augmentation": augmentation.name}))
        rows = interleave_by_seconds(groups)
        write_metadata(folder, rows)
        seconds = {g: round(sum(r["duration"] for r in rs)) for g, rs in groups.items()}
        (out / "README.md").write_text(
            f"# liteasr-hf calibration and healing mix (recipe v{SPEAKER_MIX_VERSION}, seed {seed})\n\n"
            f"Written by `liteasr_hf.data.suite.build_speaker_mix` from {', '.join(sources)}; seconds per group: "
            f"{json.dumps(seconds)}. Rows are ordered so that every group has supplied about the same seconds at any "
            "point. Augmentations: " + ", ".join(a.name for a in augmentations) + ".\n", encoding="utf-8")
    return rows


def speaker_mix_folder(mix: str = DEFAULT_MIX, cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`speaker_mix` keeps ``mix``: ``<cache>/speech/speaker-mix-v<version>``, with ``-<mix>`` after it
    for any mix but the default (whose name model cards and reports already know)."""
    from ..checkpoints.loading import cache_dir

    if mix not in MIXES:
        raise ValueError(f"calibration mix {mix!r} is unknown; choose from {', '.join(MIXES)}.")
    name = f"{SPEAKER_MIX_PREFIX}{SPEAKER_MIX_VERSION}" + ("" if mix == DEFAULT_MIX else f"-{mix}")
    return Path(cache or cache_dir()) / "speech" / name


def speaker_mix(cache: str | os.PathLike | None = None, progress: bool = True, mix: str = DEFAULT_MIX) -> SpeechSource:
    """Calibration and healing audio: :func:`build_speaker_mix` of the shipped splits that ``mix`` names in
    :data:`MIXES` (default: the speechocean762 speakers and the synthetic voices; ``speakers-and-readers`` adds the
    LibriSpeech train-clean-100 readers), built on first use and cached (:func:`speaker_mix_folder`); audio only."""
    folder = speaker_mix_folder(mix, cache)
    if not (folder / "calibration" / "metadata.jsonl").is_file():
        build_speaker_mix(folder, MIXES[mix], overwrite=folder.exists(), progress=progress)
    return SpeechSource(folder, split="calibration", text_column=None)

"""Speech data for calibration and evaluation: local audiofolders, manifests, and ``datasets`` datasets.

Every source becomes a list of :class:`Utterance` (16 kHz float32 mono audio, reference text, duration).
Items whose audio cannot be used are not fatal: they are returned as :class:`LoadFailure` records, by id,
so that a run reports and counts them instead of stopping on the first bad file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..shipped import DATA_ROOT
from .audio import SAMPLING_RATE, AudioError, load_audio

logger = logging.getLogger(__name__)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")  # what an audiofolder may carry (datasets' names)
MANIFEST_SUFFIXES = (".jsonl", ".csv")
# Audio path columns of common manifests: NeMo (audio_filepath), audiofolder (file_name), others.
MANIFEST_AUDIO_COLUMNS = ("audio_filepath", "file_name", "audio_path", "path", "file", "audio")
_DISK_DATASET_MARKERS = ("dataset_dict.json", "state.json")  # written by Dataset(Dict).save_to_disk
#: The optional column that says which speaker group a row belongs to (evaluation reports WER per group).
GROUP_COLUMN = "group"
#: The optional column that names a row's speaker (comparisons resample speakers, not clips, for their intervals).
SPEAKER_COLUMN = "speaker"


@dataclass
class Utterance:
    """One utterance: ``audio`` is float32 mono at 16 kHz, shape ``(samples,)``; ``text`` is None without text."""

    id: str
    audio: np.ndarray
    text: str | None
    duration: float  # seconds
    index: int | None = None  # the row's position in the data (load_speech); orders the shares of several processes
    group: str | None = None  # the row's ``group`` column, e.g. "real non-native child": WER is also reported per group
    speaker: str | None = None  # the row's ``speaker`` column


@dataclass(frozen=True)
class LoadFailure:
    """An item that was left out, and why."""

    id: str
    reason: str
    index: int | None = None  # the row's position in the data


@dataclass(frozen=True)
class _Item:
    """One row before decoding: its id, whatever :func:`load_audio` accepts, and its text."""

    id: str
    audio: Any
    text: str | None
    error: str | None = None  # a row that is unusable before decoding (no audio path, no text)
    group: str | None = None
    speaker: str | None = None


#: The speech set this project ships (``calibration`` and ``evaluation`` splits; see its README.md).
SHIPPED_SPEECH_SET = DATA_ROOT / "speech"


@dataclass(frozen=True)
class SpeechSource:
    """Where speech comes from: what :func:`load_speech` reads, as one validated value.

    ``data`` is a local audiofolder, manifest or saved dataset, or a ``datasets`` name; ``split`` and ``config``
    select from it; ``text_column=None`` reads audio only (calibration).
    """

    data: str | os.PathLike = SHIPPED_SPEECH_SET
    split: str | None = None
    config: str | None = None
    audio_column: str = "audio"
    text_column: str | None = "text"

    def __post_init__(self) -> None:
        if not isinstance(self.data, (str, os.PathLike)) or not str(self.data).strip():
            raise ValueError(f"SpeechSource.data = {self.data!r}: give a local folder or file, or a datasets name.")
        for name in ("split", "config", "text_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"SpeechSource.{name} = {value!r}: give a non-empty name, or None.")
        if not isinstance(self.audio_column, str) or not self.audio_column.strip():
            raise ValueError(f"SpeechSource.audio_column = {self.audio_column!r}: give the audio column's name.")

    def load(self, max_samples: int | None = None, progress: bool = False) -> tuple[list[Utterance], list[LoadFailure]]:
        """``(utterances, failures)`` of this source; see :func:`load_speech`."""
        return load_speech(self.data, split=self.split, config=self.config, text_column=self.text_column,
                           audio_column=self.audio_column, max_samples=max_samples, progress=progress)

    def stream(self, progress: bool = False) -> Iterator[Utterance | LoadFailure]:
        """This source's rows one at a time, decoded as they are reached; see :func:`stream_speech`."""
        return stream_speech(self.data, split=self.split, config=self.config, text_column=self.text_column,
                             audio_column=self.audio_column, progress=progress)


def load_speech(
    data: str | os.PathLike,
    split: str | None = None,
    config: str | None = None,
    text_column: str | None = "text",
    audio_column: str = "audio",
    id_column: str | None = None,
    max_samples: int | None = None,
    streaming: bool = False,
    progress: bool = False,
    share: tuple[int, int] | None = None,
) -> tuple[list[Utterance], list[LoadFailure]]:
    """Load ``data`` and return ``(utterances, failures)``, both in the data's own order.

    ``data`` is one of:

    - a local audiofolder: a folder with ``metadata.jsonl`` (or ``.csv``) whose rows have ``file_name`` and the
      text column (``id`` optional; default: the file name without suffix);
    - a local folder holding one audiofolder per split, e.g. ``data/speech`` with ``split="evaluation"``;
    - a manifest ``.jsonl`` / ``.csv`` with an audio path column (``audio_column`` or one of
      ``MANIFEST_AUDIO_COLUMNS``; relative paths are relative to the manifest) and the text column;
    - a folder written by ``save_to_disk``, a local folder of data files, or a ``datasets`` name, read with
      ``load_dataset(data, config, split=split, streaming=streaming)``.

    ``text_column=None`` loads audio only (calibration). ``max_samples`` keeps the first items, before
    decoding. ``share=(k, n)`` decodes only rows ``k, k + n, k + 2n, ...`` (of those ``max_samples`` keeps): one
    process's share among ``n``, so that no process decodes, or holds, the whole data. Every utterance and failure
    carries its row's ``index``. Raises ``FileNotFoundError`` for a path that does not exist and ``ValueError`` for a
    missing column or an unknown split, naming what is available.
    """
    utterances: list[Utterance] = []
    failures: list[LoadFailure] = []
    for entry in stream_speech(data, split=split, config=config, text_column=text_column, audio_column=audio_column,
                               id_column=id_column, max_samples=max_samples, streaming=streaming, progress=progress,
                               share=share):
        (failures if isinstance(entry, LoadFailure) else utterances).append(entry)
    return utterances, failures


def stream_speech(
    data: str | os.PathLike,
    split: str | None = None,
    config: str | None = None,
    text_column: str | None = "text",
    audio_column: str = "audio",
    id_column: str | None = None,
    max_samples: int | None = None,
    streaming: bool = False,
    progress: bool = False,
    share: tuple[int, int] | None = None,
) -> Iterator[Utterance | LoadFailure]:
    """:func:`load_speech` one row at a time: each row's audio is decoded when the iterator reaches it, so a reader
    that needs only the first rows decodes only those. The data is opened (and a ``datasets`` name downloaded), and
    its columns checked, at the call, before the first row."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}.")
    if share is not None and not (len(share) == 2 and 0 <= share[0] < share[1]):
        raise ValueError(f"share = {share!r}: give (k, n) with 0 <= k < n, the k-th of n processes.")
    items = enumerate(_items(data, split, config, text_column, audio_column, id_column, streaming))
    if max_samples is not None:
        items = _take(items, max_samples)
    if share is not None:
        # Rows are skipped before decoding: this process reads only the audio of its own rows.
        items = ((index, item) for index, item in items if index % share[1] == share[0])
    return _decoded(items, progress)


def _decoded(items: Iterable[tuple[int, _Item]], progress: bool) -> Iterator[Utterance | LoadFailure]:
    for index, item in tqdm(items, desc="Loading audio", unit="clip", disable=not progress):
        try:
            if item.error is not None:
                raise AudioError(item.error)
            audio = load_audio(item.audio, SAMPLING_RATE, name=item.id)
        except AudioError as err:
            logger.warning("Skipping %s: %s", item.id, err)
            yield LoadFailure(item.id, str(err), index)
            continue
        yield Utterance(item.id, audio, item.text, audio.size / SAMPLING_RATE, index, item.group, item.speaker)


def _take(items: Iterable[tuple[int, _Item]], n: int) -> Iterator[tuple[int, _Item]]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def _items(data, split, config, text_column, audio_column, id_column, streaming) -> Iterator[_Item]:
    """Rows of ``data`` as :class:`_Item`; column and split errors are raised here, before any decoding."""
    path = Path(data).expanduser()
    if path.is_file():
        if path.suffix not in MANIFEST_SUFFIXES:
            raise ValueError(f"{path}: a manifest must be one of {', '.join(MANIFEST_SUFFIXES)}, not {path.suffix!r}.")
        rows = _read_table(path)
        audio_key = _manifest_audio_column(rows, audio_column, path)
        return _rows_to_items(rows, path.parent, audio_key, text_column, id_column, path)
    if path.is_dir():
        return _folder_items(path, split, config, text_column, audio_column, id_column, streaming)
    if _looks_like_path(data):
        raise FileNotFoundError(f"{data}: no such file or folder (looked for it relative to {Path.cwd()}).")
    return _dataset_items(str(data), split, config, text_column, audio_column, id_column, streaming)


def _looks_like_path(data: str | os.PathLike) -> bool:
    """Whether ``data`` can only mean a local path: a datasets name is ``name`` or ``owner/name``."""
    text = os.fspath(data)
    if not isinstance(data, str) or text.startswith(("/", ".", "~")) or text.count("/") > 1:
        return True
    if Path(text).suffix in MANIFEST_SUFFIXES:
        return True
    head = text.split("/")[0]
    return "/" in text and Path(head).is_dir()  # "data/speech" where ./data exists is a typo, not a Hub id


def _folder_items(path: Path, split, config, text_column, audio_column, id_column, streaming) -> Iterator[_Item]:
    if split is not None and (path / split).is_dir():
        return _folder_items(path / split, None, config, text_column, audio_column, id_column, streaming)
    metadata = next((path / name for name in METADATA_FILES if (path / name).is_file()), None)
    if metadata is not None:  # an audiofolder; a split that names no subfolder can only mean this folder
        rows = _read_table(metadata)
        audio_key = audio_column if rows and isinstance(rows[0].get(audio_column), str) else "file_name"
        return _rows_to_items(rows, path, audio_key, text_column, id_column, metadata)
    if any((path / marker).is_file() for marker in _DISK_DATASET_MARKERS):
        from datasets import load_from_disk

        dataset = _pick_split(load_from_disk(str(path)), split, str(path))
        return _dataset_rows(dataset, text_column, audio_column, id_column, str(path))
    splits = sorted(p.name for p in path.iterdir() if p.is_dir() and any((p / m).is_file() for m in METADATA_FILES))
    if splits:
        wanted = f"split {split!r} is not one of them" if split else "pass split=... (--split)"
        raise ValueError(f"{path} holds one audiofolder per split ({', '.join(splits)}); {wanted}.")
    if any(p.is_file() and not p.name.startswith(".") for p in path.rglob("*")):
        return _dataset_items(str(path), split, config, text_column, audio_column, id_column, streaming)
    raise ValueError(f"{path} has no {' or '.join(METADATA_FILES)}, no split subfolders and no data files.")


def _read_table(path: Path) -> list[dict]:
    """Rows of a ``.jsonl`` or ``.csv`` file, as dicts."""
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not a JSON object ({err}).") from err
    return rows


def _manifest_audio_column(rows: list[dict], audio_column: str, where: Path) -> str:
    columns = list(rows[0]) if rows else []
    for key in (audio_column, *MANIFEST_AUDIO_COLUMNS):
        if key in columns:
            return key
    raise ValueError(f"{where}: no audio path column ({audio_column!r} or one of {', '.join(MANIFEST_AUDIO_COLUMNS)}); "
                     f"columns are: {', '.join(columns) or '(none)'}.")


def _check_columns(columns: list[str], where: str, text_column: str | None, id_column: str | None) -> None:
    for kind, name in (("text", text_column), ("id", id_column)):
        if name is not None and name not in columns:
            raise ValueError(f"{where}: no {kind} column {name!r}; columns are: {', '.join(columns) or '(none)'}.")


def _rows_to_items(rows: list[dict], root: Path, audio_key: str, text_column, id_column, where: Path
                   ) -> Iterator[_Item]:
    if not rows:
        raise ValueError(f"{where} has no rows.")
    columns = list(rows[0])
    if audio_key not in columns:
        raise ValueError(f"{where}: no audio file column {audio_key!r}; columns are: {', '.join(columns)}.")
    _check_columns(columns, str(where), text_column, id_column)
    # Checked here, not in the generator below, so that a bad column fails at once rather than at first use.
    return _row_items(rows, root, audio_key, text_column, id_column)


def _row_items(rows, root, audio_key, text_column, id_column) -> Iterator[_Item]:
    seen: set[str] = set()
    for index, row in enumerate(rows):
        file = row.get(audio_key)
        default_id = Path(file).stem if file else f"{index:06d}"
        item_id = _unique(str(row.get(id_column or "id") or default_id), index, seen)
        text, error = _text(row, text_column)
        if not file:
            error = f"row {index} has no audio path in {audio_key!r}"
        yield _Item(item_id, root / file if file else None, text, error, *_labels(row))


def _text(row: dict, text_column: str | None) -> tuple[str | None, str | None]:
    if text_column is None:
        return None, None
    text = row.get(text_column)
    if not isinstance(text, str):
        return None, f"no text in {text_column!r} (got {text!r})"
    return text, None


def _unique(item_id: str, index: int, seen: set[str]) -> str:
    """Ids key the output records, so a repeated one gets the row index appended."""
    if item_id in seen:
        item_id = f"{item_id}-{index}"
    seen.add(item_id)
    return item_id


def _dataset_items(name: str, split, config, text_column, audio_column, id_column, streaming) -> Iterator[_Item]:
    """Rows of a ``datasets`` dataset (Hub name or local data folder) with audio left encoded."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, config, split=split, streaming=streaming)
    except ValueError as err:  # unknown split or config: datasets lists the valid ones
        raise ValueError(f"{name}: {err}") from err
    except (FileNotFoundError, ConnectionError) as err:  # DatasetNotFoundError is a FileNotFoundError
        raise FileNotFoundError(
            f"{name!r} is neither a local folder or manifest nor a dataset that datasets.load_dataset can load "
            f"({err})."
        ) from err
    return _dataset_rows(_pick_split(dataset, split, name), text_column, audio_column, id_column, name)


def _pick_split(dataset, split: str | None, name: str):
    """A single split from a Dataset(Dict), or an error that lists the splits."""
    if not hasattr(dataset, "keys"):  # already one split
        return dataset
    splits = list(dataset.keys())
    if split is None and len(splits) == 1:
        return dataset[splits[0]]
    if split not in dataset:
        wanted = f"unknown split {split!r}" if split else "choose a split"
        raise ValueError(f"{name}: {wanted}; available splits: {', '.join(splits)}.")
    return dataset[split]


def _dataset_rows(dataset, text_column, audio_column, id_column, name: str) -> Iterator[_Item]:
    from datasets import Audio

    features = dataset.features or {}
    columns = list(dataset.column_names or features)
    if audio_column not in columns:
        raise ValueError(f"{name}: no audio column {audio_column!r}; columns are: {', '.join(columns) or '(none)'}.")
    _check_columns(columns, name, text_column, id_column)
    if isinstance(features.get(audio_column), Audio):
        # datasets >= 4 decodes with torchcodec; keep the encoded bytes/path and decode with soundfile.
        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    id_key = id_column or ("id" if "id" in columns else None)
    return _dataset_row_items(dataset, audio_column, text_column, id_key)


def _dataset_row_items(dataset, audio_column, text_column, id_key) -> Iterator[_Item]:
    seen: set[str] = set()
    for index, row in enumerate(dataset):
        audio = row[audio_column]
        path = audio.get("path") if isinstance(audio, dict) else audio if isinstance(audio, str) else None
        default_id = Path(path).stem if path else f"{index:06d}"
        item_id = _unique(str(row[id_key]) if id_key else default_id, index, seen)
        text, error = _text(row, text_column)
        yield _Item(item_id, audio, text, error, *_labels(row))


def _labels(row) -> tuple[str | None, str | None]:
    """A row's speaker group and speaker, where it names them as text."""
    group, speaker = row.get(GROUP_COLUMN), row.get(SPEAKER_COLUMN)
    return (group if isinstance(group, str) else None,
            str(speaker) if isinstance(speaker, (str, int)) and not isinstance(speaker, bool) else None)

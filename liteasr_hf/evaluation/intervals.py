"""How far another draw of the same kind of speakers could move a WER change: paired, speaker-clustered bootstrap
intervals over per-clip word errors.

Two systems scored on the same clips differ clip by clip; the sum of those differences over the reference words is
the WER change. Clips of one speaker move together (a voice one model mishears, it mishears on every clip), so the
speakers, not the clips, are drawn again with replacement. One fixed seed makes a rendered table the same on every
run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..records import read_jsonl

#: Draws of the speakers behind each interval, and the seed that makes them repeatable.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: The pseudo-group of every clip whose group starts with "real".
ALL_REAL = "all real speech"
#: The one group of data that names no real-speech group: every clip.
ALL_CLIPS = "all clips"


def wer_change_interval(diffs: Sequence[int], words: Sequence[int], clusters: Sequence[str],
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 95% percentile interval of a WER change (points; ``diffs``: one system's word errors minus another's per
    clip, ``words``: the clip's reference words) when the ``clusters`` (speakers) are drawn again with replacement:
    clips of one speaker move together, so resampling clips would make the interval too narrow."""
    names = sorted(set(clusters))
    index = {name: i for i, name in enumerate(names)}
    diff_sum = np.zeros(len(names))
    word_sum = np.zeros(len(names))
    for d, w, c in zip(diffs, words, clusters, strict=True):
        diff_sum[index[c]] += d
        word_sum[index[c]] += w
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    changes = 100 * diff_sum[draws].sum(axis=1) / np.maximum(word_sum[draws].sum(axis=1), 1)
    low, high = np.percentile(changes, [2.5, 97.5])
    return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class WerChange:
    """One system against another on the same clips of a group: the WER change (points), its 95% interval over
    speakers, and how many clips, speakers and reference words it rests on."""

    change: float
    low: float
    high: float
    clips: int
    speakers: int
    words: int

    def cell(self) -> str:
        return f"{self.change:+.2f} ({self.low:+.2f} to {self.high:+.2f})"


def read_records(path: str | os.PathLike) -> list[dict]:
    """The per-utterance records ``liteasr evaluate`` writes beside a summary (``X.summary.json`` -> ``X.jsonl``)."""
    path = Path(path)
    if path.name.endswith(".summary.json"):
        path = path.with_name(path.name[: -len(".summary.json")] + ".jsonl")
    return read_jsonl(path, "per-utterance records")


def group_changes(records: Sequence[Mapping], reference: Sequence[Mapping]) -> dict[str, WerChange]:
    """``records`` against ``reference`` (both per-utterance records of one data set, matched by ``id``), per
    real-speech group and, where there are several, over all real speech (:data:`ALL_REAL`); data that names no
    real-speech group, over all its clips (:data:`ALL_CLIPS`). WER change and interval over speakers (a clip with no
    ``speaker`` is its own)."""
    theirs = {r["id"]: r for r in reference}
    missing = [r["id"] for r in records if r["id"] not in theirs]
    if missing or len(records) != len(reference):
        raise ValueError(f"The two runs scored different clips ({len(records)} against {len(reference)}; "
                         f"{len(missing)} not in the reference, e.g. {missing[:3]}): compare runs on the same data.")
    by_group: dict[str, list[tuple[int, int, str]]] = {}
    real = any((r.get("group") or "").startswith("real") for r in records)
    for r in records:
        group = (r.get("group") or "") if real else ALL_CLIPS
        if not group.startswith("real") and group != ALL_CLIPS:
            continue
        entry = ((r["errors"] or 0) - (theirs[r["id"]]["errors"] or 0), r["reference_words"] or 0,
                 str(r.get("speaker") or r["id"]))
        by_group.setdefault(group, []).append(entry)
        if real:
            by_group.setdefault(ALL_REAL, []).append(entry)
    if real and len(by_group) == 2:  # one real group: all real speech is that group
        del by_group[ALL_REAL]
    changes = {}
    for group, entries in sorted(by_group.items(), key=lambda kv: (kv[0] == ALL_REAL, kv[0])):
        diffs, words, speakers = zip(*entries)
        low, high = wer_change_interval(diffs, words, speakers)
        changes[group] = WerChange(round(100 * sum(diffs) / max(sum(words), 1), 2), round(low, 2), round(high, 2),
                                   len(entries), len(set(speakers)), sum(words))
    return changes


def format_changes(rows: Sequence[tuple[str, str, Mapping[str, WerChange]]]) -> str:
    """``(model, against, group_changes(...))`` rows as one Markdown table: a column per group (with its number of
    speakers), each cell the change and its interval."""
    from .reporting import markdown_table

    groups = list(dict.fromkeys(g for *_, changes in rows for g in changes))
    first = rows[0][2] if rows else {}  # one run: every row has the same clips and speakers

    def head(group: str) -> str:
        if group not in first or group == ALL_REAL:
            return group
        n = first[group].speakers
        return f"{group} ({n} speaker{'' if n == 1 else 's'})"

    table = [("model", "against", *(head(g) for g in groups))]
    for model, against, changes in rows:
        table.append((model, against, *(changes[g].cell() if g in changes else "-" for g in groups)))
    return "\n".join(markdown_table(table))


#: What a table of :func:`format_changes` means, for the line under it.
CHANGES_NOTE = (f"WER change in points against the original on the same clips, with its 95% interval from "
                f"{BOOTSTRAP_RESAMPLES} draws of the speakers with replacement (each speaker's clips together): an "
                "interval that holds 0 is a change these speakers cannot tell from none.")

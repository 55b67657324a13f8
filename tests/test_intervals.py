"""Paired, speaker-clustered bootstrap intervals of WER changes (liteasr_hf/evaluation/intervals.py)."""

from __future__ import annotations

import json

import pytest

from liteasr_hf.evaluation.intervals import ALL_REAL, group_changes, read_records, wer_change_interval


def test_a_wer_change_interval_resamples_speakers_not_clips():
    # ten speakers of five clips each; half of them lose 3 words a clip, half gain 3: clips of a speaker move together
    diffs = [3 if s % 2 else -3 for s in range(10) for _ in range(5)]
    words, speakers = [10] * 50, [f"s{s}" for s in range(10) for _ in range(5)]
    low, high = wer_change_interval(diffs, words, speakers)
    clip_low, clip_high = wer_change_interval(diffs, words, [str(i) for i in range(50)])
    assert low < 0 < high and clip_low < 0 < clip_high
    assert high - low > 1.5 * (clip_high - clip_low)      # drawing clips alone would make it too narrow
    assert (low, high) == wer_change_interval(diffs, words, speakers)   # one seed: the same table on every run
    assert wer_change_interval([1] * 6, [10] * 6, list("aabbcc")) == (10.0, 10.0)


def _record(id_: str, errors: int, group: str, speaker: str | None, words: int = 10) -> dict:
    return {"id": id_, "errors": errors, "reference_words": words, "group": group,
            **({"speaker": speaker} if speaker else {})}


def test_changes_per_real_group_match_clips_by_id_and_leave_synthetic_speech_out():
    reference = [_record("a", 1, "real non-native adult", "s1"), _record("b", 2, "real non-native adult", "s2"),
                 _record("c", 0, "real non-native child", "s3"), _record("d", 5, "synthetic", "v1")]
    ours = [_record("c", 3, "real non-native child", "s3"), _record("b", 2, "real non-native adult", "s2"),
            _record("a", 0, "real non-native adult", "s1"), _record("d", 0, "synthetic", "v1")]
    changes = group_changes(ours, reference)
    assert list(changes) == ["real non-native adult", "real non-native child", ALL_REAL]
    adults = changes["real non-native adult"]
    assert (adults.change, adults.clips, adults.speakers, adults.words) == (-5.0, 2, 2, 20)
    assert adults.low <= adults.change <= adults.high
    assert changes[ALL_REAL].change == 6.67 and changes[ALL_REAL].clips == 3      # (-1 + 0 + 3) / 30 words
    assert changes["real non-native child"].cell() == "+30.00 (+30.00 to +30.00)"
    only_adults = group_changes(ours[1:3], reference[:2])
    assert list(only_adults) == ["real non-native adult"]   # one real group: no separate "all real speech"
    with pytest.raises(ValueError, match="scored different clips"):
        group_changes(ours[:2], reference)


def test_records_are_read_beside_their_summary(tmp_path):
    (tmp_path / "run.jsonl").write_text(json.dumps(_record("a", 1, "real native adult", "s1")) + "\n")
    assert read_records(tmp_path / "run.summary.json") == read_records(tmp_path / "run.jsonl")
    with pytest.raises(ValueError, match="Cannot read the per-utterance records"):
        read_records(tmp_path / "other.summary.json")


def test_data_without_real_speech_groups_is_compared_over_all_its_clips():
    reference = [_record("a", 1, "", None), _record("b", 2, "synthetic", "v1")]
    ours = [_record("a", 2, "", None), _record("b", 2, "synthetic", "v1")]
    (change,) = group_changes(ours, reference).values()
    assert (change.change, change.clips, change.speakers) == (5.0, 2, 2)

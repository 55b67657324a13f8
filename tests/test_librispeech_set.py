"""The shipped LibriSpeech test-other sample and its builder, on the shipped clips laid out as the source holds them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from liteasr_hf.data.librispeech import GROUP, build_librispeech_set, read_transcripts
from liteasr_hf.data.speech import load_speech
from liteasr_hf.data.speech_set import read_metadata
from liteasr_hf.data.suite import LIBRISPEECH_SET


def test_shipped_sample_is_ten_test_other_readers_with_their_transcripts():
    rows = read_metadata(LIBRISPEECH_SET / "evaluation")
    speakers = {r["speaker"] for r in rows}
    assert len(rows) == 100 and len(speakers) == 10
    assert all(r["group"] == GROUP and r["corpus_split"] == "test-other" for r in rows)
    assert all(r["text"] == r["text"].upper() and len(r["text"].split()) >= 2 for r in rows)
    utterances, failures = load_speech(LIBRISPEECH_SET, split="evaluation")
    assert not failures and len(utterances) == 100 and {u.group for u in utterances} == {GROUP}
    assert sum(u.duration for u in utterances) / 60 == pytest.approx(12.8, abs=0.1)


def test_builder_copies_samples_unchanged_and_refuses_a_clip_without_transcript(tmp_path):
    shipped = read_metadata(LIBRISPEECH_SET / "evaluation")[:3]
    source = tmp_path / "librispeech_test-other"
    lines = []
    for row in shipped:
        utterance = row["id"].removeprefix("ls-")
        (source / utterance.split("-")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(LIBRISPEECH_SET / "evaluation" / row["file_name"], source / utterance.split("-")[0] / f"{utterance}.flac")
        lines.append(f"{utterance}\t{row['text'].lower()}\tbias words\tmore")  # fbai-speech's columns
    (source / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET | MINUTES | NAME\n1688 | M | test-other | 9.83 | winam\n")
    references = tmp_path / "refs.tsv"
    references.write_text("\n".join(lines) + "\n")

    rows = build_librispeech_set(source, references, tmp_path / "out", progress=False)
    assert [(r["id"], r["text"]) for r in rows] == [(r["id"], r["text"]) for r in shipped]
    assert rows[0]["gender"] == "M" and "Creative Commons Attribution 4.0" in (tmp_path / "out" / "README.md").read_text()
    for row in rows:
        built, _ = sf.read(tmp_path / "out" / "evaluation" / row["file_name"], dtype="int16")
        original, _ = sf.read(LIBRISPEECH_SET / "evaluation" / row["file_name"], dtype="int16")
        assert np.array_equal(built, original)

    (references).write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(ValueError, match="1 clip.* no transcript .*first: " + shipped[2]["id"].removeprefix("ls-")):
        build_librispeech_set(source, references, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()
    assert read_transcripts(references)[lines[0].split("\t")[0]] == shipped[0]["text"]


def test_shipped_calibration_readers_are_many_short_clips_of_readers_evaluation_never_scores():
    from liteasr_hf.data.suite import LIBRISPEECH_CALIBRATION_SET

    rows = read_metadata(LIBRISPEECH_CALIBRATION_SET / "calibration")
    speakers = {r["speaker"] for r in rows}
    assert len(rows) == len(speakers) == 251  # one utterance of each train-clean-100 reader
    assert {r["gender"] for r in rows} == {"F", "M"} and all(0 < r["duration"] <= 6.0 for r in rows)
    assert all(r["group"] == GROUP and r["corpus_split"] == "train-clean-100" and "text" not in r for r in rows)
    assert not speakers & {r["speaker"] for r in read_metadata(LIBRISPEECH_SET / "evaluation")}
    utterances, failures = load_speech(LIBRISPEECH_CALIBRATION_SET, split="calibration", text_column=None)
    assert not failures and len(utterances) == 251
    assert all(np.abs(u.audio).max() > 0.05 for u in utterances)  # speech, not silence, after the Opus round trip


def test_calibration_builder_cuts_each_reader_and_refuses_evaluation_readers_and_stray_files(tmp_path):
    from liteasr_hf.data.librispeech import build_librispeech_calibration_set

    shipped = read_metadata(LIBRISPEECH_SET / "evaluation")[::10][:3]  # three readers
    source = tmp_path / "librispeech_train-clean-100"
    source.mkdir()
    for row in shipped:
        shutil.copy(LIBRISPEECH_SET / "evaluation" / row["file_name"], source / row["file_name"].removeprefix("ls-"))
    (source / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET | MINUTES | NAME\n1688 | M | test-other | 9.83 | winam\n")

    rows = build_librispeech_calibration_set(source, tmp_path / "out", max_seconds=2.5, progress=False)
    assert [r["speaker"] for r in rows] == [r["speaker"] for r in shipped]
    assert all(r["duration"] == 2.5 and r["file_name"].endswith(".ogg") for r in rows)
    assert rows[0]["gender"] == "M" and "train-clean-100" in (tmp_path / "out" / "README.md").read_text()
    built, _ = load_speech(tmp_path / "out", split="calibration", text_column=None)
    original, rate = sf.read(LIBRISPEECH_SET / "evaluation" / shipped[0]["file_name"], dtype="float32")
    head = original[: int(2.5 * rate)]
    # Opus is lossy: the cut is the clip's first seconds, at about the same loudness
    assert built[0].audio.size == head.size
    assert np.sqrt(np.mean(built[0].audio ** 2)) == pytest.approx(np.sqrt(np.mean(head ** 2)), rel=0.2)

    with pytest.raises(ValueError, match=f"{shipped[1]['speaker'].removeprefix('ls-')} .* evaluation readers"):
        build_librispeech_calibration_set(source, tmp_path / "out2", exclude_speakers={shipped[1]["speaker"]},
                                          progress=False)
    (source / "notes.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="not named <speaker>-<chapter>-<index>.flac .*notes.flac"):
        build_librispeech_calibration_set(source, tmp_path / "out3", progress=False)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        build_librispeech_calibration_set(source, tmp_path / "out4", max_seconds=0, progress=False)

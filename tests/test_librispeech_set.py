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

"""Real recorded speech fetched from Debian at first use: the English Asterisk prompts, their transcripts, and a split
that never puts one prompt in both halves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from liteasr_hf.data.calibration_set import WINDOWS as CALIBRATION_WINDOWS
from liteasr_hf.data.calibration_set import calibration_with_real_speech
from liteasr_hf.data.real_speech import (
    MIN_EVALUATION_WORDS,
    PACKAGES,
    build_real_speech_set,
    fetch_debian_packages,
    read_asterisk_prompts,
    real_speech_set,
    split_prompts,
)
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET
from liteasr_hf.data.speech_set import read_metadata
from liteasr_hf.data.windows import pack_clips


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    return fetch_debian_packages(PACKAGES, tmp_path_factory.mktemp("deb"))


def test_prompts_come_with_their_words_and_without_tones(unpacked):
    prompts = read_asterisk_prompts(unpacked)
    by_id = {p.id: p for p in prompts}
    assert len(prompts) > 500
    assert by_id["asterisk-all-circuits-busy-now"].text == "All circuits are busy now."
    assert by_id["asterisk-letters-dot"].text == "dot"  # the "[.]" note is not a spoken word
    assert not any(i.startswith(("asterisk-beep", "asterisk-silence-")) for i in by_id)
    assert all(p.path.is_file() and p.text for p in prompts)


def test_the_split_is_disjoint_and_evaluates_only_whole_sentences(unpacked):
    prompts = read_asterisk_prompts(unpacked)
    splits = split_prompts(prompts, seed=0)
    training, evaluation = ({p.id for p in splits[s]} for s in ("training", "evaluation"))
    assert not training & evaluation and training | evaluation == {p.id for p in prompts}
    assert 100 <= len(evaluation) <= 150
    assert all(len(p.text.split()) >= MIN_EVALUATION_WORDS and sf.info(p.path).duration <= 30
               for p in splits["evaluation"])
    assert {p.id for p in split_prompts(prompts, seed=0)["evaluation"]} == evaluation
    assert {p.id for p in split_prompts(prompts, seed=1)["evaluation"]} != evaluation


def test_the_set_is_written_as_16_khz_audiofolders_and_cached(unpacked, tmp_path):
    root = tmp_path / "speech" / "asterisk-v1-seed0"
    rows = build_real_speech_set(root, source=unpacked, progress=False)
    row = rows["evaluation"][0]
    audio, rate = sf.read(root / "evaluation" / row["file_name"], dtype="float32")
    assert rate == 16000 and abs(audio.size / rate - row["duration"]) < 1e-3 and np.abs(audio).max() > 0.1
    saved = [json.loads(line) for line in (root / "training" / "metadata.jsonl").read_text().splitlines()]
    assert saved == rows["training"] and all(r["engine"] == "recording" for r in saved)
    assert "CC-BY-SA-3.0" in (root / "README.md").read_text()
    before = (root / "evaluation" / "metadata.jsonl").stat().st_mtime_ns
    assert real_speech_set(cache=tmp_path, progress=False) == root
    assert (root / "evaluation" / "metadata.jsonl").stat().st_mtime_ns == before

    # Calibration with real speech: the shipped calibration clips, then the real training prompts; no evaluation clip.
    source = calibration_with_real_speech(cache=tmp_path, progress=False)
    clips = read_metadata(SHIPPED_SPEECH_SET / "calibration") + rows["training"]
    assert [r["id"] for r in read_metadata(source.data / source.split)] == [r["id"] for r in clips]
    assert not {r["id"] for r in clips} & {r["id"] for r in rows["evaluation"]}
    utterances, failures = source.load(progress=False)
    assert not failures and len(utterances) == len(clips)
    windows = pack_clips([u.audio for u in utterances], 28.0)
    assert len(windows) >= CALIBRATION_WINDOWS > 16  # the default 16 windows would miss the real prompts


def test_a_folder_without_the_packages_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not hold the unpacked Debian packages asterisk-core-sounds-en"):
        read_asterisk_prompts(tmp_path)

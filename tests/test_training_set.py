"""The training split healing reads: planned from the Harvard sentences the evaluation split does not hold, read by
Piper for real, cached, and never holding an evaluation sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from liteasr_hf.data.sources import read_harvard_sentences
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET, load_speech
from liteasr_hf.data.synthesis import PiperReader
from liteasr_hf.data.training_set import (
    HARVARD_SENTENCES,
    SPLIT,
    TRAINING_SET_VERSION,
    build_training_set,
    change_speed,
    plan_training_clips,
    training_set,
)


def _evaluation_texts() -> set[str]:
    with open(SHIPPED_SPEECH_SET / "evaluation" / "metadata.jsonl", encoding="utf-8") as f:
        return {json.loads(line)["text"] for line in f}


def test_the_plan_reads_every_sentence_outside_evaluation_once():
    sentences = read_harvard_sentences(HARVARD_SENTENCES)
    evaluation = _evaluation_texts()
    excluded = {i for i, s in enumerate(sentences) if s in evaluation}
    assert len(excluded) == 154  # every Harvard sentence of the evaluation split is in the shipped list
    plan = plan_training_clips(len(sentences), excluded, seed=0)
    read = [i for clip in plan for i in clip.sentence_indices]
    assert sorted(read) == sorted(set(range(len(sentences))) - excluded)
    assert all(1 <= len(c.sentence_indices) <= 3 and len(c.pauses) == len(c.sentence_indices) - 1 for c in plan)
    assert all(0.85 <= c.rate <= 1.15 for c in plan) and len({c.rate for c in plan}) > 10
    assert plan == plan_training_clips(len(sentences), excluded, seed=0)
    assert plan != plan_training_clips(len(sentences), excluded, seed=1)


def test_speed_change_scales_the_length():
    audio = np.sin(np.arange(16000 * 2) / 10).astype(np.float32)
    assert change_speed(audio, 1.0) is audio
    assert abs(change_speed(audio, 1.1).size - audio.size / 1.1) <= 2
    assert abs(change_speed(audio, 0.9).size - audio.size / 0.9) <= 2


def test_piper_reads_deterministically_and_the_rate_changes_the_length():
    reader = PiperReader()
    slow, normal = reader("Glue the sheet to the dark blue background.", 0.85), reader(
        "Glue the sheet to the dark blue background.", 1.0)
    assert np.array_equal(normal, reader("Glue the sheet to the dark blue background.", 1.0))
    assert 1.0 < normal.size / 16000 < 5.0 and slow.size > 1.03 * normal.size  # Piper rounds phoneme durations


@pytest.fixture(scope="module")
def small_training_set(tmp_path_factory):
    from liteasr_hf.data.real_speech import PACKAGES, build_real_speech_set, fetch_debian_packages

    real = tmp_path_factory.mktemp("real") / "asterisk"
    build_real_speech_set(real, source=fetch_debian_packages(PACKAGES, tmp_path_factory.mktemp("deb")),
                          progress=False)
    root = tmp_path_factory.mktemp("cache") / "speech" / f"training-v{TRAINING_SET_VERSION}-seed0"
    rows = build_training_set(root, max_piper_clips=3, real_speech=real, progress=False)
    return root, rows, real


def test_the_split_is_an_audiofolder_without_evaluation_sentences_or_prompts(small_training_set):
    root, rows, real = small_training_set
    evaluation = _evaluation_texts()
    piper = [r for r in rows if r["engine"] == "piper"]
    shipped = [r for r in rows if r["engine"] == "shipped"]
    recorded = {r["id"] for r in rows if r["engine"] == "recording"}
    assert len(piper) == 3 and len(shipped) == 24 * 3
    assert not any(sentence in row["text"] for row in rows for sentence in evaluation)
    held_out = {json.loads(line)["id"] for line in (real / "evaluation" / "metadata.jsonl").read_text().splitlines()}
    trained = {json.loads(line)["id"] for line in (real / "training" / "metadata.jsonl").read_text().splitlines()}
    assert recorded == trained and not recorded & held_out
    for row in piper:
        audio, sr = sf.read(root / SPLIT / row["file_name"], dtype="float32")
        assert sr == 16000 and abs(audio.size / sr - row["duration"]) < 1e-3 and np.abs(audio).max() > 0.1
    calibration, _ = load_speech(SHIPPED_SPEECH_SET, split="calibration", text_column=None)
    durations = {r["id"]: r["duration"] for r in shipped}
    first = calibration[0]
    assert durations[f"{first.id}-speed0.9"] > durations[f"{first.id}-speed1"] > durations[f"{first.id}-speed1.1"]
    utterances, failures = load_speech(root, split=SPLIT, text_column=None)
    assert len(utterances) == len(rows) and not failures
    assert "No sentence of the evaluation split" in (root / "README.md").read_text()


def test_training_set_reuses_the_cached_split(small_training_set):
    root, _, _ = small_training_set
    metadata = root / SPLIT / "metadata.jsonl"
    before = metadata.stat().st_mtime_ns
    assert training_set(cache=root.parent.parent, progress=False) == root
    assert metadata.stat().st_mtime_ns == before

"""The speech set committed in data/speech (real files on disk), and the planning that splits it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import load_dataset

from liteasr_hf.data.conditioning import normalize_level, trim_silence
from liteasr_hf.data.speech import load_speech
from liteasr_hf.data.speech_set import DEFAULT_VOICES, plan_speech_set

DATA = Path(__file__).resolve().parents[1] / "data" / "speech"
SPLITS = ("calibration", "evaluation")
FIELDS = {"file_name", "id", "text", "speaker", "engine", "source", "duration"}


def _read_metadata(split: str) -> list[dict]:
    with open(DATA / split / "metadata.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {split: _read_metadata(split) for split in SPLITS}


@pytest.mark.parametrize("split", SPLITS)
def test_split_loads_with_datasets_and_load_speech(split, rows, tmp_path):
    # metadata.jsonl is a datasets manifest (audio path + text). datasets' "audiofolder" builder reads the same
    # folder where torchcodec is installed; it has no CPU build on PyPI for this torch, so the manifest is used.
    dataset = load_dataset("json", data_files=str(DATA / split / "metadata.jsonl"), split="train",
                           cache_dir=str(tmp_path))
    assert set(dataset.column_names) == FIELDS
    assert dataset["id"] == [row["id"] for row in rows[split]]
    files = sorted(path.name for path in (DATA / split).glob("*.flac"))
    assert sorted(dataset["file_name"]) == files
    utterances, failures = load_speech(DATA, split=split)
    assert not failures and [u.id for u in utterances] == dataset["id"]
    assert [u.text for u in utterances] == dataset["text"]


@pytest.mark.parametrize("split", SPLITS)
def test_metadata_rows(split, rows):
    ids = [row["id"] for row in rows[split]]
    assert len(ids) == len(set(ids))
    for row in rows[split]:
        assert set(row) == FIELDS, row
        assert row["file_name"] == f"{row['id']}.flac"
        assert isinstance(row["text"], str) and row["text"].strip() == row["text"] and row["text"], row
        assert row["text"][0].isupper() and row["text"][-1] in ".?!", row  # written form, not a normalized one
        assert row["source"] in {"harvard", "librivox", "pocketsphinx-commands"}
        assert (row["engine"] == "recording") == (row["source"] != "harvard"), row


@pytest.mark.parametrize("split", SPLITS)
def test_audio_is_16k_mono_and_matches_metadata(split, rows):
    for row in rows[split]:
        path = DATA / split / row["file_name"]
        info = sf.info(path)
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16_000, 1), path
        assert info.frames > 0
        assert info.frames / info.samplerate == pytest.approx(row["duration"], abs=1e-3), path
        audio, _ = sf.read(path, dtype="float32")
        assert 0.05 < np.abs(audio).max() <= 1.0, path  # not silent, not clipped beyond full scale


def test_no_sentence_in_both_splits(rows):
    calibration_text = "\n".join(row["text"] for row in rows["calibration"])
    evaluation_texts = [row["text"] for row in rows["evaluation"]]
    assert len(evaluation_texts) == len(set(evaluation_texts))
    shared = [text for text in evaluation_texts if text in calibration_text]
    assert not shared, shared


def test_speakers_and_sources(rows):
    calibration_speakers = {row["speaker"] for row in rows["calibration"]}
    evaluation_speakers = {row["speaker"] for row in rows["evaluation"]}
    assert len(calibration_speakers) >= 8
    assert len({row["engine"] for row in rows["calibration"]}) >= 3
    assert calibration_speakers <= evaluation_speakers  # every synthetic voice is evaluated too
    assert all(row["source"] == "harvard" for row in rows["calibration"])  # real recordings stay in evaluation
    assert {row["source"] for row in rows["evaluation"]} == {"harvard", "librivox", "pocketsphinx-commands"}


def test_split_sizes_and_durations(rows):
    calibration = [row["duration"] for row in rows["calibration"]]
    assert 24 <= len(calibration) <= 32
    assert all(15.0 <= d <= 25.0 for d in calibration), calibration  # fills most of Whisper's 30 s window
    single = [row["duration"] for row in rows["evaluation"] if row["source"] == "harvard"]
    assert 150 <= len(rows["evaluation"]) <= 200
    assert all(1.0 <= d <= 8.0 for d in single), single
    assert sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file()) <= 18e6


def test_plan_is_deterministic_and_splits_sentences():
    plan = plan_speech_set(720, DEFAULT_VOICES, seed=0)
    assert plan == plan_speech_set(720, DEFAULT_VOICES, seed=0)
    assert plan != plan_speech_set(720, DEFAULT_VOICES, seed=1)
    used = {split: [i for clip in plan if clip.split == split for i in clip.sentence_indices] for split in SPLITS}
    assert not set(used["calibration"]) & set(used["evaluation"])
    assert len(used["evaluation"]) == len(set(used["evaluation"])) == 14 * len(DEFAULT_VOICES)
    per_voice = {voice.speaker: 0 for voice in DEFAULT_VOICES}
    for clip in plan:
        per_voice[clip.voice.speaker] += clip.split == "evaluation"
    assert set(per_voice.values()) == {14}


def test_trim_and_normalize():
    rng = np.random.default_rng(0)
    speech = 0.03 * rng.standard_normal(16_000).astype(np.float32)
    audio = np.concatenate([np.zeros(16_000, np.float32), speech, np.zeros(8_000, np.float32)])
    trimmed = trim_silence(audio, keep_seconds=0.2)
    assert len(trimmed) == 16_000 + 2 * 3_200
    normalized = normalize_level(trimmed, target_rms_db=-20.0, peak=0.89)
    assert 20 * np.log10(np.sqrt(np.mean(normalized[3_200:-3_200] ** 2))) == pytest.approx(-20.0, abs=0.5)
    assert np.abs(normalize_level(10 * trimmed, target_rms_db=0.0, peak=0.89)).max() == pytest.approx(0.89)

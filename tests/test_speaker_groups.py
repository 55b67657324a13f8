"""Speech from speakers the project calibrates on and speakers it is judged on: the shipped speechocean762 selection
is speaker-disjoint and the evaluation part comes from the corpus's test half only; the evaluation manifest is what
its splits say; WER is reported per speaker group; the calibration mix gives every group the same seconds; each
augmentation does what it says on real audio; healing stops on speakers it does not train on."""

from __future__ import annotations

import copy
import json
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from liteasr_hf.compression.healing import HealSettings, heal
from liteasr_hf.data.augmentation import (DEFAULT_AUGMENTATIONS, Augmentation, add_noise, add_reverb, shift_voice,
                                          telephone)
from liteasr_hf.data.speech import load_speech
from liteasr_hf.data.speech_set import read_metadata
from liteasr_hf.data.speechocean import CHILD_MAX_AGE
from liteasr_hf.data.suite import (DEVELOPMENT, EVALUATION_MANIFEST, SPEECHOCEAN_SET, build_speaker_mix,
                                   interleave_by_seconds, write_evaluation_manifest)
from liteasr_hf.evaluation.summary import EvaluationSummary
from liteasr_hf.evaluation.transcription import format_comparison, group_word_error_rates, score

SPLITS = ("calibration", "development", "evaluation")


@pytest.fixture(scope="module")
def shipped():
    return {split: read_metadata(SPEECHOCEAN_SET / split) for split in SPLITS}


def test_the_shipped_selection_is_speaker_disjoint_and_judges_only_on_the_test_half(shipped):
    speakers = {split: {r["speaker"] for r in rows} for split, rows in shipped.items()}
    assert not speakers["calibration"] & speakers["development"]
    assert not (speakers["calibration"] | speakers["development"]) & speakers["evaluation"]
    assert {r["corpus_split"] for r in shipped["evaluation"]} == {"test"}
    assert {r["corpus_split"] for r in shipped["calibration"] + shipped["development"]} == {"train"}
    assert len(speakers["evaluation"]) == 125 and len(speakers["calibration"] | speakers["development"]) == 125
    for rows in shipped.values():  # children and adults in every split, each row's group from its speaker's age
        assert set(Counter(r["group"] for r in rows)) == {"real non-native child", "real non-native adult"}
        assert all((r["age"] <= CHILD_MAX_AGE) == (r["group"] == "real non-native child") for r in rows)


def test_the_evaluation_manifest_is_what_the_shipped_splits_say(tmp_path):
    rows = write_evaluation_manifest(tmp_path / "evaluation.jsonl")
    shipped_rows = [json.loads(line) for line in EVALUATION_MANIFEST.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in shipped_rows] == [r["id"] for r in rows]
    assert [r["group"] for r in shipped_rows] == [r["group"] for r in rows]
    groups = Counter(r["group"] for r in shipped_rows)
    assert groups["real non-native child"] >= 100 and groups["real non-native adult"] >= 100
    assert groups["synthetic"] > 0 and groups["real native adult"] > 0
    utterances, failures = load_speech(EVALUATION_MANIFEST, max_samples=3)
    assert not failures and all(u.group and u.text for u in utterances)
    assert [u.speaker for u in utterances] == [r["speaker"] for r in shipped_rows[:3]]


def test_wer_is_reported_per_group_real_speech_first():
    references = ["the cat sat", "a dog ran", "one two three", "hello there"]
    predictions = ["the cat sat", "a dog", "one two tree", "hello there"]
    pairs, stats = score(references, predictions, str.lower)
    groups = group_word_error_rates(["synthetic", "real b", "real a", None], pairs)
    assert list(groups) == ["real a", "real b", "synthetic"]
    assert groups["real b"].wer == 33.33 and groups["real a"].wer == 33.33 and groups["synthetic"].wer == 0
    assert sum(g.reference_words for g in groups.values()) == stats.reference_words - 2
    table = format_comparison([EvaluationSummary(model="m", model_type="whisper", data="d", split=None,
                                                 encoder_params=1, groups=groups, wer=stats.wer)])
    assert table.splitlines()[0].split("|")[4:7] == [" WER real a ", " WER real b ", " WER synthetic "]


def test_interleaving_gives_every_group_the_same_seconds_at_every_point():
    groups = {"long": [{"id": f"l{i}", "duration": 20.0} for i in range(5)],
              "short": [{"id": f"s{i}", "duration": 4.0} for i in range(40)]}
    order = interleave_by_seconds(groups)
    assert len(order) == 45 and [r["id"] for r in order if r["id"][0] == "s"] == [f"s{i}" for i in range(40)]
    seconds = {"l": 0.0, "s": 0.0}
    for row in order[:30]:  # while both groups have clips, neither is ever more than one clip ahead
        seconds[row["id"][0]] += row["duration"]
        assert abs(seconds["l"] - seconds["s"]) <= 20.0


def test_the_speaker_mix_holds_every_group_with_augmented_copies_of_the_real_clips(tmp_path):
    from liteasr_hf.data.speech import SpeechSource

    source = SpeechSource(SPEECHOCEAN_SET, split="development", text_column=None)
    rows = build_speaker_mix(tmp_path / "mix", {"dev": source}, progress=False)
    groups = Counter(r["group"] for r in rows)
    real = groups["real non-native child"] + groups["real non-native adult"]
    assert groups["augmented real"] == real == len(read_metadata(SPEECHOCEAN_SET / "development"))
    used = Counter(r["augmentation"] for r in rows if r["augmentation"])
    assert set(used) == {a.name for a in DEFAULT_AUGMENTATIONS}
    first = rows[:8]  # the mix starts with every group, not with one group's clips
    assert {r["group"] for r in first} == set(groups)


@pytest.fixture(scope="module")
def voice():
    """A real recording: the first development clip (a speaker no evaluation holds)."""
    utterances, _ = load_speech(DEVELOPMENT.data, split="development", max_samples=1)
    return utterances[0].audio


def _centroid(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float((np.fft.rfftfreq(audio.size, 1 / 16000) * spectrum).sum() / spectrum.sum())


def _dominant(audio: np.ndarray) -> float:
    return float(np.fft.rfftfreq(audio.size, 1 / 16000)[np.argmax(np.abs(np.fft.rfft(audio)))])


def test_a_child_voice_keeps_the_duration_and_raises_pitch_and_formants(voice):
    tone = np.sin(2 * np.pi * 200 * np.arange(32000) / 16000).astype(np.float32)
    shifted = shift_voice(tone, 1.25)
    assert shifted.size == tone.size and abs(_dominant(shifted) - 250) < 5
    child = shift_voice(voice, 1.3)
    assert child.size == voice.size and np.isfinite(child).all()
    assert _centroid(child) > 1.15 * _centroid(voice)


def test_noise_reverb_and_telephone_do_what_they_say(voice):
    rng = np.random.default_rng(0)
    for snr in (5.0, 20.0):
        noisy = add_noise(voice, snr, np.random.default_rng(1), colour="white")
        noise = noisy.astype(np.float64) - voice
        measured = 10 * np.log10(np.mean(voice.astype(np.float64) ** 2) / np.mean(noise ** 2))
        assert snr - 8 < measured < snr + 1  # the target is the active level, above the whole clip's mean
    wet = add_reverb(voice, 0.6, rng)
    assert wet.size == voice.size and not np.allclose(wet, voice)
    assert np.array_equal(add_reverb(voice, 0.6, np.random.default_rng(5)), add_reverb(voice, 0.6,
                                                                                       np.random.default_rng(5)))
    phone = telephone(voice)
    spectrum, freqs = np.abs(np.fft.rfft(phone)) ** 2, np.fft.rfftfreq(phone.size, 1 / 16000)
    assert spectrum[freqs > 4200].sum() < 1e-3 * spectrum.sum()


@pytest.mark.parametrize("text, message", [("pitch2", "start with one of"), ("telephone3", "takes no value"),
                                           ("noise", "needs a value"), ("speedx", "speedx")])
def test_bad_augmentations_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        Augmentation.parse(text)


def test_healing_stops_on_held_out_speakers_and_trains_on_every_window():
    from test_modeling import TINY
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from liteasr_hf.compression.compressor import CompressionSettings, compress

    torch.manual_seed(0)
    teacher = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * 6).astype(np.float32) * 0.1 for _ in range(6)]
    settings = CompressionSettings(thresholds={"attention": 0.5, "mlp": 0.5}, num_samples=2, batch_size=2)
    student = compress(copy.deepcopy(teacher), clips, WhisperFeatureExtractor(), settings, progress=False).model
    others = [rng.standard_normal(16000 * 4).astype(np.float32) * 0.2 for _ in range(3)]
    report = heal(student, teacher, clips, WhisperFeatureExtractor(),
                  HealSettings(block_steps=2, steps=2, batch_size=2, eval_every=1, num_samples=6, holdout=0.5),
                  progress=False, holdout_clips=others)
    assert (report.windows.train, report.windows.holdout) == (6, 3)

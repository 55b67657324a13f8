"""Audio loading, speech data sources, WER as the Open ASR Leaderboard computes it, and a real evaluation run."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoProcessor, GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from liteasr_hf.data.audio import AudioError, load_audio
from liteasr_hf.data.speech import load_speech
from liteasr_hf.evaluation.summary import EvaluationSummary
from liteasr_hf.evaluation.transcription import (
    evaluate_utterances,
    format_comparison,
    generation_kwargs,
    score,
    transcribe,
)

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "data" / "speech" / "evaluation"
TEST_CLIP = ROOT / "tests" / "data" / "sense_and_sensibility_01_austen_64kb-0870.flac"
TEST_CLIP_TEXT = ("And Mr. John Dashwood had then leisure to consider how much there might be prudently in his power "
                  "to do for them.")


def identity(text: str) -> str:
    return text


def sine(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()])


def write_audiofolder(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# WER
# ---------------------------------------------------------------------------------------------------------------


def test_corpus_wer_sums_errors_over_the_corpus():
    refs = ["a b c d e f g h i j", "x y"]
    preds = ["a b c d e f g h i j", "p q"]
    pairs, stats = score(refs, preds, identity)
    assert [p.errors for p in pairs] == [0, 2]
    assert (stats.errors, stats.reference_words) == (2, 12)
    assert stats.wer == round(100 * 2 / 12, 2) == 16.67  # errors / words of the corpus
    mean_of_utterances = 100 * np.mean([p.errors / p.reference_words for p in pairs])
    assert mean_of_utterances == 50.0 != stats.wer
    assert stats.wer == round(100 * jiwer.wer(refs, preds), 2)


def test_substitutions_deletions_insertions():
    pairs, stats = score(["a b c d", "a b c", "one two three"], ["a x c d e", "a c", "one two three"], identity)
    assert [(p.substitutions, p.deletions, p.insertions) for p in pairs] == [(1, 0, 1), (0, 1, 0), (0, 0, 0)]
    assert (stats.substitutions, stats.deletions, stats.insertions, stats.errors) == (1, 1, 1, 3)
    assert stats.reference_words == 10 and stats.wer == 30.0
    assert score(["a b c"], ["a b d"], identity)[1].wer == 33.33  # round(100 * wer, 2)


def test_normalizer_is_applied_to_references_and_predictions():
    normalizer = EnglishTextNormalizer({"colour": "color"})
    reference = "Mr. Smith paid $20 for the colour TV."
    prediction = "mister smith paid twenty dollars for the color tv"
    pairs, stats = score([reference], [prediction], normalizer)
    assert pairs[0].normalized_reference == pairs[0].normalized_prediction == "mister smith paid $20 for the color tv"
    assert stats.wer == 0.0
    assert score([reference], [prediction], identity)[1].wer > 50  # the same pair without normalization
    # The prediction side too: written form in the prediction, spoken form in the reference.
    assert score([prediction], [reference], normalizer)[1].wer == 0.0


def test_empty_normalized_references_are_skipped_and_counted():
    normalizer = EnglishTextNormalizer({})
    pairs, stats = score(["", "Uh, um.", "Hello world!"], ["something", "uh", "hello world"], normalizer)
    assert [p.scored for p in pairs] == [False, False, True]
    assert (stats.n_scored, stats.n_empty_references, stats.wer, stats.reference_words) == (1, 2, 0.0, 2)


def test_looping_prediction_is_flagged():
    pairs, _ = score(["hello world", "hello world"], ["hello world " * 4, "hello world hello"], identity)
    assert [p.long_output for p in pairs] == [True, False]  # 8 > 3 * 2 words; 3 is not


def test_language_is_passed_to_multilingual_models_only():
    multilingual, english = GenerationConfig(is_multilingual=True), GenerationConfig(is_multilingual=False)
    assert generation_kwargs(multilingual, "en", 64) == {"language": "en", "task": "transcribe", "max_new_tokens": 64}
    assert generation_kwargs(multilingual, None) == {}  # detect the language
    assert generation_kwargs(english, "en") == {}
    with pytest.raises(ValueError, match="English-only"):
        generation_kwargs(english, "fr")


# ---------------------------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 44100])
def test_resampling_keeps_length_and_frequency(tmp_path, rate):
    path = tmp_path / f"sine-{rate}.wav"
    sf.write(path, sine(rate), rate)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size == 16000
    assert abs(peak_hz(audio) - 440) <= 1.0
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.5, abs=0.02)  # no gain change away from the edges


def test_stereo_is_downmixed(tmp_path):
    left = sine(16000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(tmp_path / "stereo.flac", stereo, 16000)
    audio = load_audio(tmp_path / "stereo.flac")
    assert audio.shape == (16000,)
    np.testing.assert_allclose(audio, left / 2, atol=1e-4)  # FLAC stores 16-bit samples
    # A decoded array in either layout, (frames, channels) or (channels, frames).
    for array in (stereo, stereo.T):
        np.testing.assert_allclose(load_audio({"array": array, "sampling_rate": 16000}), left / 2, atol=1e-7)


def test_every_source_form_decodes_the_same(tmp_path):
    path = tmp_path / "clip.flac"
    sf.write(path, sine(8000), 8000)
    reference = load_audio(path)
    data = path.read_bytes()
    for source in (str(path), data, {"bytes": data, "path": "clip.flac"}, {"bytes": None, "path": str(path)},
                   {"array": sf.read(path, dtype="float32")[0], "sampling_rate": 8000}):
        np.testing.assert_allclose(load_audio(source), reference, atol=1e-6)


def test_unusable_audio_raises_audio_error_naming_the_item(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (tmp_path / "corrupt.flac").write_bytes(b"not audio at all" * 10)
    cases = {"empty": tmp_path / "empty.wav", "corrupt": tmp_path / "corrupt.flac", "missing": tmp_path / "none.wav",
             "no-bytes": b"", "nan": {"array": np.full(10, np.nan), "sampling_rate": 16000}}
    for name, source in cases.items():
        with pytest.raises(AudioError, match=name):
            load_audio(source, name=name)
    assert issubclass(AudioError, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# Data sources
# ---------------------------------------------------------------------------------------------------------------


def test_bad_items_are_reported_by_id_and_counted(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    sf.write(folder / "good.wav", sine(16000, 0.5), 16000)
    sf.write(folder / "stereo44.wav", np.stack([sine(44100, 0.5)] * 2, axis=1), 44100)
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (folder / "corrupt.flac").write_bytes(b"\x00\x01" * 500)
    rows = [{"file_name": f, "id": i, "text": "a tone"} for f, i in [
        ("good.wav", "good"), ("empty.wav", "empty"), ("corrupt.flac", "corrupt"), ("missing.wav", "missing"),
        ("stereo44.wav", "stereo")]]
    rows.append({"file_name": "good.wav", "id": "no-text"})  # a row without its text
    utterances, failures = load_speech(write_audiofolder(folder, rows))
    assert [u.id for u in utterances] == ["good", "stereo"]
    assert [u.duration for u in utterances] == [0.5, 0.5]
    assert all(u.audio.dtype == np.float32 and u.audio.ndim == 1 for u in utterances)
    assert [f.id for f in failures] == ["empty", "corrupt", "missing", "no-text"]
    assert "empty" in failures[0].reason and "no text" in failures[3].reason


def test_folder_of_splits_and_split_errors(tmp_path):
    for split in ("calibration", "evaluation"):
        sf.write(tmp_path / f"{split}.wav", sine(16000, 0.25), 16000)
        write_audiofolder(tmp_path / "speech" / split, [{"file_name": f"../../{split}.wav", "text": split}])
    utterances, _ = load_speech(tmp_path / "speech", split="evaluation", max_samples=5)
    assert [(u.id, u.text) for u in utterances] == [("evaluation", "evaluation")]
    with pytest.raises(ValueError, match="calibration, evaluation"):
        load_speech(tmp_path / "speech", split="test")
    with pytest.raises(ValueError, match="no text column 'sentence'; columns are: file_name, text"):
        load_speech(tmp_path / "speech", split="evaluation", text_column="sentence")
    audio_only, _ = load_speech(tmp_path / "speech", split="calibration", text_column=None)
    assert audio_only[0].text is None


def test_wrong_paths_fail_clearly(tmp_path):
    for missing in (tmp_path / "nowhere", str(tmp_path / "manifest.jsonl"), "./speech"):
        with pytest.raises(FileNotFoundError, match="no such file or folder"):
            load_speech(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metadata.jsonl"):
        load_speech(tmp_path / "empty")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_manifests_with_relative_paths(tmp_path, suffix):
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "one.wav", sine(22050, 0.5), 22050)
    manifest = tmp_path / f"manifest{suffix}"
    if suffix == ".jsonl":  # NeMo's column names
        manifest.write_text(json.dumps({"audio_filepath": "clips/one.wav", "text": "one", "duration": 0.5}) + "\n")
    else:
        manifest.write_text("path,sentence\nclips/one.wav,one\n")
    text_column = "text" if suffix == ".jsonl" else "sentence"
    utterances, failures = load_speech(manifest, text_column=text_column)
    assert [(u.id, u.text, u.audio.size) for u in utterances] == [("one", "one", 8000)] and not failures
    with pytest.raises(ValueError, match="columns are"):
        load_speech(manifest, text_column="transcript")


def test_datasets_code_path_on_a_local_parquet_dataset(tmp_path, monkeypatch):
    """The load_dataset path used for Hub names, on a local folder of parquet files (the Hub's layout)."""
    import datasets
    from datasets import Audio, Dataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    clips = []
    for rate in (16000, 8000):
        sf.write(tmp_path / f"{rate}.flac", sine(rate, 0.5), rate)
        clips.append({"bytes": (tmp_path / f"{rate}.flac").read_bytes(), "path": f"{rate}.flac"})
    # Built from plain structs: encoding through the Audio feature would need torchcodec.
    table = Dataset.from_dict({"audio": clips, "sentence": ["a", "b"]}).cast_column("audio", Audio())
    (tmp_path / "repo" / "data").mkdir(parents=True)
    table.to_parquet(tmp_path / "repo" / "data" / "test-00000-of-00001.parquet")

    for streaming in (False, True):
        utterances, failures = load_speech(tmp_path / "repo", split="test", text_column="sentence", streaming=streaming)
        assert [(u.id, u.text, u.audio.size) for u in utterances] == [("16000", "a", 8000), ("8000", "b", 8000)]
        assert not failures
    with pytest.raises(ValueError, match="test"):
        load_speech(tmp_path / "repo", split="validation", text_column="sentence")
    with pytest.raises(ValueError, match="columns are: audio, sentence"):
        load_speech(tmp_path / "repo", split="test")


# ---------------------------------------------------------------------------------------------------------------
# Evaluation runs
# ---------------------------------------------------------------------------------------------------------------


def real_clips(n_per_speaker: int = 2) -> list[tuple[Path, str]]:
    """A few clips with their references: synthetic and recorded speech from data/speech, else the test clip."""
    if not (SPEECH / "metadata.jsonl").is_file():
        return [(TEST_CLIP, TEST_CLIP_TEXT)]
    rows = [json.loads(line) for line in (SPEECH / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = []
    for speaker in ("piper-en_US-joe-medium", "librivox-sense-and-sensibility-reader"):
        chosen += [r for r in rows if r["speaker"] == speaker][:n_per_speaker]
    return [(SPEECH / r["file_name"], r["text"]) for r in chosen]


@pytest.fixture
def one_thread():
    """Run generate on one CPU thread. On the 2-core test machine, busy with other processes, transformers'
    per-step ``torch.isin`` took ~0.3 s with two OpenMP threads and ~5 ms with one (tests 4x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_real_model_on_real_audio(tiny_en_dir, tmp_path, one_thread):
    clips = real_clips()
    rows = [{"audio_filepath": str(path), "id": path.stem, "text": text, "speaker": f"reader-{i % 2}"}
            for i, (path, text) in enumerate(clips)]
    (tmp_path / "broken.flac").write_bytes(b"RIFF....WAVEfmt " + bytes(64))
    rows.insert(1, {"audio_filepath": "broken.flac", "id": "broken", "text": "never heard"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    utterances, failures = load_speech(manifest)
    assert [f.id for f in failures] == ["broken"]

    summary = evaluate_utterances(tiny_en_dir, utterances, failures, data=str(manifest), split=None, batch_size=4,
                                  output=tmp_path / "results", progress=False)
    records = [json.loads(line) for line in (tmp_path / "results" / "whisper-tiny.en__manifest.jsonl").open()]
    written = (tmp_path / "results" / "whisper-tiny.en__manifest.summary.json").read_text()
    assert written == summary.to_json() and EvaluationSummary.from_json(written) == summary
    # Records keep the input order although batches ran longest first, and predictions match their clips.
    assert [r["id"] for r in records] == [u.id for u in utterances]
    speakers = [r["speaker"] for r in rows if r["id"] != "broken"]
    assert [r["speaker"] for r in records] == [u.speaker for u in utterances] == speakers
    assert summary.wer <= 15, records
    words = sum(r["reference_words"] for r in records)
    assert summary.wer == round(100 * sum(r["errors"] for r in records) / words, 2)
    assert summary.n_failed == 1 and summary.failed[0].id == "broken"
    assert summary.n_scored == len(utterances) and summary.n_long_outputs == 0
    assert summary.encoder_params == 8_208_384  # Whisper tiny's encoder
    assert summary.encoder_params_excluding_positions == 8_208_384 - 1500 * 384  # as the published tables count
    assert summary.normalizer == "whisper-english (spelling: tokenizer normalizer.json)"
    assert summary.total_audio_seconds == pytest.approx(sum(u.duration for u in utterances), abs=1e-3)
    assert summary.rtfx == pytest.approx(summary.total_audio_seconds / summary.compute_seconds, rel=0.01)
    assert summary.language is None  # tiny.en is English-only: no language/task passed to generate


@pytest.fixture
def tiny_random_dir(tiny_en_dir, tmp_path) -> Path:
    """A 1-layer random Whisper with tiny.en's tokenizer, processor and generation config: fast, output garbage."""
    config = WhisperConfig.from_pretrained(tiny_en_dir)
    config.update(dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64))
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    folder = tmp_path / "whisper-random"
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny_en_dir).save_pretrained(folder)
    return folder


def test_compare_script_writes_one_result_per_model(tiny_random_dir, tmp_path, capsys, one_thread):
    from liteasr_hf.cli import evaluate as script

    other = shutil.copytree(tiny_random_dir, tmp_path / "whisper-random-copy")
    sf.write(tmp_path / "tone.wav", sine(16000, 0.5), 16000)
    write_audiofolder(tmp_path / "tones", [{"file_name": "../tone.wav", "id": "tone", "text": "a tone"}])

    code = script.main(["--compare", str(tiny_random_dir), str(other), "--data", str(tmp_path / "tones"),
                        "--max-new-tokens", "4", "--output", str(tmp_path / "out")])
    assert code == 0
    table = capsys.readouterr().out
    assert "| whisper-random " in table and "| whisper-random-copy " in table and "(100.0%)" in table
    # the copy against the first, clip by clip: the same weights make no change, and the interval says so
    change = next(line for line in table.splitlines() if line.startswith("| ") and "all clips" not in line
                  and str(other) in line)
    assert "+0.00 (+0.00 to +0.00)" in change and "all clips (1 speaker)" in table
    assert (tmp_path / "out" / "comparison.md").read_text().strip() == table.strip()
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["comparison.md", "whisper-random-copy__tones-evaluation.jsonl",
                     "whisper-random-copy__tones-evaluation.summary.json", "whisper-random__tones-evaluation.jsonl",
                     "whisper-random__tones-evaluation.summary.json"]
    assert script.main(["--model", str(tiny_random_dir), "--data", str(tmp_path / "nowhere")]) == 2


def test_compress_comparison_adds_each_change_with_its_interval(tiny_random_dir, tmp_path, one_thread):
    from liteasr_hf.data.speech import SpeechSource
    from liteasr_hf.evaluation.comparison import compare_original_and_compressed

    other = shutil.copytree(tiny_random_dir, tmp_path / "whisper-random-copy")
    sf.write(tmp_path / "tone.wav", sine(16000, 0.5), 16000)
    write_audiofolder(tmp_path / "tones", [{"file_name": "../tone.wav", "id": "tone", "text": "a tone"}])
    table = compare_original_and_compressed(tiny_random_dir, other, SpeechSource(str(tmp_path / "tones")),
                                            max_new_tokens=4, output=tmp_path / "eval")
    assert "encoder latency" in table and " all clips (1 speaker) |" in table
    assert "+0.00 (+0.00 to +0.00)" in table and "95% interval" in table


def test_comparison_table():
    same = dict(data="speech", split="evaluation")
    summaries = [EvaluationSummary(model="base", model_type="whisper", encoder_params=20_590_592,
                                   encoder_params_excluding_positions=19_822_592, wer=5.0, rtfx=100.0, n_long_outputs=0,
                                   **same),
                 EvaluationSummary(model="models/lite", model_type="lite-whisper", encoder_params=12_768_000,
                                   encoder_params_excluding_positions=12_000_000, wer=5.5, rtfx=150.25,
                                   n_long_outputs=1, **same)]
    table = format_comparison(summaries).splitlines()
    header = ["model", "encoder params", "with positions", "WER %", "RTFx", "long outputs"]
    assert [c.strip() for c in table[0].split("|")[1:-1]] == header
    assert [c.strip() for c in table[2].split("|")[1:-1]] == ["base", "19.82M (100.0%)", "20.59M", "5.00", "100.0", "0"]
    assert [c.strip() for c in table[3].split("|")[1:-1]] == ["lite", "12.00M (60.5%)", "12.77M", "5.50", "150.2", "1"]


def test_audio_over_30_seconds_is_transcribed_long_form(tiny_random_dir, one_thread):
    from liteasr_hf.checkpoints.loading import load_model_and_processor

    model, processor, _ = load_model_and_processor(tiny_random_dir)
    audios = [sine(16000, 2.0), sine(16000, 35.0, hz=300), sine(16000, 1.0, hz=600)]
    result = transcribe(model, processor, audios, batch_size=2, max_new_tokens=4, progress=False)
    assert len(result.texts) == 3 and all(result.texts) and result.compute_seconds > 0
    # The batches are the same in any input order (longest first: [35 s, 2 s], [1 s]), so the texts follow the input.
    backwards = transcribe(model, processor, audios[::-1], batch_size=2, max_new_tokens=4, warmup_batches=0,
                           progress=False)
    assert backwards.texts == result.texts[::-1]
    alone = transcribe(model, processor, audios[2:], max_new_tokens=4, warmup_batches=0, progress=False)
    assert alone.texts == result.texts[2:]


def test_transcription_logs_no_transformers_deprecation_warnings(tiny_en_dir, caplog):
    from liteasr_hf.checkpoints.loading import load_model_and_processor

    model, processor, _ = load_model_and_processor(tiny_en_dir)
    utterances, _ = load_speech(ROOT / "data" / "speech", split="evaluation", max_samples=2)
    with caplog.at_level(logging.WARNING, logger="transformers"):
        result = transcribe(model, processor, [u.audio for u in utterances], batch_size=2, warmup_batches=0,
                            progress=False)
        # A token cap beside the saved config's max_length (Whisper's decoder length) is what the cap is for.
        capped = transcribe(model, processor, [u.audio for u in utterances], batch_size=2, warmup_batches=0,
                            max_new_tokens=64, progress=False)
    assert all(result.texts) and capped.texts == result.texts
    assert model.generation_config.max_length == model.config.max_target_positions
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # Outside our calls transformers' own warnings are untouched: the filter is gone.
    assert not logging.getLogger("transformers.generation.utils").filters

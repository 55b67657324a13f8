"""The ASR pipeline with remote code gives a LiteWhisper model Whisper's full behaviour (real tiny.en, real audio)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor, pipeline

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.checkpoints.saving import save_model_folder

SPEECH = Path(__file__).resolve().parent.parent / "data" / "speech" / "evaluation"


@pytest.fixture(scope="module")
def lite_tiny_en(tiny_en_dir, tmp_path_factory) -> Path:
    """tiny.en as a LiteWhisper folder with an empty rank table (the same weights, our classes)."""
    whisper = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir)
    config = LiteWhisperConfig.from_whisper_config(whisper.config, [])
    lite = LiteWhisperForConditionalGeneration.from_pretrained(tiny_en_dir, config=config)
    lite.generation_config = whisper.generation_config
    return save_model_folder(lite, tmp_path_factory.mktemp("lite") / "lite-tiny-en",
                             processor=WhisperProcessor.from_pretrained(tiny_en_dir))


def transcribe_both(stock_dir, lite_dir, audio, **call_kwargs):
    stock = pipeline("automatic-speech-recognition", model=str(stock_dir), device="cpu")
    lite = pipeline("automatic-speech-recognition", model=str(lite_dir), trust_remote_code=True, device="cpu")
    assert type(lite).__name__ == "LiteWhisperSpeechRecognitionPipeline" and lite.type == "seq2seq_whisper"
    assert type(lite.model).__name__ == "LiteWhisperForConditionalGeneration"
    sample = {"raw": audio, "sampling_rate": 16000}
    return stock(dict(sample), **call_kwargs), lite(dict(sample), **call_kwargs)


def test_saved_folder_carries_processor_and_generation_config(lite_tiny_en):
    for name in ("tokenizer.json", "normalizer.json", "generation_config.json", "config.json",
                 "pipeline_lite_whisper.py"):
        assert (lite_tiny_en / name).is_file(), name
    # the processor: transformers 5.x writes processor_config.json, 4.x only the feature extractor's file
    assert (lite_tiny_en / "processor_config.json").is_file() or (lite_tiny_en / "preprocessor_config.json").is_file()
    assert AutoFeatureExtractor.from_pretrained(lite_tiny_en).feature_size == 80
    assert json.loads((lite_tiny_en / "generation_config.json").read_text())["max_length"] == 448
    config = json.loads((lite_tiny_en / "config.json").read_text())
    assert config["custom_pipelines"]["automatic-speech-recognition"]["impl"] == (
        "pipeline_lite_whisper.LiteWhisperSpeechRecognitionPipeline")


def test_short_audio_matches_stock_whisper(tiny_en_dir, lite_tiny_en, long_audio):
    stock, lite = transcribe_both(tiny_en_dir, lite_tiny_en, long_audio[: 16000 * 8])
    assert lite["text"] == stock["text"] and len(lite["text"].split()) > 5


def test_chunked_long_audio_with_timestamps_matches_stock_whisper(tiny_en_dir, lite_tiny_en, long_audio):
    stock, lite = transcribe_both(tiny_en_dir, lite_tiny_en, long_audio, chunk_length_s=30, batch_size=2,
                                  return_timestamps=True, generate_kwargs={"num_beams": 1})
    assert lite["text"] == stock["text"]
    assert lite["chunks"] == stock["chunks"] and len(lite["chunks"]) >= 2
    assert lite["chunks"][-1]["timestamp"][1] > 60  # the chunks span the whole input


def test_sequential_long_form_matches_stock_whisper(tiny_en_dir, lite_tiny_en, long_audio):
    # Without chunk_length_s the pipeline hands the whole input (> 30 s) to Whisper's own long-form generation.
    audio = long_audio[: 16000 * 45]
    stock, lite = transcribe_both(tiny_en_dir, lite_tiny_en, audio, return_timestamps=True,
                                  generate_kwargs={"num_beams": 1})
    assert lite["text"] == stock["text"] and lite["chunks"] == stock["chunks"]
    assert len(lite["text"].split()) > 60 and lite["chunks"][-1]["timestamp"][1] > 30


def test_language_and_task_reach_generate(tmp_path):
    """A multilingual LiteWhisper (random weights, base's real tokenizer): the pipeline forces the language
    and task tokens exactly as stock Whisper does."""
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor

    from liteasr_hf.checkpoints.ctranslate2 import build_tokenizer
    from liteasr_hf.checkpoints.ctranslate2_format import resolve_ctranslate2_source

    try:
        source = resolve_ctranslate2_source("base")
    except (FileNotFoundError, ImportError, ValueError) as err:
        pytest.fail(f"the base checkpoint package is a test dependency: {err}")
    tokenizer = build_tokenizer(source.files_dir, 51865)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)
    config = WhisperConfig(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=51865,
                           max_target_positions=64, decoder_start_token_id=50258, pad_token_id=50257,
                           bos_token_id=50257, eos_token_id=50257)
    torch.manual_seed(0)
    whisper = WhisperForConditionalGeneration(config).eval()
    whisper.generation_config = GenerationConfig(
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, max_length=64,
        is_multilingual=True, no_timestamps_token_id=50363,
        lang_to_id={"<|en|>": 50259, "<|fr|>": 50265}, task_to_id={"transcribe": 50359, "translate": 50358},
    )
    stock_dir = save_model_folder(whisper, tmp_path / "stock", processor=processor)
    lite = LiteWhisperForConditionalGeneration.from_pretrained(
        stock_dir, config=LiteWhisperConfig.from_whisper_config(whisper.config, [])
    )
    lite.generation_config = whisper.generation_config
    lite_dir = save_model_folder(lite, tmp_path / "lite", processor=processor)
    audio = np.sin(np.linspace(0, 2000, 16000 * 3)).astype(np.float32) * 0.1
    kwargs = {"generate_kwargs": {"language": "fr", "task": "translate", "max_new_tokens": 5},
              "return_language": True}
    stock, lite_out = transcribe_both(stock_dir, lite_dir, audio, **kwargs)
    assert lite_out == stock
    english = transcribe_both(stock_dir, lite_dir, audio, generate_kwargs={"language": "en", "max_new_tokens": 5},
                              return_language=True)
    assert english[1] == english[0] and english[1]["text"] != lite_out["text"]  # the forced tokens reached generate
    if not transformers.__version__.startswith("4."):  # 4.57's pipeline returns no language here, for Whisper too
        assert lite_out["chunks"][0]["language"] == "french"  # the forced language token came back out
        assert english[1]["chunks"][0]["language"] == "english"

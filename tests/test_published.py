"""Folders in the layout of the published efficient-speech/lite-whisper-* repos (their config keys and two-entry
auto_map, their code files, weights, generation_config.json, no processor files): loaded with our classes once
liteasr_hf is imported, transcribed through pipeline(), upgraded to our layout. Real tiny.en weights, factorized."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor, pipeline

import liteasr_hf
from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.checkpoints.loading import load_model_and_processor
from liteasr_hf.checkpoints.published import processor_source, upgrade_published, whisper_size
from liteasr_hf.checkpoints.saving import save_model_folder

ROOT = Path(__file__).resolve().parents[1]
# Ranks for tiny.en (d_model 384, ffn 1536); every layer factorized by truncated SVD of its real weights.
RANKS = [{"q_proj": 256, "k_proj": 224, "v_proj": 288, "out_proj": 320, "fc1": 320, "fc2": 320}] * 4


def factorized_tiny_en(tiny_en_dir: Path) -> LiteWhisperForConditionalGeneration:
    """tiny.en with every encoder projection replaced by its best rank-k approximation (truncated SVD)."""
    whisper = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir).eval()
    lite = LiteWhisperForConditionalGeneration(LiteWhisperConfig.from_whisper_config(whisper.config, RANKS)).eval()
    dense = whisper.state_dict()
    own = lite.state_dict()
    with torch.no_grad():
        for key, value in own.items():
            if key in dense:
                value.copy_(dense[key])
        for i, layer in enumerate(lite.get_encoder().layers):
            for module, rank in RANKS[i].items():
                prefix = f"model.encoder.layers.{i}." + ("self_attn." if "proj" in module else "")
                weight = dense[prefix + module + ".weight"]  # (out, in)
                u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
                target = layer.self_attn if "proj" in module else layer
                factors = getattr(target, module)
                factors.weight1.copy_((vh[:rank].T * s[:rank]).float())  # (in, k)
                factors.weight2.copy_(u[:, :rank].T.float())  # (k, out)
                bias = dense.get(prefix + module + ".bias")
                factors.bias.copy_(bias if bias is not None else torch.zeros_like(factors.bias))
    lite.generation_config = whisper.generation_config
    return lite


@pytest.fixture(scope="module")
def folders(tiny_en_dir, tmp_path_factory, published_layout) -> tuple[Path, Path]:
    """(our folder, a published-layout folder) holding the same weights."""
    root = tmp_path_factory.mktemp("published")
    ours = save_model_folder(factorized_tiny_en(tiny_en_dir), root / "ours",
                             processor=WhisperProcessor.from_pretrained(tiny_en_dir))
    published = published_layout(ours, root / "lite-whisper-tiny.en")
    return ours, published


def test_whisper_size_and_processor_source_follow_the_dimensions(tiny_en_dir):
    assert whisper_size(WhisperConfig.from_pretrained(tiny_en_dir)) == "tiny.en"
    large = dict(d_model=1280, num_mel_bins=128, vocab_size=51866)
    assert whisper_size(WhisperConfig(**large, decoder_layers=32)) == "large-v3"
    assert processor_source(WhisperConfig(**large, decoder_layers=4)) == "openai/whisper-large-v3-turbo"
    assert whisper_size(WhisperConfig(d_model=512, vocab_size=51865)) == "base"
    with pytest.raises(ValueError, match="d_model = 100 matches no OpenAI Whisper checkpoint"):
        whisper_size(WhisperConfig(d_model=100, encoder_attention_heads=4, decoder_attention_heads=4))


def test_published_folder_loads_with_our_classes_and_automodel_generates(folders):
    ours, published = folders
    model = AutoModel.from_pretrained(published).eval()  # no remote code: liteasr_hf is imported
    assert type(model) is LiteWhisperForConditionalGeneration
    reference = LiteWhisperForConditionalGeneration.from_pretrained(ours).eval()
    features = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.generate(features, max_new_tokens=10), reference.generate(features, max_new_tokens=10))


def test_pipeline_on_a_published_folder_matches_our_folder(folders, tiny_en_dir, long_audio):
    ours, published = folders
    sample = {"raw": long_audio, "sampling_rate": 16000}
    kwargs = dict(chunk_length_s=30, batch_size=2, return_timestamps=True, generate_kwargs={"num_beams": 1})
    # The processor of the stock checkpoint, as the published model cards load it. (Objects, not paths:
    # transformers 5 reads a feature extractor given by path from the model folder too, for CTC decoders.)
    stock = WhisperProcessor.from_pretrained(tiny_en_dir)
    asr = pipeline("automatic-speech-recognition", model=str(published), tokenizer=stock.tokenizer,
                   feature_extractor=stock.feature_extractor, device="cpu")
    assert asr.type == "seq2seq_whisper" and type(asr.model) is LiteWhisperForConditionalGeneration
    result = asr(dict(sample), **kwargs)
    # Our folder, with the processor files and the custom pipeline it carries.
    remote = pipeline("automatic-speech-recognition", model=str(ours), trust_remote_code=True, device="cpu")
    expected = remote(dict(sample), **kwargs)
    assert result["text"] == expected["text"] and len(result["text"].split()) > 60
    assert result["chunks"] == expected["chunks"] and result["chunks"][-1]["timestamp"][1] > 60
    # And our folder with liteasr_hf imported needs no remote code either.
    local = pipeline("automatic-speech-recognition", model=str(ours), device="cpu")
    assert type(local.model) is LiteWhisperForConditionalGeneration and local.type == "seq2seq_whisper"
    assert local(dict(sample), **kwargs)["chunks"] == expected["chunks"]


def test_missing_processor_names_the_stock_checkpoint(folders):
    _, published = folders
    with pytest.raises(OSError, match=r"openai/whisper-tiny\.en.*liteasr upgrade-published"):
        load_model_and_processor(published)


def test_upgrade_writes_our_folder_with_identical_weights_and_logits(folders, tiny_en_dir, tmp_path):
    ours, published = folders
    upgraded = upgrade_published(published, tmp_path / "upgraded", processor=tiny_en_dir)
    original, new = load_file(published / "model.safetensors"), load_file(upgraded / "model.safetensors")
    assert original.keys() == new.keys() and all(torch.equal(original[k], new[k]) for k in original)
    assert sorted(p.name for p in upgraded.iterdir()) == sorted(p.name for p in ours.iterdir())
    for path in ours.iterdir():  # code files and processor files, whichever this transformers writes
        if path.suffix in (".py", ".json") and path.name not in ("config.json", "generation_config.json"):
            assert (upgraded / path.name).read_bytes() == path.read_bytes(), path.name
    config = json.loads((upgraded / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_lite_whisper.LiteWhisperForConditionalGeneration"
    assert "automatic-speech-recognition" in config["custom_pipelines"]
    assert json.loads((upgraded / "generation_config.json").read_text())["max_length"] == 448
    features = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[50257, 50362, 440]])
    with torch.no_grad():
        a = LiteWhisperForConditionalGeneration.from_pretrained(published)(input_features=features,
                                                                           decoder_input_ids=ids).logits
        b = LiteWhisperForConditionalGeneration.from_pretrained(upgraded)(input_features=features,
                                                                          decoder_input_ids=ids).logits
    assert torch.equal(a, b)
    with pytest.raises(FileExistsError):
        upgrade_published(published, upgraded, processor=tiny_en_dir)


def test_upgrade_script(folders, tiny_en_dir, tmp_path):
    _, published = folders
    out = tmp_path / "upgraded"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "upgrade_published.py"), "--model", str(published),
                          "--output", str(out), "--processor", str(tiny_en_dir)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "pipeline_lite_whisper.py").is_file() and str(out) in run.stdout
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "upgrade_published.py"), "--model",
                              str(published), "--output", str(tmp_path / "no-processor")],
                             capture_output=True, text=True, timeout=600, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert missing.returncode == 2 and "openai/whisper-tiny.en" in missing.stderr
    assert not (tmp_path / "no-processor").exists()


def test_published_weights_that_disagree_with_low_rank_config_are_named(folders, tmp_path):
    _, published = folders
    broken = tmp_path / "broken"
    shutil.copytree(published, broken)
    config = json.loads((broken / "config.json").read_text())
    config["low_rank_config"][2] = {**config["low_rank_config"][2], "fc1": 160}
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape mismatch at encoder layer 2, module fc1 \(weight1\)"):
        AutoModel.from_pretrained(broken)
    assert liteasr_hf.LiteWhisperConfig.builtin_asr_pipeline

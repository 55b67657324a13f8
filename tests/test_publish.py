"""Publishing to the Hub, end to end over real HTTP: a Hub-compatible server on 127.0.0.1 (tests/hub_server.py), the
real huggingface_hub client, and a clean process that downloads the repo and loads it with remote code only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from huggingface_hub import HfApi, ModelCard, constants
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.checkpoints.saving import save_model_folder
from liteasr_hf.compression.compressor import compression_report
from liteasr_hf.compression.presets import load_settings
from liteasr_hf.compression.rank_selection import RankPlan
from liteasr_hf.compression.report import SpeechData
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET
from liteasr_hf.evaluation.benchmark import run_benchmark
from liteasr_hf.evaluation.summary import EvaluationSummary
from liteasr_hf.hub import (
    BLOCK_LITEASR_HF,
    PublishError,
    check_staged_folder,
    publish,
    publish_batch,
    stage_folder,
    upload_staged_folder,
)
from liteasr_hf.hub.model_card import build_model_card, check_card, validate_card_on_hub
from liteasr_hf.hub.staging import STAGING_MARKER
from liteasr_hf.portable import portable_command, portable_data

# huggingface_hub's own LFS upload passes the file as `data=`, which its HTTP client deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import upload as upload_script

SMALL = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
RANKS = [{"q_proj": 16, "k_proj": 16, "fc1": 32}, {"v_proj": 32, "fc2": 48}]
VARIANCE = [{"q_proj": 0.991, "k_proj": 0.993, "fc1": 0.9987}, {"v_proj": 0.995, "fc2": 0.9991}]
LIBRISPEECH = ("openslr/librispeech_asr", "clean", "test")
FILES = {  # besides the code files
    "README.md", "config.json", "generation_config.json", "model.safetensors", "compression_report.json",
    "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "normalizer.json",
}


def expected_files(model_dir: Path) -> set[str]:
    """What a staged folder must hold: ``FILES`` and the code save_pretrained copied (the three modules config.json
    names and whatever they import relatively)."""
    code = {p.name for p in model_dir.glob("*.py")}
    assert {"configuration_lite_whisper.py", "modeling_lite_whisper.py", "pipeline_lite_whisper.py"} <= code
    return FILES | code


def summary(model: Path | str, model_type: str, encoder_params: int, wer: float, rtfx: float,
            data: str, config: str | None, split: str, groups: dict[str, float] | None = None) -> dict:
    """An evaluation summary with the fields scripts/evaluate.py writes (``groups``: WER per speaker group)."""
    return {
        "groups": {g: {"wer": w, "errors": 1, "reference_words": 10, "utterances": 2, "long_outputs": 0}
                   for g, w in (groups or {}).items()},
        "model": str(model), "model_path": str(model), "model_type": model_type, "data": data, "config": config,
        "split": split, "n_utterances": 165, "n_failed": 0, "failed": [], "wer": wer, "errors": 1, "substitutions": 1,
        "deletions": 0, "insertions": 0, "reference_words": 1316, "n_scored": 165, "n_empty_references": 0,
        "empty_reference_ids": [], "n_long_outputs": 0, "long_output_ids": [], "rtfx": rtfx,
        "total_audio_seconds": 416.418, "compute_seconds": 97.5, "encoder_params": encoder_params, "device": "cpu",
        "dtype": "float32", "batch_size": 8, "language": None, "max_new_tokens": None, "warmup_batches": 1,
        "normalizer": "whisper-english (spelling: tokenizer normalizer.json)", "timestamp": "2026-01-01T00:00:00+00:00",
    }


def stop_after_a_few_tokens(model) -> None:
    """Random weights would generate up to max_length (448) tokens: a final-norm bias along the end-of-text
    embedding (tied to the output layer) makes generation stop after a few, and leaves the logits dependent on every
    weight. (tiny.en's end-of-text is also its padding token, whose row starts at zero.)"""
    with torch.no_grad():
        direction = torch.nn.functional.normalize(torch.randn(SMALL["d_model"]), dim=0)
        model.model.decoder.embed_tokens.weight[model.generation_config.eos_token_id] = direction
        model.model.decoder.layer_norm.bias.copy_(20 * direction)


@pytest.fixture(scope="module")
def lite_model(tiny_en_dir, tmp_path_factory) -> Path:
    """A small random LiteWhisper with tiny.en's tokenizer, feature extractor and generation config, saved as
    scripts/compress.py saves (with compression_report.json and rank_plan.json), and its evaluation folder."""
    whisper = WhisperConfig.from_pretrained(tiny_en_dir)
    config = LiteWhisperConfig.from_whisper_config(WhisperConfig(**{**whisper.to_dict(), **SMALL}), RANKS)
    torch.manual_seed(0)
    model = LiteWhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    stop_after_a_few_tokens(model)
    plan = RankPlan(RANKS, VARIANCE, {"mode": "threshold", "calibration": "sequential"})
    report = compression_report(config, plan, load_settings("tiny"), [np.zeros(16000 * 20, np.float32)], 1.5)
    report.source_model, report.resolved_model, report.device, report.dtype = "tiny.en", str(tiny_en_dir), "cpu", \
        "float32"
    report.calibration_data = SpeechData(data=str(SHIPPED_SPEECH_SET), split="calibration", failed=0)
    report.total_seconds = 2.0
    root = tmp_path_factory.mktemp("models")
    extra = {"compression_report.json": report.to_json(), "rank_plan.json": json.dumps(RANKS)}
    folder = save_model_folder(model, root / "lite-whisper-tiny",
                               processor=WhisperProcessor.from_pretrained(tiny_en_dir), extra_files=extra)
    evaluation = root / "lite-whisper-tiny-evaluation"
    evaluation.mkdir()
    enc = report.encoder
    for name, content in {
        "lite-whisper-tiny__speech-evaluation": summary(folder, "lite-whisper", enc.params_after, 23.45, 6.1,
                                                         str(SHIPPED_SPEECH_SET), None, "evaluation",
                                                         {"synthetic": 21.5, "real non-native child": 40.25}),
        "whisper-tiny.en__speech-evaluation": summary(tiny_en_dir, "whisper", enc.params_before, 19.83, 5.3,
                                                       str(SHIPPED_SPEECH_SET), None, "evaluation",
                                                       {"synthetic": 18.0, "real non-native child": 38.5}),
        "lite-whisper-tiny__librispeech": summary(folder, "lite-whisper", enc.params_after, 31.2, 7.0, *LIBRISPEECH),
    }.items():
        (evaluation / f"{name}.summary.json").write_text(json.dumps(content, indent=2))
    # per-utterance records beside the two runs on the same clips: four children, two clips each
    for name, errors in (("lite-whisper-tiny__speech-evaluation", [2, 1, 3, 1, 0, 1, 2, 2]),
                         ("whisper-tiny.en__speech-evaluation", [1, 1, 2, 1, 0, 1, 2, 1])):
        records = [{"id": f"clip{i}", "errors": e, "reference_words": 5, "group": "real non-native child",
                    "speaker": f"child{i // 2}"} for i, e in enumerate(errors)]
        (evaluation / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture(scope="module")
def staged(lite_model, tmp_path_factory):
    return stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path_factory.mktemp("stage") / "staged",
                        evaluation=[lite_model.parent / "lite-whisper-tiny-evaluation"])


@pytest.fixture(autouse=True)
def hub_client(monkeypatch, tmp_path):
    """huggingface_hub reads HF_HUB_DISABLE_XET and the token path at import: set them on its constants.
    No token is found unless a test provides one."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain LFS, which the test server speaks
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


def digest(folder: Path) -> dict[str, str]:
    """sha256 and mode of every file under ``folder``: to show a folder was left untouched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- dry run, staging, card ----------------------------------------------------------------------------------


def test_dry_run_stages_checks_and_touches_no_network(lite_model, hub, tmp_path, capsys):
    before = digest(lite_model)
    code = upload_script.main(["--model", str(lite_model), "--repo-id", "org/lite-whisper-tiny", "--dry-run",
                               "--endpoint", hub.api_url, "--staging-dir", str(tmp_path / "staged")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert hub.requests == []  # no token needed, no request made
    assert "Dry run: nothing was uploaded." in out
    for name in expected_files(lite_model):
        assert re.search(rf"^  {re.escape(name)}\s+[\d.]+ [kM]?B$", out, re.MULTILINE), name
    # The clean-process check ran: loaded with the repo's own code, liteasr_hf unimportable there.
    assert "Check: loads with trust_remote_code without liteasr_hf as LiteWhisperForConditionalGeneration" in out
    assert "WER 23.45 on liteasr-hf speech set (evaluation)" in out
    assert "rank_plan.json is not published" in out
    assert digest(lite_model) == before


def test_staged_folder_holds_exactly_what_a_user_needs(staged, lite_model):
    # Besides the staging marker, which is never uploaded:
    assert set(staged.files) == expected_files(lite_model) == {p.name for p in staged.path.iterdir()} - {
        STAGING_MARKER}
    for name in expected_files(lite_model) - {"README.md"}:  # copies, byte for byte
        assert (staged.path / name).read_bytes() == (lite_model / name).read_bytes(), name
    config = json.loads((staged.path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSpeechSeq2Seq"}
    assert config["custom_pipelines"]["automatic-speech-recognition"]["impl"].startswith("pipeline_lite_whisper.")
    assert json.loads((staged.path / "generation_config.json").read_text())["max_length"] == 448
    assert (lite_model / "rank_plan.json").is_file()  # in the source, left out of the Hub copy


def test_card_metadata_is_valid_and_carries_the_evaluation_numbers(staged, lite_model, hub):
    card = ModelCard.load(staged.path / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "openai/whisper-tiny.en"
    assert (data["library_name"], data["pipeline_tag"], data["license"]) == (
        "transformers", "automatic-speech-recognition", "apache-2.0")
    assert data["language"] == ["en"] and {"lite-whisper", "liteasr"} <= set(data["tags"])
    assert data["datasets"] == ["openslr/librispeech_asr"]  # Hub ids only; the local set is named in the body
    results = {(r.dataset_type, r.dataset_config, r.dataset_split): (r.metric_type, r.metric_value)
               for r in card.data.eval_results}
    evaluation = lite_model.parent / "lite-whisper-tiny-evaluation"
    wer = {p.name.split(".")[0]: json.loads(p.read_text())["wer"] for p in evaluation.glob("*.summary.json")}
    assert results == {
        ("liteasr-hf-speech", None, "evaluation"): ("wer", wer["lite-whisper-tiny__speech-evaluation"]),
        LIBRISPEECH: ("wer", wer["lite-whisper-tiny__librispeech"]),
    }
    validate_card_on_hub(card, endpoint=hub.api_url)  # the Hub's own check of the metadata

    text = card.text
    enc = json.loads((lite_model / "compression_report.json").read_text())["encoder"]
    base_row = next(line for line in text.splitlines() if line.startswith("| [openai/whisper-tiny.en]"))
    our_row = next(line for line in text.splitlines() if line.startswith("| **lite-whisper-tiny**"))
    # Encoder sizes as the published tables count them (without the position table), the full count beside them.
    before, after = enc["params_excluding_positions_before"], enc["params_excluding_positions_after"]
    assert before == enc["params_before"] - 1500 * SMALL["d_model"]
    assert f"| {before / 1e6:.2f}M (100%; {enc['params_before'] / 1e6:.2f}M with the position table) |" in base_row
    assert (f"| {after / 1e6:.2f}M ({100 * after / before:.1f}%; {enc['params_after'] / 1e6:.2f}M with the position "
            "table) |") in our_row
    assert f"without Whisper's fixed sinusoidal position\ntable (1500 x {SMALL['d_model']} values" in text
    # WER only: no RTFx column from two separate evaluation runs.
    # Per speaker group where the data names groups, real speech first, then the whole set.
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert header.endswith("| WER % (liteasr-hf speech set, evaluation, real non-native child) | WER % (liteasr-hf "
                           "speech set, evaluation, synthetic) | WER % (liteasr-hf speech set, evaluation, all) | "
                           "WER % (openslr/librispeech_asr, clean, test) |")
    assert base_row.endswith("| 38.50 | 18.00 | 19.83 | not evaluated |")  # no LibriSpeech result for the base
    assert our_row.endswith("| 40.25 | 21.50 | 23.45 | 31.20 |")
    assert "RTFx" not in text and "| 5.3 |" not in text and "| 6.1 |" not in text
    # clip by clip where both runs left their records: 3 errors more in 40 words, with its interval over 4 children
    change = next(line for line in text.splitlines() if line.startswith("| liteasr-hf speech set, evaluation |"))
    assert change == "| liteasr-hf speech set, evaluation | real non-native child | 4 | +7.50 (+2.50 to +10.00) |"
    assert "**No speed comparison was supplied when this card was written.**" in text
    # English-only base: the language is English, and the card names what calibration and evaluation used.
    assert ("English only, like openai/whisper-tiny.en.\n\n"
            "- Calibrated on: liteasr-hf speech set, calibration (English)\n"
            "- Evaluated on: liteasr-hf speech set, evaluation (English); "
            "openslr/librispeech_asr, clean, test (English)\n") in text
    assert "untested" not in text
    assert "<details>" in text and "| 0 | 16 (99.10%) | 16 (99.30%) | dense | dense | 32 (99.87%) | dense |" in text
    assert "`liteasr compress --model tiny.en --preset tiny`" in text  # no command recorded: rebuilt
    assert 'from_pretrained("org/lite-whisper-tiny", trust_remote_code=True)' in text
    assert "arXiv preprint arXiv:2502.20583" in text and "Kamahori" in text

    broken = str(card).replace("license: apache-2.0", "license: apache2")
    with pytest.raises(ValueError, match="license"):
        validate_card_on_hub(broken, endpoint=hub.api_url)
    with pytest.raises(ValueError, match="base_model is missing"):
        check_card(re.sub(r"^base_model: .*\n", "", str(card), flags=re.MULTILINE))


def test_missing_evaluation_is_stated_as_missing(lite_model, tmp_path):
    staged = stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "staged", evaluation=[])
    card = ModelCard.load(staged.path / "README.md")
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "No evaluation results were supplied" in card.text
    assert "23.45" not in card.text and "19.83" not in card.text
    # Only the base model's result: ours is reported missing, not invented.
    base_only = stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "staged2", evaluation=[
        lite_model.parent / "lite-whisper-tiny-evaluation" / "whisper-tiny.en__speech-evaluation.summary.json"])
    text = (base_only.path / "README.md").read_text()
    assert "**This model was not evaluated**" in text and "model-index" not in text
    assert re.search(r"^\| \*\*lite-whisper-tiny\*\*.*\| not evaluated \|$", text, re.MULTILINE)


# --- what the card claims: command, speed, languages --------------------------------------------------------


@pytest.mark.parametrize("command, expected", [
    ("python scripts/compress.py --model /home/me/work/base --output /home/me/work/lite-base",
     "python scripts/compress.py --model base --output lite-base"),
    ("python scripts/compress.py --model ~/models/whisper-base/ --calibration ./audio/mine --num-samples 8",
     "python scripts/compress.py --model whisper-base --calibration mine --num-samples 8"),
    ("python scripts/compress.py --model=/a/b --config=../presets/custom.yaml --budget=0.6 --overwrite",
     "python scripts/compress.py --model=b --config=custom.yaml --budget=0.6 --overwrite"),
    ("python scripts/compress.py --model openai/whisper-base --preset base-fast --output models/lite-base-fast",
     "python scripts/compress.py --model openai/whisper-base --preset base-fast --output lite-base-fast"),
    ("python scripts/compress.py --model tiny.en --calibration openslr/librispeech_asr --calibration-config clean "
     "--device cuda:0 --dtype bfloat16 --max-memory 0=20GiB,cpu=64GiB",
     "python scripts/compress.py --model tiny.en --calibration openslr/librispeech_asr --calibration-config clean "
     "--device cuda:0 --dtype bfloat16 --max-memory 0=20GiB,cpu=64GiB"),
    ("python scripts/compress.py --model 'C:\\Users\\me\\base' --output '/tmp/my models/out' --plan runs/plan.json",
     "python scripts/compress.py --model base --output out --plan plan.json"),
    ("python scripts/compress.py --model data/a/b/c", "python scripts/compress.py --model c"),
    # the benchmarks' model specs: a label and a variant stay, the path in them is reduced as any other
    ("liteasr benchmark --models onnx/whisper-base onnx/whisper-base:q8 /home/me/onnx/lite:q8@log-mel ./x@audio",
     "liteasr benchmark --models onnx/whisper-base onnx/whisper-base:q8 lite:q8@log-mel x@audio"),
    ("liteasr benchmark-vllm --models whisper-base=models/whisper-base lite=/home/me/lite --device cuda:0",
     "liteasr benchmark-vllm --models whisper-base=models/whisper-base lite=lite --device cuda:0"),
])
def test_portable_command_keeps_ids_and_drops_local_directories(command, expected):
    assert portable_command(command) == expected


def test_shipped_speech_is_recorded_relative_to_the_shipped_root(tmp_path, monkeypatch):
    from liteasr_hf.hub.model_card import dataset_ref
    from liteasr_hf.shipped import DATA_ROOT

    monkeypatch.chdir(tmp_path)  # not the checkout: the recorded path must not depend on where the report was written
    recorded = portable_data(DATA_ROOT / "evaluation.jsonl")
    assert recorded == "data/evaluation.jsonl"
    assert portable_data(DATA_ROOT.resolve() / "speech") == "data/speech"
    assert dataset_ref(recorded).name == "liteasr-hf speech set"  # a card made from the report still knows it
    mine = tmp_path.parent / "elsewhere" / "my-speech"
    mine.mkdir(parents=True, exist_ok=True)
    assert portable_data(mine) == "my-speech"  # the user's own folder says nothing about their machine
    assert portable_data("openslr/librispeech_asr") == "openslr/librispeech_asr"


def test_card_shows_the_recorded_command_without_local_paths(lite_model, tmp_path):
    """A command recorded with a user's absolute paths reaches the card with file names only; an older report
    without the position-free encoder counts gets them from the config."""
    folder = tmp_path / "work" / "lite-whisper-tiny"
    shutil.copytree(lite_model, folder)
    custom = tmp_path / "work" / "presets" / "custom.yaml"
    report_file = folder / "compression_report.json"
    report = json.loads(report_file.read_text())
    encoder = report["encoder"]
    expected_sizes = (encoder.pop("params_excluding_positions_before"), encoder.pop("params_excluding_positions_after"))
    report.update(command=f"python scripts/compress.py --model {tmp_path}/whisper/tiny.en --output {folder} "
                          f"--config={custom} --num-samples 8", preset=str(custom))
    report_file.write_text(json.dumps(report))
    staged = stage_folder(folder, "org/lite-whisper-tiny", tmp_path / "staged", evaluation=[],
                          base_model="openai/whisper-tiny.en")
    text = (staged.path / "README.md").read_text()
    assert str(tmp_path) not in text and "/work/" not in text
    assert ("- Command: `python scripts/compress.py --model tiny.en --output lite-whisper-tiny --config=custom.yaml "
            "--num-samples 8` (`custom.yaml` holding the `settings` of `compression_report.json`) (local paths "
            "reduced to their last component).") in text
    assert "- Preset: custom settings" in text  # a YAML file of the user's is not one of the shipped presets
    before, after = expected_sizes
    assert f"| {before / 1e6:.2f}M (100%; {encoder['params_before'] / 1e6:.2f}M with the position table) |" in text
    assert f"| {after / 1e6:.2f}M ({100 * after / before:.1f}%; " in text

    # A shipped preset named by its path is still that preset; a Hub id in the command stays as it is.
    report.update(command="python scripts/compress.py --model openai/whisper-tiny.en --config configs/tiny.yaml",
                  preset="configs/tiny.yaml")
    report_file.write_text(json.dumps(report))
    text = build_model_card(folder, "org/lite-whisper-tiny").text
    assert "- Preset: `tiny`" in text
    assert ("- Command: `python scripts/compress.py --model openai/whisper-tiny.en --config tiny.yaml` (local paths "
            "reduced to their last component).\n") in text


@pytest.fixture(scope="module")
def benchmarked(lite_model, tiny_en_dir, tmp_path_factory):
    """A copy of the lite model compressed, as its report says, from a dense random Whisper of the same shapes
    saved beside it; and one real run of scripts/benchmark.py's run_benchmark over both (base model first)."""
    root = tmp_path_factory.mktemp("benchmark")
    whisper = WhisperConfig.from_pretrained(tiny_en_dir)
    torch.manual_seed(1)
    dense = WhisperForConditionalGeneration(WhisperConfig(**{**whisper.to_dict(), **SMALL})).eval()
    dense.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    stop_after_a_few_tokens(dense)
    base_dir = save_model_folder(dense, root / "whisper-small-random",
                                 processor=WhisperProcessor.from_pretrained(tiny_en_dir))
    model_dir = root / "lite-whisper-tiny"
    shutil.copytree(lite_model, model_dir)
    report = json.loads((model_dir / "compression_report.json").read_text())
    report.update(source_model=str(base_dir), resolved_model=str(base_dir))
    (model_dir / "compression_report.json").write_text(json.dumps(report))
    output = root / "benchmark.json"
    run_benchmark([base_dir, model_dir], batch_sizes=(1, 2), repeats=1, measure_memory=False,
                  data=SHIPPED_SPEECH_SET, split="evaluation", e2e_clips=2, e2e_batch_size=2, e2e_repeats=1,
                  output=output, log=None)
    return model_dir, base_dir, output


def test_speed_comes_from_one_benchmark_run_of_both_models(benchmarked, tmp_path):
    model_dir, base_dir, output = benchmarked
    bench = json.loads(output.read_text())
    staged = stage_folder(model_dir, "org/lite-whisper-tiny", tmp_path / "staged", evaluation=[],
                          base_model="openai/whisper-tiny.en", benchmark=output)
    assert staged.benchmark == output and not any("no benchmark report" in note for note in staged.notes)
    text = staged.card.text
    assert str(tmp_path.parent) not in text  # local paths neither of the report nor of the models
    settings = bench["settings"]
    assert (f"on {bench['machine']['cpu']} ({bench['machine']['cpu_count']} CPUs), device cpu,\nfloat32, "
            f"{settings['threads']} threads, torch.compile off, {bench['timestamp'][:10]}.") in text
    assert "`benchmark.json`" in text and "medians\nover 1 timed round after 1 warm-up" in text
    rows = {(r["model"], r["batch_size"]): r for r in bench["encoder"]}
    base, ours = str(base_dir), str(model_dir)
    assert ("| batch size | openai/whisper-tiny.en encoder ms | lite-whisper-tiny encoder ms | encoder speed-up | "
            "FLOP reduction |") in text
    for size in (1, 2):
        b, m = rows[(base, size)], rows[(ours, size)]
        speedup, reduction = b["latency_ms"] / m["latency_ms"], b["encoder_gflops"] / m["encoder_gflops"]
        assert (f"| {size} | {b['latency_ms']:.1f} | {m['latency_ms']:.1f} | **{speedup:.2f}x** | "
                f"{reduction:.2f}x |") in text
    e2e = {r["model"]: r for r in bench["end_to_end"]}
    assert (f"| 2 | 2 ({e2e[ours]['audio_seconds']:.0f} s) | {e2e[base]['rtfx']:.1f} | {e2e[ours]['rtfx']:.1f} | "
            f"**{e2e[base]['seconds'] / e2e[ours]['seconds']:.2f}x** |") in text
    assert "on liteasr-hf speech set, evaluation; RTFx" in text
    assert "No speed comparison was supplied" not in text

    # The report read on another machine: the folders' paths differ, their names still match.
    moved = json.loads(output.read_text())
    for entry in moved["models"]:
        entry["model"] = entry["model_path"] = f"/elsewhere/{Path(entry['model_path']).name}"
    for row in moved["encoder"] + moved["end_to_end"]:
        row["model"] = f"/elsewhere/{Path(row['model']).name}"
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    moved_text = build_model_card(model_dir, "org/lite-whisper-tiny", base_model="openai/whisper-tiny.en",
                                  benchmark=tmp_path / "moved.json").text
    assert moved_text.replace("moved.json", "benchmark.json") == text

    # This model as the run's reference: the speed-up is still the base model's time over this model's; a run
    # without transcription says so. Through the batch file, the same.
    reversed_run = tmp_path / "reversed.json"
    run_benchmark([model_dir, base_dir], batch_sizes=(1,), repeats=1, measure_memory=False, e2e_clips=0,
                  output=reversed_run, log=None)
    rows = {r["model"]: r for r in json.loads(reversed_run.read_text())["encoder"]}
    batch = tmp_path / "publish.yaml"
    batch.write_text(f"variants:\n  - {{model: {model_dir}, repo_id: org/lite-whisper-tiny, evaluation: [], "
                     f"base_model: openai/whisper-tiny.en, benchmark: {reversed_run}, "
                     f"staging_dir: {tmp_path / 'b'}}}\n")
    [result] = publish_batch(batch, dry_run=True, check=False)
    text = result.staged.card.text
    assert f"**{rows[base]['latency_ms'] / rows[ours]['latency_ms']:.2f}x**" in text
    assert "The benchmark did not time transcription end to end" in text


def test_a_benchmark_without_both_models_is_refused(benchmarked, tmp_path, capsys):
    model_dir, base_dir, output = benchmarked
    alone = tmp_path / "alone.json"
    run_benchmark([model_dir], batch_sizes=(1,), repeats=1, measure_memory=False, e2e_clips=0, output=alone, log=None)
    with pytest.raises(ValueError, match=r"does not contain its base model \(openai/whisper-tiny.en\): it holds "
                                         rf"{re.escape(str(model_dir))} \(lite-whisper\).*--models"):
        stage_folder(model_dir, "org/lite-whisper-tiny", tmp_path / "s", evaluation=[],
                     base_model="openai/whisper-tiny.en", benchmark=alone)
    code = upload_script.main(["--model", str(model_dir), "--repo-id", "org/lite-whisper-tiny", "--no-evaluation",
                               "--base-model", "openai/whisper-tiny.en", "--benchmark", str(alone), "--dry-run",
                               "--skip-check", "--staging-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "does not contain its base model" in err
    assert not (tmp_path / "s").exists()

    # A different checkpoint under the base model's name (another encoder size) is not taken for it.
    other = json.loads(output.read_text())
    next(e for e in other["models"] if e["model_type"] == "whisper")["encoder_params"] += 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="encoder parameters, but compression_report.json says .* another checkpoint"):
        build_model_card(model_dir, "org/x", base_model="openai/whisper-tiny.en", benchmark=tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="Run liteasr benchmark"):
        build_model_card(model_dir, "org/x", base_model="openai/whisper-tiny.en", benchmark=tmp_path / "none.json")


@pytest.fixture(scope="module")
def multilingual_model(tiny_en_dir, tmp_path_factory) -> Path:
    """A small random LiteWhisper with a multilingual vocabulary and generation config (Whisper's 99 language
    tokens, at the ids whisper-base has them), compressed from whisper-base as its report says."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    whisper = WhisperConfig.from_pretrained(tiny_en_dir)
    config = LiteWhisperConfig.from_whisper_config(
        WhisperConfig(**{**whisper.to_dict(), **SMALL, "vocab_size": 51865}), RANKS)
    torch.manual_seed(0)
    model = LiteWhisperForConditionalGeneration(config).eval()
    codes = list(LANGUAGES)[:99]  # whisper-base: every language before Cantonese
    model.generation_config = GenerationConfig(
        is_multilingual=True, lang_to_id={f"<|{code}|>": 50259 + i for i, code in enumerate(codes)},
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, max_length=448)
    plan = RankPlan(RANKS, VARIANCE, {"mode": "threshold", "calibration": "sequential"})
    report = compression_report(config, plan, load_settings("tiny"), [np.zeros(16000 * 20, np.float32)], 1.5)
    report.source_model, report.resolved_model, report.device, report.dtype = "base", "whisper-base", "cpu", "float32"
    report.calibration_data = SpeechData(data=str(SHIPPED_SPEECH_SET), split="calibration", failed=0)
    return save_model_folder(model, tmp_path_factory.mktemp("multi") / "lite-whisper-base",
                             extra_files={"compression_report.json": report.to_json()})


def test_card_says_how_the_model_was_healed(lite_model, tmp_path):
    folder = tmp_path / "lite-whisper-tiny"
    shutil.copytree(lite_model, folder)
    assert "- Healing:" not in build_model_card(folder, "org/lite-whisper-tiny").text
    report_file = folder / "compression_report.json"
    report = json.loads(report_file.read_text())
    report["healing"] = {
        "stages": [{"stage": f"encoder layer {i}", "steps": 20, "holdout_loss_before": 1.0, "holdout_loss_after": 0.5}
                   for i in range(4)] + [{"stage": "end to end", "steps": 60, "holdout_loss_before": 0.0412,
                                          "holdout_loss_after": 0.0131}],
        "windows": {"train": 144, "holdout": 16}, "seconds": 312.0,
        "data": {"data": "training-v2-seed0", "split": "training", "failed": 0}}
    report_file.write_text(json.dumps(report))
    text = build_model_card(folder, "org/lite-whisper-tiny").text
    assert ("- Healing: after factorizing, the factors were distilled against openai/whisper-tiny.en's encoder, "
            "label-free: block-wise (4 layers) 80 steps, end to end 60 steps (held-out encoder loss 0.0412 -> 0.0131 "
            "at the end-to-end stage), on 160 windows of training-v2-seed0 (training), in 5.2 min.") in text


def test_card_of_a_multilingual_base_names_the_tested_languages(multilingual_model, hub, tmp_path):
    enc = json.loads((multilingual_model / "compression_report.json").read_text())["encoder"]

    def evaluated(wer: float, data: str, config: str | None, split: str, language: str | None) -> EvaluationSummary:
        fields = summary(multilingual_model, "lite-whisper", enc["params_after"], wer, 1.0, data, config, split)
        return EvaluationSummary.from_dict({**fields, "language": language})

    summaries = [
        (tmp_path / "a.summary.json", evaluated(12.0, str(SHIPPED_SPEECH_SET), None, "evaluation", None)),
        (tmp_path / "b.summary.json", evaluated(9.0, *LIBRISPEECH, "en")),
        (tmp_path / "c.summary.json", evaluated(30.0, "facebook/voxpopuli", "de", "test", None)),
    ]
    card = build_model_card(multilingual_model, "org/lite-whisper-base", summaries)
    assert card.data.language == ["en"]  # what was tested, not the base model's 99 languages
    validate_card_on_hub(card, endpoint=hub.api_url)
    text = " ".join(card.text.split())
    assert ("openai/whisper-base transcribes 99 languages; this model was tested in English (and on data whose "
            "language was not recorded). "
            "- Calibrated on: liteasr-hf speech set, calibration (English) "
            "- Evaluated on: facebook/voxpopuli, de, test (language not recorded); liteasr-hf speech set, evaluation "
            "(English); openslr/librispeech_asr, clean, test (English) "
            "**The other languages are untested.** The low-rank factors were fitted to English speech only") in text
    assert "The metadata lists only the languages tested here." in text

    # Calibrated on a data set whose language nobody recorded, and not evaluated: no language is claimed.
    report_file = multilingual_model / "compression_report.json"
    original = report_file.read_text()
    try:
        report = json.loads(original)
        report["calibration_data"] = {"data": "facebook/voxpopuli", "config": "fr", "split": "train", "failed": 0}
        report_file.write_text(json.dumps(report))
        card = build_model_card(multilingual_model, "org/lite-whisper-base")
    finally:
        report_file.write_text(original)
    assert card.data.language is None and "language:" not in str(card).split("---")[1]
    check_card(card)
    validate_card_on_hub(card, endpoint=hub.api_url)
    text = " ".join(card.text.split())
    assert ("this model was tested in none of them that is known: the languages of its calibration and evaluation "
            "data were not recorded. - Calibrated on: facebook/voxpopuli, fr, train (language not recorded) "
            "- Evaluated on: nothing (not evaluated) **The other languages are untested.** The low-rank factors were "
            "fitted to speech of an unrecorded language") in text
    assert "The metadata lists only the languages tested here, so it lists none." in text


# --- upload, re-upload, download with remote code ---------------------------------------------------------------

DOWNLOAD_AND_LOAD = BLOCK_LITEASR_HF + textwrap.dedent(
    """
    import json, re
    import torch
    from huggingface_hub import snapshot_download
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSpeechSeq2Seq
    repo_id, features, out = sys.argv[1:4]
    snapshot = snapshot_download(repo_id)
    # The card's usage snippets, as a reader would paste them (speech.flac is in the working folder).
    card = open(snapshot + "/README.md", encoding="utf-8").read()
    snippets = re.findall(r"```python\\n(.*?)```", card, re.DOTALL)
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), {})
    model = AutoModelForSpeechSeq2Seq.from_pretrained(repo_id, trust_remote_code=True).eval()
    feats = load_file(features)["features"]
    ids = torch.tensor([[50257, 50362, 440, 1049]] * feats.shape[0])
    with torch.no_grad():
        logits = model(input_features=feats, decoder_input_ids=ids).logits
    assert not any(m.split(".")[0] == "liteasr_hf" for m in sys.modules)
    save_file({"logits": logits}, out + ".safetensors")
    json.dump({"snapshot": snapshot, "snippets": len(snippets), "class": type(model).__name__}, open(out + ".json", "w"))
    """
)


def test_upload_reupload_download_and_load_with_remote_code(staged, lite_model, hub, tmp_path):
    result = upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url,
                                  commit_message="Publish lite-whisper-tiny")
    assert sorted(result.changed) == sorted(staged.files) and result.revision == "main"
    stored = hub.files("org/lite-whisper-tiny")
    assert set(stored) == expected_files(lite_model) | {".gitattributes"}
    assert all(stored[name] == (staged.path / name).read_bytes() for name in staged.files)
    tree = {f.path: f for f in HfApi(endpoint=hub.api_url).list_repo_tree("org/lite-whisper-tiny", recursive=True)}
    weights = (staged.path / "model.safetensors").read_bytes()
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()  # went through LFS
    commits = hub.commit_count("org/lite-whisper-tiny")

    again = upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    assert again.changed == [] and again.deleted == [] and again.commit_oid == result.commit_oid
    assert hub.commit_count("org/lite-whisper-tiny") == commits
    assert sum(path.endswith("/commit/main") for _, _, path in hub.requests) == 1  # the first upload's only

    # A user elsewhere: a fresh cache, HF_ENDPOINT at the server, no liteasr_hf, real HTTP (LFS through the CDN host).
    audio, rate = sf.read(SHIPPED_SPEECH_SET / "evaluation" / json.loads(
        (SHIPPED_SPEECH_SET / "evaluation" / "metadata.jsonl").read_text().splitlines()[0])["file_name"])
    sf.write(tmp_path / "speech.flac", audio, rate)
    feats = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
    save_file({"features": feats}, tmp_path / "feats.safetensors")
    (tmp_path / "load.py").write_text(DOWNLOAD_AND_LOAD)
    env = {"PATH": os.environ["PATH"], "HF_ENDPOINT": hub.api_url, "HF_HUB_DISABLE_XET": "1", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf_home"), "NO_PROXY": "127.0.0.1,localhost", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    args = ["org/lite-whisper-tiny", str(tmp_path / "feats.safetensors"), str(tmp_path / "out")]
    run = subprocess.run([sys.executable, str(tmp_path / "load.py"), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    out = {**json.loads((tmp_path / "out.json").read_text()), **load_file(tmp_path / "out.safetensors")}
    assert out["class"] == "LiteWhisperForConditionalGeneration" and out["snippets"] == 2
    assert digest(Path(out["snapshot"])).keys() == set(stored)
    assert all(Path(out["snapshot"], name).read_bytes() == data for name, data in stored.items())
    local = LiteWhisperForConditionalGeneration.from_pretrained(lite_model).eval()
    with torch.no_grad():
        expected = local(input_features=feats, decoder_input_ids=torch.tensor([[50257, 50362, 440, 1049]] * 2)).logits
    torch.testing.assert_close(out["logits"], expected, rtol=0, atol=0)
    assert any(host.startswith("localhost:") and path.startswith("/cdn/lfs/") for _, host, path in hub.requests)


def test_create_pr_and_branch_leave_main_alone(staged, lite_model, hub, tmp_path):
    upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    main_before = hub.files("org/lite-whisper-tiny")
    changed = stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "mit", license="mit",
                           evaluation=[lite_model.parent / "lite-whisper-tiny-evaluation"])
    pr = upload_staged_folder(changed.path, "org/lite-whisper-tiny", create_pr=True, token=hub.token,
                              endpoint=hub.api_url)
    assert pr.changed == ["README.md"] and pr.revision == "refs/pr/1" and pr.pr_url.endswith("/discussions/1")
    refs = HfApi(endpoint=hub.api_url).list_repo_refs("org/lite-whisper-tiny", include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"]
    assert hub.files("org/lite-whisper-tiny") == main_before
    assert hub.files("org/lite-whisper-tiny", "refs/pr/1")["README.md"] == (changed.path / "README.md").read_bytes()

    branch = upload_staged_folder(changed.path, "org/lite-whisper-tiny", revision="v2", token=hub.token,
                                  endpoint=hub.api_url)
    assert branch.revision == "v2" and branch.changed == ["README.md"]
    assert b"license: mit" in hub.files("org/lite-whisper-tiny", "v2")["README.md"]
    assert hub.files("org/lite-whisper-tiny") == main_before


def test_batch_publish(lite_model, hub, tmp_path, monkeypatch, capsys):
    batch = tmp_path / "publish.yaml"
    batch.write_text(textwrap.dedent(f"""
        defaults:
          license: apache-2.0
        variants:
          - model: {lite_model}
            repo_id: org/lite-whisper-tiny
            staging_dir: {tmp_path / "stage-a"}
            evaluation: {lite_model.parent / "lite-whisper-tiny-evaluation"}
          - model: {lite_model}
            repo_id: org/lite-whisper-tiny-private
            staging_dir: {tmp_path / "stage-b"}
            evaluation: []
            private: true
    """))
    results = publish_batch(batch, token=hub.token, endpoint=hub.api_url, check=False)
    assert [r.upload.repo_id for r in results] == ["org/lite-whisper-tiny", "org/lite-whisper-tiny-private"]
    assert hub.repo("org/lite-whisper-tiny-private").private and not hub.repo("org/lite-whisper-tiny").private
    for result in results:
        stored = hub.files(result.upload.repo_id)
        assert all(stored[name] == (result.staged.path / name).read_bytes() for name in result.staged.files)
    assert b"No evaluation results were supplied" in hub.files("org/lite-whisper-tiny-private")["README.md"]

    monkeypatch.setenv("HF_TOKEN", hub.token)  # the CLI takes the token from huggingface_hub's usual places
    code = upload_script.main(["--batch", str(batch), "--endpoint", hub.api_url, "--skip-check"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("already holds these files") == 2
    assert hub.token not in out


# --- bad input -------------------------------------------------------------------------------------------------


def test_not_a_lite_whisper_folder(lite_model, tiny_en_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="holds a 'whisper' model, not a LiteWhisper model.*liteasr compress"):
        stage_folder(tiny_en_dir, "org/x", tmp_path / "s")
    with pytest.raises(ValueError, match="has no config.json: it is not a model folder"):
        stage_folder(tmp_path, "org/x", tmp_path.parent / "s")
    no_report = tmp_path / "no-report"
    shutil.copytree(lite_model, no_report)
    (no_report / "compression_report.json").unlink()
    with pytest.raises(ValueError, match="has no compression_report.json"):
        stage_folder(no_report, "org/x", tmp_path / "s")
    code = upload_script.main(["--model", str(tiny_en_dir), "--repo-id", "org/x", "--dry-run",
                               "--staging-dir", str(tmp_path / "s")])
    assert code == 2 and capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "s").exists()


def test_missing_evaluation_file_and_malformed_repo_id(lite_model, tmp_path, capsys):
    missing = tmp_path / "nowhere.summary.json"
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(missing))} does not exist.*--no-evaluation"):
        stage_folder(lite_model, "org/x", tmp_path / "s", evaluation=[missing])
    for bad in ("lite-whisper-tiny", "org/team/model", "org/bad name", "org/double--dash"):
        with pytest.raises(ValueError, match="malformed"):
            stage_folder(lite_model, bad, tmp_path / "s")
    code = upload_script.main(["--model", str(lite_model), "--repo-id", "not a repo", "--dry-run"])
    assert code == 2 and "namespace/name" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_batch_file_errors_name_the_variant_and_key(lite_model, tmp_path):
    batch = tmp_path / "publish.yaml"
    for variants, message in [
        (["{model: M, repo_id: org/a, privat: true}"], r"variants\[0\] has unknown key\(s\) \['privat'\]"),
        (["{model: M, repo_id: org/a, private: 'false'}"], r"variants\[0\]\.private must be true or false"),
        (["{model: M}"], r"variants\[0\] needs 'repo_id'"),
        (["{model: M, repo_id: org/a}", "{model: M, repo_id: org/b}"], "share a staging_dir"),
        (["{model: M, repo_id: org/a, benchmark: [a.json, b.json]}"], r"variants\[0\]\.benchmark must be one file"),
    ]:
        batch.write_text("variants:\n" + "".join(f"  - {v.replace('M', str(lite_model))}\n" for v in variants))
        with pytest.raises(ValueError, match=message):
            publish_batch(batch, dry_run=True, check=False)
    batch.write_text("models: []\n")
    with pytest.raises(ValueError, match="must hold a 'variants' list"):
        publish_batch(batch, dry_run=True, check=False)
    assert not list(lite_model.parent.glob("*-hub"))  # nothing staged


def test_no_token_is_a_clear_error_before_any_request(lite_model, hub, tmp_path, capsys):
    code = upload_script.main(["--model", str(lite_model), "--repo-id", "org/x", "--endpoint", hub.api_url,
                               "--staging-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "No Hugging Face token found" in err and "hf auth login" in err
    assert hub.requests == [] and not (tmp_path / "s").exists()


def test_server_error_mid_upload_leaves_everything_untouched(staged, lite_model, hub):
    before_staged, before_source = digest(staged.path), digest(lite_model)
    hub.fail("commit", 500)
    with pytest.raises(PublishError) as err:
        upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    message = str(err.value)
    assert "500" in message and "committing to org/lite-whisper-tiny@main" in message
    assert f"The staged folder {staged.path} is unchanged" in message and "again to retry" in message
    assert hub.commit_count("org/lite-whisper-tiny") == 1  # only the repo's initial commit
    assert digest(staged.path) == before_staged and digest(lite_model) == before_source

    # The retry commits; the weights uploaded before the failure are not sent again.
    puts = sum(method == "PUT" for method, _, _ in hub.requests)
    result = upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    assert "model.safetensors" in result.changed and hub.commit_count("org/lite-whisper-tiny") == 2
    assert sum(method == "PUT" for method, _, _ in hub.requests) == puts


def test_existing_public_repo_is_not_published_to_as_private(staged, hub):
    HfApi(endpoint=hub.api_url, token=hub.token).create_repo("org/lite-whisper-tiny")
    with pytest.raises(PublishError, match="already exists and is public"):
        upload_staged_folder(staged.path, "org/lite-whisper-tiny", private=True, token=hub.token,
                             endpoint=hub.api_url)
    assert hub.commit_count("org/lite-whisper-tiny") == 1


def test_check_catches_a_folder_that_needs_the_package(staged, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(staged.path, broken)
    modeling = broken / "modeling_lite_whisper.py"
    modeling.write_text("import liteasr_hf.checkpoints.saving  # a leaked dependency\n" + modeling.read_text())
    with pytest.raises(ValueError, match="(?s)does not load with trust_remote_code.*liteasr_hf is blocked"):
        check_staged_folder(broken)


def test_publish_dry_run_returns_the_staged_folder_without_uploading(lite_model, hub, tmp_path):
    result = publish(lite_model, "org/lite-whisper-tiny", staging_dir=tmp_path / "s", dry_run=True, check=False,
                     endpoint=hub.api_url)
    assert result.upload is None and set(result.staged.files) == expected_files(lite_model) and hub.requests == []


def test_onnx_export_is_published_under_onnx_and_listed_on_the_card(lite_model, hub, tmp_path):
    from huggingface_hub import snapshot_download

    from liteasr_hf.integrations.onnx import OnnxWhisper, export_onnx

    export = export_onnx(lite_model, tmp_path / "onnx-export", quantize=["q8"], progress=False)
    staged = stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "staged", evaluation=[], onnx=export)
    onnx_names = {"onnx/encoder_model.onnx", "onnx/decoder_model_merged.onnx", "onnx/encoder_model_quantized.onnx",
                  "onnx/decoder_model_merged_quantized.onnx", "onnx/export_info.json"}
    assert set(staged.files) == expected_files(lite_model) | onnx_names | {"vocab.json", "added_tokens.json"}
    card = (staged.path / "README.md").read_text()
    assert "## ONNX: transformers.js, onnx-asr, ONNX Runtime" in card and "`onnx/encoder_model_quantized.onnx`" in card
    assert 'pipeline("automatic-speech-recognition", "org/lite-whisper-tiny", { dtype: "q8" })' in card
    assert "`load_onnx_asr` (`liteasr_hf.integrations.onnx.onnx_asr_client`) gives it" in card  # tiny.en: English only
    assert "vllm serve org/lite-whisper-tiny\n" in card and "the plugin prompts it as transformers does" in card

    upload_staged_folder(staged.path, "org/lite-whisper-tiny", token=hub.token, endpoint=hub.api_url)
    snapshot = Path(snapshot_download("org/lite-whisper-tiny", endpoint=hub.api_url, cache_dir=tmp_path / "cache"))
    for name in onnx_names:
        assert (snapshot / name).read_bytes() == (export / name).read_bytes()
    features = np.random.default_rng(0).standard_normal((1, 80, 3000), dtype=np.float32)
    np.testing.assert_array_equal(OnnxWhisper(snapshot).encode(features), OnnxWhisper(export).encode(features))

    # an export of another model is refused, naming the difference
    other = tmp_path / "other-export"
    shutil.copytree(export, other)
    config = json.loads((other / "config.json").read_text())
    config["low_rank_config"][0]["q_proj"] = 8
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="was not made from .* \\(config.json low_rank_config differs\\)"):
        stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "staged2", evaluation=[], onnx=other)
    with pytest.raises(ValueError, match="is not an ONNX export: it needs onnx/encoder_model.onnx"):
        stage_folder(lite_model, "org/lite-whisper-tiny", tmp_path / "staged3", evaluation=[], onnx=tmp_path)

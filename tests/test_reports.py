"""compression_report.json and the evaluation summaries as dataclasses: the JSON a run writes is byte for byte what
it was before (runs with fixed clocks and results, against files written by the earlier code), any report reads and
writes back unchanged (keys this version does not know included), and a folder written by an earlier version reads,
stages and gets a card."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

from liteasr_hf.checkpoints.loading import load_model_and_processor
from liteasr_hf.checkpoints.saving import save_model_folder
from liteasr_hf.compression import checkpoint
from liteasr_hf.compression.compressor import CompressionResult, compression_report
from liteasr_hf.compression.rank_selection import RankPlan
from liteasr_hf.compression.report import (
    CompressionReport,
    EncoderSize,
    HealingReport,
    HealingStage,
    HealingWindows,
    SpeechData,
)
from liteasr_hf.compression.settings import HealSettings
from liteasr_hf.data.speech import SHIPPED_SPEECH_SET, LoadFailure, SpeechSource, Utterance
from liteasr_hf.evaluation import transcription
from liteasr_hf.evaluation.summary import EvaluationSummary
from liteasr_hf.hub import publish
from liteasr_hf.hub.model_card import build_model_card, check_card, load_summaries
from liteasr_hf.models.lite_whisper.configuration_lite_whisper import LiteWhisperConfig
from liteasr_hf.models.lite_whisper.modeling_lite_whisper import LiteWhisperForConditionalGeneration
from liteasr_hf.parallel import Processes

DATA = Path(__file__).parent / "data"
BEFORE = DATA / "reports_before_dataclasses"  # written by the code before the dataclasses (commit 5dc6ab6)
OLD_FOLDER = DATA / "compressed_before_layout"  # a folder and its evaluation as commit e46fdcd wrote them

# --- runs with fixed clocks and results (as the files in BEFORE were written) --------------------------------------

SMALL = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
RANKS = [{"q_proj": 16, "k_proj": 16, "fc1": 32}, {"v_proj": 32, "fc2": 48}]
VARIANCE = [{"q_proj": 0.991, "k_proj": 0.993, "fc1": 0.9987}, {"v_proj": 0.995, "fc2": 0.9991}]
PRESET = ("thresholds: {attention: 0.99, mlp: 0.995}\nnum_samples: 4\nbatch_size: 2\n"
          "heal: {steps: 3, block_steps: 2, num_samples: 4}\n")
COMMAND = "liteasr compress --model /home/me/models/whisper-small --output /home/me/out --config /home/me/golden.yaml"
STAGES = [("encoder layer 0", 2, 0.5, 0.25), ("encoder layer 1", 2, 0.75, 0.375), ("end to end", 3, 0.0412, 0.0131)]
TEXTS = {"a": "the birch canoe slid on the smooth planks", "b": "glue the sheet to the dark blue background",
         "c": "it is easy to tell the depth of a well"}
PREDICTIONS = ["the birch canoe slid on the smooth planks", "glue the sheet to the dark blue back ground",
               "it is easy to tell the death of a well" + " well" * 26]
GROUPS = {"a": "real adult", "b": "synthetic", "c": None}
VERSIONS = {"liteasr_hf_version": "0.0.0", "transformers_version": "4.0.0", "torch_version": "2.0.0"}


class _Clock:
    """``time`` for the module under test: perf_counter reads 100 s, then 37.25 s more at every call."""

    def __init__(self):
        self.ticks = itertools.count()

    def perf_counter(self) -> float:
        return 100.0 + 37.25 * next(self.ticks)


class _FixedPeak:
    growth_mb = 56.78

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _FixedNow(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


class _TwoProcesses(Processes):
    """Rank 0 of two, whose partner had no utterances: what evaluate_utterances writes on several processes."""

    def gather(self, obj):
        return [obj, ([], [], 0.0)]


def _fake_compress(whisper, clips, feature_extractor, settings, plan=None, progress=True, processes=None):
    """compress with fixed ranks and variance and random factors: the report is compression_report's own."""
    plan = RankPlan(RANKS, VARIANCE, {"mode": "threshold", "calibration": "sequential"})
    torch.manual_seed(0)
    lite = LiteWhisperForConditionalGeneration(LiteWhisperConfig.from_whisper_config(whisper.config, RANKS)).eval()
    lite.generation_config = whisper.generation_config
    report = compression_report(whisper.config, plan, settings, [np.zeros(16000 * 20, np.float32)] * 3, 1.5)
    return CompressionResult(lite, plan, report)


def _fake_heal(student, teacher, clips, feature_extractor, settings=None, **kwargs) -> HealingReport:
    """heal's report with fixed figures; heal_checkpoint's call (no settings) as on two processes."""
    report = HealingReport(settings=dataclasses.asdict(settings or HealSettings()),
                           windows=HealingWindows(train=3, holdout=1),
                           stages=[HealingStage(stage=s, steps=n, holdout_loss_before=a, holdout_loss_after=b)
                                   for s, n, a, b in STAGES],
                           seconds=12.5, peak_memory_bytes=123456789)
    if settings is None:
        report.trained_windows_per_process, report.computed_windows_per_process = [11, 10], [4, 4]
        report.processes = 2
    return report


@pytest.fixture(scope="module")
def runs(tiny_en_dir, tmp_path_factory):
    """The deterministic runs: their written JSON by name, with the working folder as ``WORK``."""
    work = tmp_path_factory.mktemp("runs")
    whisper = WhisperConfig.from_pretrained(tiny_en_dir)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**{**whisper.to_dict(), **SMALL})).eval()
    model.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    dense = save_model_folder(model, work / "models" / "whisper-small",
                              processor=WhisperProcessor.from_pretrained(tiny_en_dir))
    (work / "golden.yaml").write_text(PRESET)
    calibration = SpeechSource(SHIPPED_SPEECH_SET, split="calibration", text_column=None)
    healing_audio = SpeechSource(SHIPPED_SPEECH_SET, split="evaluation", text_column=None)
    written = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the report's paths are relative to the working folder
        for name, value in {"compress": _fake_compress, "heal": _fake_heal, "time": _Clock(),
                            "peak_rss_mb": lambda: 1234.56, "RssPeak": _FixedPeak}.items():
            mp.setattr(checkpoint, name, value)
        healed, result = checkpoint.compress_checkpoint(
            dense, work / "lite-healed", preset=work / "golden.yaml", calibration=calibration,
            healing_audio=healing_audio, healing_holdout=healing_audio, progress=False, command=COMMAND)
        plain, _ = checkpoint.compress_checkpoint(dense, work / "lite-plain", preset=work / "golden.yaml",
                                                  calibration=calibration, healing=False, progress=False)
        later, _ = checkpoint.heal_checkpoint(plain, work / "lite-healed-later", audio=healing_audio, progress=False)
        for name, folder in (("compressed", plain), ("compressed-healed", healed), ("healed-later", later)):
            written[f"{name}.compression_report.json"] = (folder / "compression_report.json").read_text()
        written["result.report"] = result.report.to_json()

        loaded, processor, _ = load_model_and_processor(dense)
        audio = {k: np.zeros(16000 * (2 + i), np.float32) for i, k in enumerate(TEXTS)}
        utterances = [Utterance(k, audio[k], TEXTS[k], audio[k].size / 16000, index=i, group=GROUPS[k])
                      for i, k in enumerate(TEXTS)]
        failures = [LoadFailure("broken", "not audio", index=3)]
        mp.setattr(transcription, "library_versions", lambda: dict(VERSIONS))
        mp.setattr(transcription, "datetime", _FixedNow)
        for name, seconds, processes in (("one-process", 2.5, None), ("two-processes", 0.0, _TwoProcesses(0, 2))):
            mp.setattr(transcription, "transcribe", lambda model, processor, audios, seconds=seconds, **kwargs:
                       transcription.Transcription(PREDICTIONS[: len(audios)], seconds))
            summary = transcription.evaluate_utterances(
                loaded, utterances, failures, processor=processor, data="my-data", split="evaluation",
                output=work / name, progress=False, processes=processes, sharded=processes is not None)
            (file,) = (work / name).glob("*.summary.json")
            written[f"{name}.summary.json"] = file.read_text()
            written[f"{name} returned"] = summary.to_json()
    return {name: text.replace(str(dense.parent.parent), "WORK") for name, text in written.items()}


#: Settings added since the files in BEFORE were written, at their defaults (a report records every setting), each
#: with an older setting of its group, which a report records as often: once per compression or heal settings.
SETTINGS_ADDED_SINCE = {"sensitivity_windows": (0, "outlier_share"), "calibration_mix": ("speakers", "outlier_share"),
                        "layer_floor": (None, "outlier_share"), "speech_share": (None, "warmup")}


@pytest.mark.parametrize("name", sorted(p.name for p in BEFORE.glob("*.json")))
def test_runs_write_the_json_they_wrote_before(runs, name):
    text = runs[name]
    for key, (default, sibling) in SETTINGS_ADDED_SINCE.items():
        line = f'"{key}": {json.dumps(default)}'
        assert text.count(line) == text.count(f'"{sibling}": '), name
        # The line goes, and with it the comma that separates it from its neighbour.
        text = re.sub(rf",\n *{re.escape(line)}(?=\n)|\n *{re.escape(line)},(?=\n)", "", text)
    assert text == (BEFORE / name).read_text()


def test_what_a_run_returns_is_what_it_wrote(runs):
    assert runs["result.report"] == runs["compressed-healed.compression_report.json"]
    for name in ("one-process", "two-processes"):
        assert runs[f"{name} returned"] == runs[f"{name}.summary.json"]


# --- reading and writing back -------------------------------------------------------------------------------------


REPORTS = [*sorted(BEFORE.glob("*.json")), *sorted(OLD_FOLDER.rglob("compression_report.json")),
           *sorted(OLD_FOLDER.rglob("*.summary.json"))]


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_report_reads_and_writes_back_unchanged(path):
    cls = EvaluationSummary if path.name.endswith(".summary.json") else CompressionReport
    text = path.read_text()
    record = cls.from_json(text)
    assert record.to_json() == text
    assert cls.from_dict(record.to_dict()) == record


def test_unknown_keys_are_kept_where_they_were():
    report = json.loads((BEFORE / "compressed-healed.compression_report.json").read_text())
    report = {"written_by": "a later version", **report}
    report["encoder"]["params_sparse"] = 7
    report["healing"]["stages"][0]["learning_rate"] = 1e-4
    text = json.dumps(report, indent=2) + "\n"
    read = CompressionReport.from_json(text)
    assert read.extra == {"written_by": "a later version"} and read.encoder.extra == {"params_sparse": 7}
    assert read.healing.stages[0].extra == {"learning_rate": 1e-4} and read.healing.stages[0].steps == 2
    assert read.to_json() == text
    summary = json.loads((BEFORE / "one-process.summary.json").read_text()) | {"cer": 3.5}
    assert EvaluationSummary.from_dict(summary).extra == {"cer": 3.5}
    assert EvaluationSummary.from_dict(summary).to_dict() == summary


def test_missing_keys_read_as_defaults_and_required_ones_are_named():
    minimal = {"encoder": {"params_before": 10, "params_after": 8, "flops_before": 100, "flops_after": 90}}
    report = CompressionReport.from_dict(minimal)
    assert report.encoder.params_excluding_positions_before is None and report.layers == [] and report.settings == {}
    assert report.healing is None and report.calibration_data is None and report.run_seconds is None
    assert report.to_dict() == minimal
    report.command = "liteasr compress --model tiny.en"  # set after reading: written, after what was read
    assert list(report.to_dict()) == ["encoder", "command"]
    with pytest.raises(ValueError, match="EncoderSize lacks 'flops_after'"):
        CompressionReport.from_dict({"encoder": {"params_before": 10, "params_after": 8, "flops_before": 100}})
    with pytest.raises(ValueError, match="HealingReport lacks 'windows', 'stages', 'seconds'"):
        CompressionReport.from_dict({**minimal, "healing": {}})
    with pytest.raises(ValueError, match="EvaluationSummary lacks 'wer', 'encoder_params'"):
        EvaluationSummary.from_dict({"model": "m", "model_type": "whisper", "data": "d", "split": None})
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        CompressionReport.from_json("[]")


def test_a_new_report_writes_optional_parts_only_once_set():
    report = CompressionReport(encoder=EncoderSize(params_before=10, params_after=8, flops_before=100, flops_after=90))
    assert list(report.to_dict()) == ["encoder"]
    assert list(report.to_dict()["encoder"]) == ["params_before", "params_after", "flops_before", "flops_after"]
    healing = HealingReport(windows=HealingWindows(train=2, holdout=1), stages=[], seconds=1.0)
    healing.data = SpeechData(data="speech", split="training", failed=0)
    report.healing = healing  # holdout_data belongs to data: written, as null, once data is
    assert report.to_dict()["healing"] == {"windows": {"train": 2, "holdout": 1}, "stages": [], "seconds": 1.0,
                                           "data": {"data": "speech", "split": "training", "failed": 0},
                                           "holdout_data": None}


# --- a folder written by an earlier version -----------------------------------------------------------------------


@pytest.fixture
def old_folder(tiny_en_dir, tmp_path) -> Path:
    """A copy of the folder that commit e46fdcd's compress_checkpoint wrote, with the processor it saved (tiny.en's,
    left out of tests/data for its size)."""
    folder = tmp_path / "lite-whisper-micro"
    shutil.copytree(OLD_FOLDER / "lite-whisper-micro", folder)
    WhisperProcessor.from_pretrained(tiny_en_dir).save_pretrained(folder)
    shutil.copytree(OLD_FOLDER / "lite-whisper-micro-evaluation", tmp_path / "lite-whisper-micro-evaluation")
    return folder


def test_a_folder_written_before_the_layout_change_reads_stages_and_gets_a_card(old_folder, tmp_path):
    report = CompressionReport.read(old_folder / "compression_report.json")
    assert report.encoder.params_excluding_positions_before is None  # not recorded then
    assert report.healing is None and report.placement is None
    assert report.preset == "micro.yaml" and report.low_rank_config == [{"out_proj": 12, "fc1": 20, "fc2": 16},
                                                                        {"fc1": 20, "fc2": 16}]
    assert report.layers[0]["out_proj"].rank == 12 and report.layers[0]["q_proj"].rank is None
    summaries = load_summaries([tmp_path / "lite-whisper-micro-evaluation"])
    assert all(s.groups == {} and s.encoder_params_excluding_positions is None for _, s in summaries)
    assert {s.encoder_params for _, s in summaries} == {report.encoder.params_before, report.encoder.params_after}

    model, _, _ = load_model_and_processor(old_folder)
    assert model.config.low_rank_config == report.low_rank_config

    # Its code files are that release's, not ours: staged only with trust_remote_code, as any such folder.
    with pytest.warns(UserWarning, match="will run in the check and be published"):
        result = publish(old_folder, "org/lite-whisper-micro", staging_dir=tmp_path / "staged",
                         base_model="org/whisper-micro", dry_run=True, check=False, trust_remote_code=True)
    staged = result.staged
    assert result.upload is None and "compression_report.json" in staged.files
    report_file = "compression_report.json"
    assert (staged.path / report_file).read_bytes() == (old_folder / report_file).read_bytes()
    assert staged.evaluation == [file for file, _ in summaries]
    text = (staged.path / "README.md").read_text()
    check_card(text)
    # The position table (1500 x 32) is taken off the encoder counts, which then included it.
    before, after = report.encoder.params_before - 1500 * 32, report.encoder.params_after - 1500 * 32
    assert f"| {before / 1e6:.2f}M (100%; {report.encoder.params_before / 1e6:.2f}M with the position table) |" in text
    assert f"| {after / 1e6:.2f}M ({100 * after / before:.1f}%; " in text
    assert "| [org/whisper-micro](https://huggingface.co/org/whisper-micro) |" in text
    assert "| 0 | dense | dense | dense | 12 (" in text  # ranks with the variance they kept
    assert ("- Command: `python scripts/compress.py --model whisper-micro --config micro.yaml --output "
            "lite-whisper-micro` (`micro.yaml` holding the `settings` of `compression_report.json`).") in text
    check_card(build_model_card(old_folder, "org/lite-whisper-micro", summaries, base_model="org/whisper-micro"))

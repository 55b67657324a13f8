"""Compressing the real tiny.en on the shipped speech set: the saved folder, its quality, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSpeechSeq2Seq, pipeline

from liteasr_hf import LiteWhisperForConditionalGeneration
from liteasr_hf.checkpoints.placement import Placement
from liteasr_hf.compression.checkpoint import compress_checkpoint
from liteasr_hf.compression.presets import load_settings
from liteasr_hf.compression.rank_selection import RankPlan
from liteasr_hf.data.audio import SAMPLING_RATE, load_audio
from liteasr_hf.data.speech import SpeechSource
from liteasr_hf.data.suite import (DEVELOPMENT, SPEAKER_MIX_PREFIX, SPEAKER_MIX_VERSION, build_speaker_mix,
                                   speaker_mix_folder)
from liteasr_hf.evaluation.transcription import compare_models

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "data" / "speech"
CLIP = ROOT / "tests" / "data" / "sense_and_sensibility_01_austen_64kb-0870.flac"


CALIBRATION_WINDOWS = 16


@pytest.fixture(scope="module")
def compressed(tiny_en_dir, tmp_path_factory) -> tuple[Path, object]:
    output = tmp_path_factory.mktemp("compress") / "lite-tiny-en"
    # The shipped preset given as a path to its file, and the command line a user with local folders would record.
    # 16 calibration windows rather than the preset's 64: a quarter of the time, and the tests below check the
    # folder, the report and a loose quality bound, not the preset's accuracy (the evaluation on real speakers does).
    command = (f"liteasr compress --model {tiny_en_dir} --config {ROOT}/configs/tiny.yaml "
               f"--num-samples {CALIBRATION_WINDOWS} --output {output}")
    return compress_checkpoint(tiny_en_dir, output, preset=ROOT / "configs" / "tiny.yaml", progress=False,
                               num_samples=CALIBRATION_WINDOWS, command=command)


def test_folder_is_complete_and_reports_the_compression(compressed, tiny_en_dir):
    folder, result = compressed
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "normalizer.json",
            "modeling_lite_whisper.py", "configuration_lite_whisper.py", "pipeline_lite_whisper.py",
            "compression_report.json", "rank_plan.json"} <= names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    report = json.loads((folder / "compression_report.json").read_text())
    assert report["encoder"]["params_fraction"] <= load_settings("tiny").budget  # the preset's budget
    assert report["encoder"]["params_after"] < report["encoder"]["params_before"]
    config = json.loads((folder / "config.json").read_text())
    assert config["low_rank_config"] == report["low_rank_config"] == result.plan.ranks
    for layer, modules in enumerate(report["layers"]):
        for module, entry in modules.items():
            if entry["rank"] is not None:
                assert entry["params_after"] < entry["params_before"]
                assert 0 < entry["variance_kept"] <= 1, (layer, module)
    # The outlier direction of the last fc2 is kept: it is never cut to the smallest rank.
    last_fc2 = report["layers"][-1]["fc2"]["rank"]
    assert last_fc2 is None or last_fc2 > 16
    assert report["calibration"]["windows"] == CALIBRATION_WINDOWS != load_settings("tiny").num_samples
    assert report["peak_rss_mb"] > 0


def test_compressed_model_loads_with_remote_code_and_transcribes(compressed):
    folder, _ = compressed
    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder, trust_remote_code=True)
    assert isinstance(model, LiteWhisperForConditionalGeneration)
    asr = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)
    # Decoded here (soundfile): the pipeline decodes a file name with the ffmpeg program, not a Python dependency.
    audio = {"raw": load_audio(CLIP), "sampling_rate": SAMPLING_RATE}
    text = asr(audio, generate_kwargs={"num_beams": 1})["text"].lower()
    assert "dashwood" in text and "leisure to consider" in text


def test_compressed_quality_on_real_speech(compressed, tiny_en_dir, tmp_path):
    folder, _ = compressed
    torch.set_num_threads(1)  # generation's small per-step ops are slower with two threads on this machine
    original, lite = compare_models([tiny_en_dir, folder], SPEECH, split="evaluation", num_samples=24,
                                    batch_size=8, output=tmp_path, progress=False)
    assert lite.n_long_outputs == 0 and lite.wer < 100
    assert lite.wer <= original.wer + 10, (original.wer, lite.wer)


def test_plan_is_reapplied_exactly(compressed, tiny_en_dir, tmp_path):
    folder, result = compressed
    again, second = compress_checkpoint(tiny_en_dir, tmp_path / "again", preset="tiny", plan=folder / "rank_plan.json",
                                        num_samples=2, progress=False)
    assert second.plan.ranks == RankPlan.load(folder / "rank_plan.json").ranks == result.plan.ranks


def test_bad_input_gives_clear_errors_and_no_output(tiny_en_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError, match="not a local folder, a packaged checkpoint"):
        compress_checkpoint(str(tmp_path / "no-such-model"), out, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError, match="metadata.jsonl has no rows"):
        compress_checkpoint(tiny_en_dir, out, calibration=SpeechSource(empty, text_column=None), progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds: {attention: 1.5, mlp: 0.999}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: thresholds.attention = 1.5: a variance share must lie in \(0, 1\]"):
        compress_checkpoint(tiny_en_dir, out, preset=str(bad), progress=False)
    with pytest.raises(ValueError, match="cannot be met"):
        compress_checkpoint(tiny_en_dir, out, preset="tiny", budget=0.1, num_samples=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "empty"]


def test_interrupted_run_leaves_no_output_folder(tiny_en_dir, tmp_path):
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "compress.py"), "--model", str(tiny_en_dir), "--preset", "tiny",
         "--output", str(out), "--no-evaluate", "--num-samples", "4"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        # A shell that starts jobs in the background ignores SIGINT in them, and Python keeps an ignored SIGINT;
        # give the child the default disposition, as a terminal's Ctrl-C would find it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen, deadline = b"", time.monotonic() + 300
    # Interrupted in the calibration's first pass: the model is loaded and work is under way, nothing is saved yet.
    while b"Calibrating" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096)
    assert b"Calibrating" in seen, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + rest)[-2000:]
    assert b"interrupted: no output folder was written" in rest
    assert list(tmp_path.iterdir()) == []


def test_offloaded_model_compresses_exactly_like_a_resident_one(tiny_en_dir, tmp_path):
    # A CPU memory cap below the model's size makes accelerate offload every weight to disk; the encoder
    # is then loaded layer by layer as compression reaches it. The result must not depend on placement.
    resident_dir, resident = compress_checkpoint(tiny_en_dir, tmp_path / "resident", preset="tiny", num_samples=2,
                                                 progress=False)
    offload = tmp_path / "offload"
    offloaded_dir, offloaded = compress_checkpoint(
        tiny_en_dir, tmp_path / "offloaded", preset="tiny", num_samples=2, progress=False,
        placement=Placement(device_map="auto", max_memory={"cpu": 40_000_000}, offload_folder=offload),
    )
    assert offloaded.report.placement == ["disk"]  # every weight was offloaded
    assert offloaded.plan.ranks == resident.plan.ranks
    a = LiteWhisperForConditionalGeneration.from_pretrained(resident_dir).state_dict()
    b = LiteWhisperForConditionalGeneration.from_pretrained(offloaded_dir).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_the_calibration_mix_setting_picks_the_mix_calibration_reads(tiny_en_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LITEASR_CACHE", str(tmp_path / "cache"))
    # A small stand-in built where the named mix is kept (the real one takes minutes): what is read is what is named.
    folder = speaker_mix_folder("speakers-and-readers")
    assert folder.parent == tmp_path / "cache" / "speech"
    build_speaker_mix(folder, {"development": DEVELOPMENT}, augmentations=(), progress=False)
    preset = tmp_path / "mix.yaml"  # the key as a preset file gives it; one window, no sensitivity pass: quick
    preset.write_text("calibration_mix: speakers-and-readers\nthresholds: {attention: 0.9, mlp: 0.9}\nnum_samples: 1\n")
    _, result = compress_checkpoint(tiny_en_dir, tmp_path / "lite", preset=preset, progress=False)
    assert result.report.calibration_data.data == f"{SPEAKER_MIX_PREFIX}{SPEAKER_MIX_VERSION}-speakers-and-readers"
    assert not speaker_mix_folder().exists()  # the default mix was neither read nor built
    unknown = "calibration mix 'nope' is unknown; choose from speakers, speakers-and-readers"
    with pytest.raises(ValueError, match=unknown):
        speaker_mix_folder("nope")


def test_report_names_sources_without_machine_paths(compressed, tiny_en_dir):
    _, result = compressed
    report = result.report
    # Published with the model: a local folder outside the working directory is named by its last part.
    assert report.resolved_model == report.source_model == Path(tiny_en_dir).name
    # The default calibration audio: the speaker mix, built in the cache and named by its folder alone.
    assert report.calibration_data.data == f"{SPEAKER_MIX_PREFIX}{SPEAKER_MIX_VERSION}"
    assert report.preset == "tiny"  # the shipped preset, named as such
    assert report.command == (f"liteasr compress --model {Path(tiny_en_dir).name} --config tiny.yaml "
                              f"--num-samples {CALIBRATION_WINDOWS} --output lite-tiny-en")


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="gpu0"), r"Placement.device = 'gpu0': not a torch device"),
    (dict(dtype="float8"), r"Placement.dtype = 'float8': choose one of float32, float16, bfloat16"),
    (dict(dtype=torch.int8), r"Placement.dtype = torch.int8"),
    (dict(max_memory={"cpu": "1GiB"}), r"Placement.max_memory is set but device_map is not"),
    (dict(offload_folder="/tmp/x"), r"Placement.offload_folder is set but device_map is not"),
    (dict(device_map=3), r"Placement.device_map = 3"),
    (dict(device_map="auto", max_memory="1GiB"), r"Placement.max_memory = '1GiB': give device -> amount"),
])
def test_placement_names_the_bad_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Placement(**kwargs)


def test_placement_takes_dtype_names_and_keeps_offloading_in_a_temporary_folder():
    assert Placement(dtype="bfloat16").dtype is torch.bfloat16
    with Placement().loading_kwargs() as kwargs:
        assert kwargs == {}
    with Placement(device_map="auto").loading_kwargs() as kwargs:
        folder = Path(kwargs["offload_folder"])
        assert kwargs["device_map"] == "auto" and folder.is_dir()
    assert not folder.exists()  # removed with the block


@pytest.mark.parametrize("kwargs, message", [
    (dict(data=""), r"SpeechSource.data = '': give a local folder or file, or a datasets name"),
    (dict(data=3), r"SpeechSource.data = 3"),
    (dict(split=""), r"SpeechSource.split = ''"),
    (dict(text_column=7), r"SpeechSource.text_column = 7"),
    (dict(audio_column=None), r"SpeechSource.audio_column = None"),
])
def test_speech_source_names_the_bad_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeechSource(**kwargs)


def test_script_reports_a_bad_placement_without_writing(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "compress.py"), "--model", "tiny.en",
                          "--max-memory", "cpu=1GiB", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "error: Placement.max_memory is set but device_map is not" in run.stderr
    assert not out.exists()

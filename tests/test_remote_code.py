"""No one else's code runs unless the user says so: the scripts load LiteWhisper folders with our classes and run
a model's own code files only with --trust-remote-code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.checkpoints.saving import save_model_folder

ROOT = Path(__file__).resolve().parents[1]
MARKER_CODE = textwrap.dedent(
    """
    from pathlib import Path
    Path({marker!r}).write_text("imported")  # what a malicious repo's code could do instead
    """
)


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def lite_folder_with_planted_code(tiny_en_dir, tmp_path_factory) -> tuple[Path, Path]:
    """tiny.en as a LiteWhisper folder whose code files would leave a marker file when imported."""
    root = tmp_path_factory.mktemp("planted")
    whisper = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir)
    lite = LiteWhisperForConditionalGeneration.from_pretrained(
        tiny_en_dir, config=LiteWhisperConfig.from_whisper_config(whisper.config, []))
    lite.generation_config = whisper.generation_config
    folder = save_model_folder(lite, root / "lite", processor=WhisperProcessor.from_pretrained(tiny_en_dir))
    marker = root / "marker"
    for name in ("configuration_lite_whisper.py", "modeling_lite_whisper.py"):
        (folder / name).write_text(MARKER_CODE.format(marker=str(marker)) + (folder / name).read_text())
    return folder, marker


@pytest.fixture()
def foreign_folder(tmp_path) -> tuple[Path, Path]:
    """A folder of an unknown model type whose auto_map points at a code file that leaves a marker."""
    folder = tmp_path / "foreign"
    folder.mkdir()
    marker = tmp_path / "marker"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "planted-asr", "architectures": ["PlantedModel"],
        "auto_map": {"AutoConfig": "configuration_planted.PlantedConfig",
                     "AutoModelForSpeechSeq2Seq": "configuration_planted.PlantedModel"},
    }))
    (folder / "configuration_planted.py").write_text(MARKER_CODE.format(marker=str(marker)) + textwrap.dedent(
        """
        from transformers import PretrainedConfig
        class PlantedConfig(PretrainedConfig):
            model_type = "planted-asr"
        class PlantedModel:
            pass
        """))
    return folder, marker


def test_lite_whisper_folder_loads_with_our_classes_in_the_scripts(lite_folder_with_planted_code, tmp_path):
    folder, marker = lite_folder_with_planted_code
    evaluate = run_script("evaluate.py", "--model", str(folder), "--num-samples", "2", "--output", str(tmp_path),
                          cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert json.loads(evaluate.stdout)["n_scored"] == 2
    bench = run_script("benchmark.py", "--models", str(folder), "--batch-sizes", "1", "--repeats", "1",
                       "--e2e-clips", "0", "--no-memory", "--output", str(tmp_path / "bench.json"), cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert not marker.exists()  # the folder's own code never ran


def test_foreign_code_runs_only_with_trust_remote_code(foreign_folder, tmp_path):
    folder, marker = foreign_folder
    for script, args in (("evaluate.py", ["--model", str(folder), "--num-samples", "1", "--output", str(tmp_path)]),
                         ("benchmark.py", ["--models", str(folder), "--e2e-clips", "0", "--output",
                                           str(tmp_path / "bench.json")])):
        refused = run_script(script, *args, cwd=tmp_path)
        assert refused.returncode == 2 and "--trust-remote-code" in refused.stderr, refused.stderr[-2000:]
        assert not marker.exists(), script
    # The user's explicit choice runs the code (and this test would notice if the flag did nothing).
    trusted = run_script("benchmark.py", "--models", str(folder), "--e2e-clips", "0", "--trust-remote-code",
                         "--output", str(tmp_path / "bench.json"), cwd=tmp_path)
    assert trusted.returncode != 0 and marker.read_text() == "imported"
    shutil.rmtree(folder)

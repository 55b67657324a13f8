"""The fault suite, bad input: damaged or foreign model folders and out-of-range flags.

Each case builds the bad input on disk (tiny random models, no mocks) and asserts that the scripts exit with code 2
and one line on stderr that names the problem and the fix, with no traceback and no output written, and that the
library (:func:`load_model_and_processor`, :func:`export_onnx`, :func:`load_settings`) raises the same message.
Every launch of a script imports torch and transformers (seconds), so the cases run the commands' main in this
process, and one case runs as a process.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, WhisperConfig, WhisperForConditionalGeneration

from liteasr_hf.checkpoints.loading import load_model_and_processor
from liteasr_hf.compression.presets import load_settings
from liteasr_hf.integrations.onnx.export import export_onnx

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=128, num_mel_bins=80, max_source_positions=1500,
            max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)
NOT_LOCAL = "not a local folder"  # the Hub-id message, which must never describe an existing folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """One tiny model folder per kind of damage, each a copy of a good random Whisper but for that damage."""
    root = tmp_path_factory.mktemp("bad-models")
    torch.manual_seed(0)
    whisper = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    good = root / "whisper"
    whisper.save_pretrained(good)
    whisper.save_pretrained(root / "sharded", max_shard_size="300KB")

    def copy(name: str, source: Path = good) -> Path:
        return Path(shutil.copytree(source, root / name))

    config = copy("bad-config") / "config.json"  # cut short, as by an interrupted copy
    config.write_text(config.read_text()[: len(config.read_text()) // 2])
    weights = copy("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    index = copy("bad-index", root / "sharded") / "model.safetensors.index.json"
    index.write_text(index.read_text()[:-10])
    missing = copy("missing-shard", root / "sharded")
    shards = sorted(missing.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    pickle = copy("pickle")
    (pickle / "model.safetensors").unlink()
    torch.save(whisper.state_dict(), pickle / "pytorch_model.bin")  # what old Hub repos hold
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100)).save_pretrained(root / "bert")
    return {path.name: path for path in root.iterdir()}


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


# --- the scripts -----------------------------------------------------------------------------------------------------

# case: (script, model folder, extra arguments, first line of stderr as a regex; {folder} is the folder, escaped)
SCRIPT_CASES = {
    "config-not-json": ("compress.py", "bad-config", [],
                        r"error: {folder}/config\.json is not valid JSON \(line \d+ column \d+\): .*save"),
    "onnx-config-not-json": ("export_onnx.py", "bad-config", [],
                             r"error: {folder}/config\.json is not valid JSON \(line \d+ column \d+\): "),
    "not-whisper": ("compress.py", "bert", [], r"error: {folder} is not a Whisper model \(model_type 'bert'\)"),
    "pickle-only": ("compress.py", "pickle", [],
                    r"error: {folder} holds only pytorch_model\.bin \(a pickle\), which liteasr-hf does not load "
                    r"for safety; convert it to safetensors"),
    "budget": ("compress.py", "whisper", ["--preset", "tiny", "--budget", "1.5"],
               r"error: --budget must be in \(0, 1\]; got 1\.5"),
}


COMMANDS = {"compress.py": "compress", "export_onnx.py": "export-onnx"}


def run_case(case: str, folders: dict[str, Path], parent: Path) -> list[str]:
    """The command line of a case of :data:`SCRIPT_CASES` (after ``liteasr``), its --output inside ``parent``."""
    script, folder, extra, _ = SCRIPT_CASES[case]
    extra = extra + (["--no-evaluate"] if script == "compress.py" else [])
    return [COMMANDS[script], "--model", str(folders[folder]), "--output", str(parent / "out"), *extra]


@pytest.mark.parametrize("case", SCRIPT_CASES)
def test_script_names_the_problem_in_one_line_and_writes_nothing(case, folders, tmp_path, capfd):
    # In this process (each launch of a script imports torch and transformers, seconds): the command's own main,
    # its exit status, and everything written to the file descriptors, transformers' log handlers included.
    from liteasr_hf.cli import main

    expected = SCRIPT_CASES[case][3]
    folder = folders[SCRIPT_CASES[case][1]]
    code = main(run_case(case, folders, tmp_path))
    out, err = capfd.readouterr()
    assert code == 2, err[-3000:]
    assert re.match(expected.format(folder=re.escape(str(folder))), first_line(err)), err[-3000:]
    # One line: no traceback, no progress bar of a model that was loaded before the error, no Hub-id guess.
    assert len(err.strip().splitlines()) == 1, err[-3000:]
    assert "Traceback" not in err and NOT_LOCAL not in err
    assert list(tmp_path.iterdir()) == []  # no output folder, no hidden .partial one beside it


def test_a_script_exits_with_the_status_and_line_of_its_main(folders, tmp_path):
    # The same as a process, once: scripts/compress.py exits with main's status and prints only the one line.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = run_case("config-not-json", folders, tmp_path)
    result = subprocess.run([sys.executable, "scripts/compress.py", *command[1:]], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert first_line(result.stderr).startswith(f"error: {folders['bad-config']}/config.json is not valid JSON")
    assert len(result.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def load_compress_script():
    spec = importlib.util.spec_from_file_location("compress_script", ROOT / "scripts" / "compress.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("flags, expected", [
    (["--num-samples", "0"], "error: --num-samples must be a positive number of calibration windows; got 0"),
    (["--preset", "no-such-preset"], "error: Unknown preset 'no-such-preset'. Available in "),
    (["--budget", "0"], "error: --budget must be in (0, 1]; got 0.0"),
    (["--preset", "base-fast", "--layer-floor", "1.5"],
     "error: override layer_floor = 1.5: give the share of each layer to keep at least, in (0, 1)"),
    (["--heal-holdout-split", "development"], "error: --heal-holdout-split names a split of --heal-holdout: give"),
    (["--no-heal", "--heal-holdout", "data"], "error: --heal-data and --heal-holdout are healing's audio, but --no-heal"),
    (["--calibration", "data", "--calibration-mix", "speakers-and-readers"],
     "error: --calibration-mix names the shipped mix to calibrate on, but --calibration or --real-speech gives"),
], ids=["num-samples", "preset", "budget-zero", "layer-floor", "holdout-split-alone", "holdout-without-healing",
        "mix-and-audio"])
def test_compress_checks_its_flags_before_looking_at_the_model(flags, expected, capsys, tmp_path):
    # The model does not exist: an error about the flag shows that it was checked first.
    code = load_compress_script().main(["--model", str(tmp_path / "no-such-model"), "--output",
                                        str(tmp_path / "out"), "--no-evaluate", *flags])
    err = capsys.readouterr().err
    assert code == 2 and first_line(err).startswith(expected), err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_heal_refuses_a_holdout_split_without_its_holdout_before_looking_at_the_model(capsys, tmp_path):
    from liteasr_hf.cli.heal import main as heal_main

    code = heal_main(["--model", str(tmp_path / "no-such-model"), "--output", str(tmp_path / "out"),
                      "--holdout-split", "development"])
    err = capsys.readouterr().err
    assert code == 2 and first_line(err) == ("error: --holdout-split names a split of --holdout-data: give "
                                             "--holdout-data too."), err
    assert list(tmp_path.iterdir()) == []


# --- the library -----------------------------------------------------------------------------------------------------

# folder: (exception, message as a regex; {folder} is the folder, escaped)
LIBRARY_CASES = {
    "bad-config": (ValueError, r"{folder}/config\.json is not valid JSON \(line \d+ column \d+\): "),
    "bad-index": (ValueError, r"{folder}/model\.safetensors\.index\.json is not valid JSON \(line \d+ column \d+\)"),
    "missing-shard": (OSError, r"{folder} lacks model-\d+-of-\d+\.safetensors, which model\.safetensors\.index\.json "
                               r"lists: .*copy"),
    "truncated": (OSError, r"The weights of {folder} are truncated or corrupt .*Download or copy them again"),
    "bert": (ValueError, r"{folder} is not a Whisper model \(model_type 'bert'\)"),
    "pickle": (OSError, r"{folder} holds only pytorch_model\.bin \(a pickle\)"),
}


@pytest.mark.parametrize("folder", LIBRARY_CASES)
def test_loading_a_damaged_folder_says_what_is_wrong_with_it(folder, folders):
    error, expected = LIBRARY_CASES[folder]
    with pytest.raises(error) as raised:
        load_model_and_processor(folders[folder])
    message = str(raised.value)
    assert re.match(expected.format(folder=re.escape(str(folders[folder]))), message), message
    assert NOT_LOCAL not in message


def test_export_onnx_names_the_config_that_is_not_json(folders, tmp_path):
    with pytest.raises(ValueError, match=rf"^{re.escape(str(folders['bad-config']))}/config\.json is not valid JSON"):
        export_onnx(folders["bad-config"], tmp_path / "onnx", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_override_is_blamed_on_the_override_not_the_preset_file():
    with pytest.raises(ValueError) as raised:
        load_settings("tiny", budget=1.5)
    message = str(raised.value)
    assert message.startswith("override budget = 1.5: ") and "tiny.yaml" not in message, message

"""The fault suite, part one: whose code runs, which folders may be replaced, and what an interrupted write leaves.

Each case asserts the exit code, the first line of the message, and that nothing was written, lost or executed
(marker files, digests of the folders involved). Interruptions are injected at named steps of a save
(``LITEASR_KILL_AT``: the process SIGKILLs itself there), not by timing. Bad input to the scripts is in
``test_faults_input.py``, degenerate audio in the pipeline in ``test_faults_pipeline.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tempfile
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
from liteasr_hf.atomic import KILL_AT_ENV, NO_EXCHANGE_ENV, atomic_directory, clean_leftovers, old_name
from liteasr_hf.checkpoints.saving import save_model_folder
from liteasr_hf.compression.compressor import compression_report
from liteasr_hf.compression.presets import load_settings
from liteasr_hf.compression.rank_selection import RankPlan
from liteasr_hf.hub import stage_folder
from liteasr_hf.hub.staging import STAGING_MARKER

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import compress as compress_script
import upload as upload_script

SMALL = {"d_model": 64, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
RANKS = [{"q_proj": 16, "fc1": 32}]


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by content: to show a folder was left as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Hidden entries (temporary folders of a save) in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def run(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


@pytest.fixture(scope="module")
def lite_model(tiny_en_dir, tmp_path_factory) -> Path:
    """A small random LiteWhisper saved as scripts/compress.py saves it (report included), tiny.en's processor."""
    whisper = WhisperConfig.from_pretrained(tiny_en_dir)
    config = LiteWhisperConfig.from_whisper_config(WhisperConfig(**{**whisper.to_dict(), **SMALL}), RANKS)
    torch.manual_seed(0)
    model = LiteWhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    plan = RankPlan(RANKS, [{"q_proj": 0.99, "fc1": 0.99}], {"mode": "threshold", "calibration": "sequential"})
    report = compression_report(config, plan, load_settings("tiny"), [np.zeros(16000, np.float32)], 1.0)
    report.source_model, report.device, report.dtype, report.total_seconds = "tiny.en", "cpu", "float32", 1.0
    return save_model_folder(model, tmp_path_factory.mktemp("models") / "lite-whisper-small",
                             processor=WhisperProcessor.from_pretrained(tiny_en_dir),
                             extra_files={"compression_report.json": report.to_json()})


@pytest.fixture
def copy_of(tmp_path):
    def make(folder: Path, name: str = "model") -> Path:
        target = tmp_path / name
        subprocess.run(["cp", "-a", str(folder), str(target)], check=True)
        return target
    return make


# --- 1. upload.py runs no code of the folder's own ------------------------------------------------------------------

PLANTED = textwrap.dedent(
    """
    import pathlib as _pathlib
    _pathlib.Path({marker!r}).write_text("the folder's code ran")
    """
)


def plant_code(folder: Path, marker: Path) -> None:
    """Append code that writes ``marker`` when imported to the folder's modeling file."""
    modeling = folder / "modeling_lite_whisper.py"
    modeling.write_text(modeling.read_text() + PLANTED.format(marker=str(marker)))


def test_upload_refuses_a_folder_whose_code_differs_from_ours(lite_model, copy_of, tmp_path, capsys):
    model, marker = copy_of(lite_model), tmp_path / "ran.txt"
    plant_code(model, marker)
    before = digest(model)
    code = upload_script.main(["--model", str(model), "--repo-id", "org/m", "--dry-run", "--no-evaluation",
                               "--staging-dir", str(tmp_path / "staged")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert first_line(err).startswith(
        f"error: The code file(s) modeling_lite_whisper.py in {model} differ from this liteasr_hf's")
    assert "--trust-remote-code" in err
    assert not marker.exists() and not (tmp_path / "staged").exists() and digest(model) == before


def test_upload_with_trust_remote_code_runs_and_stages_the_folders_code_and_says_so(lite_model, copy_of, tmp_path,
                                                                                     capfd):
    model, marker = copy_of(lite_model), tmp_path / "ran.txt"
    plant_code(model, marker)
    with pytest.warns(UserWarning, match="will run in the check and be published"):  # a process prints it
        code = upload_script.main(["--model", str(model), "--repo-id", "org/m", "--dry-run", "--no-evaluation",
                                   "--staging-dir", str(tmp_path / "staged"), "--trust-remote-code"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "Note: the folder's own code file(s) modeling_lite_whisper.py (not liteasr_hf's)" in out
    assert marker.read_text() == "the folder's code ran"  # in the clean-process check, as the user allowed
    staged = (tmp_path / "staged" / "modeling_lite_whisper.py").read_text()
    assert staged == (model / "modeling_lite_whisper.py").read_text()


def test_staging_publishes_our_code_files(lite_model, tmp_path):
    staged = stage_folder(lite_model, "org/m", tmp_path / "staged", evaluation=[])
    ours = ROOT / "liteasr_hf" / "models" / "lite_whisper"
    code = sorted(name for name in staged.files if name.endswith(".py"))
    assert code == sorted(["configuration_lite_whisper.py", "modeling_lite_whisper.py", "pipeline_lite_whisper.py",
                           "rank_attention_triton.py"])
    for name in code:
        assert (staged.path / name).read_bytes() == (ours / name).read_bytes(), name
    assert STAGING_MARKER not in staged.files and (staged.path / STAGING_MARKER).is_file()


# --- 2. a staging folder replaces only what staging wrote -----------------------------------------------------------

def test_staging_dir_that_staging_did_not_write_is_left_alone(lite_model, copy_of, tmp_path, capsys):
    repo = copy_of(lite_model, "downloaded-repo")  # a Hub download has README.md and a lite-whisper config.json
    (repo / "README.md").write_text("# my notes\n")
    (repo / "notes.txt").write_text("mine")
    before = digest(repo)
    code = upload_script.main(["--model", str(lite_model), "--repo-id", "org/m", "--dry-run", "--no-evaluation",
                               "--skip-check", "--staging-dir", str(repo)])
    assert code == 2
    assert first_line(capsys.readouterr().err) == (f"error: {repo} exists and was not written by staging (no {STAGING_MARKER} "
                                         "in it); it is left as it is. Choose another --staging-dir, or move that "
                                         "folder away.")
    assert digest(repo) == before and leftovers(tmp_path) == []


def test_a_staging_folder_is_replaced_by_the_next_staging(lite_model, tmp_path):
    first = stage_folder(lite_model, "org/m", tmp_path / "staged", evaluation=[])
    (first.path / "stale.txt").write_text("from an earlier run")
    second = stage_folder(lite_model, "org/m", tmp_path / "staged", evaluation=[])
    assert not (second.path / "stale.txt").exists() and set(second.files) == set(first.files)


# --- 3. an output that is the model's own folder ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["same", "symlink", "parent"])
def test_compress_refuses_to_write_over_its_own_model(lite_model, copy_of, tmp_path, capsys, how):
    model = copy_of(lite_model)
    output = {"same": model, "symlink": tmp_path / "link", "parent": tmp_path}[how]
    if how == "symlink":
        output.symlink_to(model)
    before = digest(model)
    code = compress_script.main(["--model", str(model), "--output", str(output), "--overwrite", "--no-evaluate"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert first_line(err).startswith(f"error: The output {output.resolve()} is the model's own folder "
                                      f"{model.resolve()}")
    assert digest(model) == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_and_heal_refuse_to_write_over_their_source(lite_model, copy_of):
    from liteasr_hf.compression.checkpoint import heal_checkpoint
    from liteasr_hf.integrations.onnx.export import export_onnx

    model = copy_of(lite_model)
    for call in (lambda: export_onnx(model, model, overwrite=True),
                 lambda: heal_checkpoint(model, model / "healed", overwrite=True)):
        with pytest.raises(ValueError, match="would (replace|change) the source"):
            call()
    assert not (model / "healed").exists()


# --- 4 and 5. interrupted saves ---------------------------------------------------------------------------------------

#: A folder of three files written with atomic_directory(overwrite=True), by liteasr_hf/atomic.py loaded on its own
#: (it needs the standard library only): every save of the project goes through it.
SAVE = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
    atomic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(atomic)
    with atomic.atomic_directory(sys.argv[2], overwrite=True) as tmp:
        for i in range(3):
            (tmp / f"part{i}.bin").write_bytes(sys.argv[3].encode() * 1000)
    print("saved")
    """
)


def save(target: Path, seed: str, kill_at: str | None = None, exchange: bool = True) -> subprocess.CompletedProcess:
    env = {KILL_AT_ENV: kill_at or "", NO_EXCHANGE_ENV: "" if exchange else "1"}
    return run(["-c", SAVE, str(ROOT / "liteasr_hf" / "atomic.py"), str(target), seed], env=env)


def content(seed: str) -> dict[str, str]:
    return {f"part{i}.bin": hashlib.sha256(seed.encode() * 1000).hexdigest() for i in range(3)}


def test_a_model_save_killed_before_the_rename_leaves_no_output_and_the_next_save_cleans_up(tmp_path):
    script = textwrap.dedent(
        """
        import sys, torch
        from transformers import WhisperConfig
        from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration
        from liteasr_hf.checkpoints.saving import save_model_folder
        config = LiteWhisperConfig.from_whisper_config(WhisperConfig(
            d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=100, max_source_positions=50,
            max_target_positions=20, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3),
            [{"fc1": 8}])
        save_model_folder(LiteWhisperForConditionalGeneration(config), sys.argv[1])
        print("saved")
        """
    )
    target = tmp_path / "model"
    killed = run(["-c", script, str(target)], env={KILL_AT_ENV: "written"})
    assert killed.returncode == -signal.SIGKILL and "saved" not in killed.stdout
    assert not target.exists()
    [partial] = leftovers(tmp_path)
    assert partial.startswith(".model.") and partial.endswith(".partial")
    assert (tmp_path / partial / "model.safetensors").is_file()  # the whole model was written, then the kill
    config = LiteWhisperConfig.from_pretrained(tmp_path / partial)
    with pytest.warns(UserWarning, match=f"removed {tmp_path / partial}, left by an interrupted run"):
        save_model_folder(LiteWhisperForConditionalGeneration(config), target)
    assert (target / "model.safetensors").is_file() and leftovers(tmp_path) == []


@pytest.mark.parametrize("kill_at, exchange", [("written", True), ("exchanged", True), ("written", False),
                                               ("moved-aside", False)])
def test_overwrite_killed_at_any_step_never_loses_the_folder(tmp_path, kill_at, exchange):
    target = tmp_path / "model"
    assert save(target, "old").returncode == 0 and digest(target) == content("old")
    killed = save(target, "new", kill_at=kill_at, exchange=exchange)
    assert killed.returncode == -signal.SIGKILL and "saved" not in killed.stdout
    if kill_at == "moved-aside":  # the one moment the fallback has no folder at the output: recovered next time
        assert not target.exists() and old_name(target).is_dir()
        with pytest.warns(UserWarning, match="restored .* from .model.old: an earlier run was interrupted"):
            clean_leftovers(target)
    # Before the exchange the old folder is in place; after it, the new one: never half of either.
    assert digest(target) == content("new" if kill_at == "exchanged" else "old")
    again = save(target, "new", exchange=exchange)
    assert again.returncode == 0 and (kill_at == "moved-aside" or "left by an interrupted run" in again.stderr)
    assert digest(target) == content("new") and leftovers(tmp_path) == []


def test_sigterm_during_a_save_removes_the_temporary_folder(tmp_path):
    script = textwrap.dedent(
        """
        import importlib.util, os, signal, sys
        spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
        atomic = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(atomic)
        with atomic.atomic_directory(sys.argv[2]) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGTERM)
            (tmp / "never.txt").write_text("not reached")
        """
    )
    result = run(["-c", script, str(ROOT / "liteasr_hf" / "atomic.py"), str(tmp_path / "out")])
    assert result.returncode == 143, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_running_writers_temporary_folder_is_left_alone(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:  # this process is alive: its folder is not stale
        assert clean_leftovers(target) == [] and tmp.is_dir()
    assert target.is_dir() and leftovers(tmp_path) == []


def test_onnx_export_keeps_its_intermediate_graphs_beside_the_output(lite_model, tmp_path):
    """A killed export leaves its graphs (GBs for large models) in the output's hidden folder, where the next
    export removes them, and nothing in the system's temporary folder."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    script = ("import sys; from liteasr_hf.integrations.onnx.export import export_onnx; "
              "export_onnx(sys.argv[1], sys.argv[2], progress=False)")
    killed = run(["-c", script, str(lite_model), str(tmp_path / "onnx")],
                 env={KILL_AT_ENV: "onnx-graphs-exported", "TMPDIR": str(system_tmp)})
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "onnx").exists()
    assert [p for p in system_tmp.rglob("*") if p.suffix in (".onnx", ".onnx_data", ".data")] == []
    [partial] = [name for name in leftovers(tmp_path) if name.endswith(".partial")]
    with pytest.warns(UserWarning, match="left by an interrupted run"):
        clean_leftovers(tmp_path / "onnx")
    assert not (tmp_path / partial).exists()


def test_files_written_atomically_get_the_usual_permissions(tmp_path):
    from liteasr_hf.atomic import atomic_write_text

    atomic_write_text(tmp_path / "report.md", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_offload_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path, monkeypatch):
    """Disk offload (--device-map) works in the system's temporary folder: a SIGKILL leaves it, the next run
    removes it (and leaves a running process's alone)."""
    from liteasr_hf.checkpoints.placement import Placement

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"liteasr-offload-{gone.stdout.strip()}-abc123"
    (stale / "weights").mkdir(parents=True)
    running = tmp_path / f"liteasr-offload-{os.getppid()}-def456"
    running.mkdir()
    with pytest.warns(UserWarning, match=f"removed {stale}, left by an interrupted run"):
        with Placement(device_map="cpu").loading_kwargs() as kwargs:
            folder = Path(kwargs["offload_folder"])
            assert folder.parent == tmp_path and folder.name.startswith(f"liteasr-offload-{os.getpid()}-")
    assert not stale.exists() and running.is_dir() and not folder.exists()

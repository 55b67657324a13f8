"""Compression and evaluation on two gloo processes (torchrun, accelerate launch) against one process, on the real
tiny.en and the shipped speech set: the same model and transcripts, each process doing only its share, and a
failure on one process stopping the run with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from liteasr_hf.compression.checkpoint import compress_checkpoint
from liteasr_hf.compression.report import CompressionReport
from liteasr_hf.data.speech import load_speech
from liteasr_hf.evaluation.summary import EvaluationSummary
from liteasr_hf.evaluation.transcription import evaluate_model
from liteasr_hf.parallel import Processes, launched, process_group

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "data" / "speech"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch(launcher: list[str], script: str | Path, *args: str | Path | int,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``script`` on two processes; the launchers give each one thread (OMP_NUM_THREADS=1)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)  # torchrun sets 1 per process when it is unset
    return subprocess.run([*launcher, str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)



def test_one_process_without_a_launcher_initializes_nothing(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_CPU", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    with process_group("cpu") as processes:
        assert processes == Processes() and not processes.distributed and processes.is_main
        assert not torch.distributed.is_initialized()
        assert processes.gather("x") == ["x"] and processes.device("cuda") == "cuda"
        assert processes.gather((1, "a", [2.5, None])) == [[1, "a", [2.5, None]]]  # JSON, as between processes
        with pytest.raises(TypeError, match="not JSON serializable"):
            processes.gather(object())  # what could only travel as a pickle does not travel


def test_shards_cover_every_item_once_with_sizes_one_apart():
    for n in (2, 5, 16, 17):
        for world in (1, 2, 3, 8):
            if n < world:
                continue
            shards = [Processes(rank, world).shard(n) for rank in range(world)]
            assert [i for shard in shards for i in shard] == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_accelerate_cpu_launch_that_runs_one_process_is_refused_with_the_command_that_works(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ValueError, match=r"accelerate launch --cpu` started this script once.*--multi_gpu --num_proc"):
        launched()


def test_two_processes_compress_exactly_like_one(tiny_en_dir, tmp_path, one_thread):
    # 2 windows: one batch of 2 on one process, a batch of 1 on each of two. Each window's sums are formed on their
    # own and the sums are added exactly, so batching and sharding leave no trace in the model.
    single, result = compress_checkpoint(tiny_en_dir, tmp_path / "one", preset="tiny", num_samples=2, progress=False)
    two = tmp_path / "out" / "two"
    run = launch(TORCHRUN, ROOT / "scripts" / "compress.py", "--model", tiny_en_dir, "--preset", "tiny",
                 "--num-samples", 2, "--no-evaluate", "--output", two)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("Wrote ") == 1  # the main process alone reports (and writes)
    assert [p.name for p in two.parent.iterdir()] == ["two"]  # no temporary folder left behind
    report = json.loads((two / "compression_report.json").read_text())
    assert report["calibration"]["windows"] == 2 and report["calibration"]["windows_per_process"] == [1, 1]
    # The eigendecompositions are split, widest first, and sent across: the dense pass's 24 (ranks from the budget)
    # 12 and 12 with two fc1 each; each layer's 6 after it, fc1's (4x wider, 64x the work) against the other five.
    assert report["calibration"]["eigendecompositions_per_process"] == [12 + 4 * 1, 12 + 4 * 5]
    assert report["low_rank_config"] == result.plan.ranks
    a, b = load_file(single / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    factors = [key for key in a if key.endswith(("weight1", "weight2"))]
    assert len(factors) > 10
    for key, tensor in a.items():
        difference = (b[key] - tensor).abs().max() / tensor.abs().max().clamp_min(1e-30)
        assert difference < 1e-6, (key, difference.item())


def speech_with_a_broken_file(folder: Path, n: int = 7, broken: int = 3) -> Path:
    """The first ``n`` utterances of the shipped evaluation split, as an audiofolder whose row ``broken`` is a file
    that is not audio (a LoadFailure)."""
    folder.mkdir()
    rows = [json.loads(line) for line in (SPEECH / "evaluation" / "metadata.jsonl").read_text().splitlines()[:n]]
    for i, row in enumerate(rows):
        target = folder / row["file_name"]
        if i == broken:
            target.write_bytes(b"not audio at all")
        else:
            target.symlink_to(SPEECH / "evaluation" / row["file_name"])
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_two_processes_evaluate_like_one(tiny_en_dir, tmp_path, one_thread):
    # accelerate launch this time (the CPU command the README gives). Each process decodes only its rows (0, 2, 4, 6 and
    # 1, 3, 5; row 3 is not audio), and the records, failures and WER come out as one process's.
    data = speech_with_a_broken_file(tmp_path / "speech")
    one = evaluate_model(tiny_en_dir, data, batch_size=4, output=tmp_path / "one", progress=False)
    assert one.n_failed == 1 and one.n_utterances == 6
    run = launch(ACCELERATE, ROOT / "scripts" / "evaluate.py", "--model", tiny_en_dir, "--data", data,
                 "--batch-size", 4, "--device", "cpu", "--output", tmp_path / "two")
    assert run.returncode == 0, run.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "one").iterdir()) and len(files) == 2
    summary = EvaluationSummary.read(next((tmp_path / "two").glob("*.summary.json")))
    assert summary.processes == 2 and summary.utterances_per_process == [4, 2]
    assert summary.failed == one.failed
    assert (summary.wer, summary.errors, summary.reference_words) == (one.wer, one.errors, one.reference_words)
    records = [[json.loads(line) for line in (tmp_path / side).glob("*.jsonl").__next__().read_text().splitlines()]
               for side in ("one", "two")]
    assert [(r["id"], r["prediction"]) for r in records[1]] == [(r["id"], r["prediction"]) for r in records[0]]


def test_a_share_of_the_rows_decodes_only_those(tmp_path):
    data = speech_with_a_broken_file(tmp_path / "speech")
    whole, whole_failed = load_speech(data)
    shares = [load_speech(data, share=(k, 3)) for k in range(3)]
    assert [[u.index for u in utterances] for utterances, _ in shares] == [[0, 6], [1, 4], [2, 5]]
    assert [f.index for _, failures in shares for f in failures] == [3] == [f.index for f in whole_failed]
    merged = sorted((u for utterances, _ in shares for u in utterances), key=lambda u: u.index)
    assert [(u.id, u.audio.size) for u in merged] == [(u.id, u.audio.size) for u in whole]
    with pytest.raises(ValueError, match=r"share = \(3, 3\): give \(k, n\) with 0 <= k < n"):
        load_speech(data, share=(3, 3))


def test_two_processes_heal_like_one(tiny_en_dir, tmp_path, one_thread):
    # Batches of 2 windows: one process takes both, two processes one each and add up their gradients. The same
    # factors up to the order of the sums (and what Adam makes of that in 2 + 2 steps).
    from liteasr_hf.compression.checkpoint import heal_checkpoint
    from liteasr_hf.compression.healing import HealSettings
    from liteasr_hf.data.speech import SpeechSource

    from liteasr_hf.compression.checkpoint import SYNTHETIC_CALIBRATION

    # Calibrated on the synthetic split as the healing audio is; a lr of 1e-4 over 2 steps stays stable there (1e-3
    # diverges on the tiny preset's sensitivity-weighted ranks).
    lite, _ = compress_checkpoint(tiny_en_dir, tmp_path / "lite", preset="tiny", num_samples=2, progress=False,
                                  healing=False, calibration=SYNTHETIC_CALIBRATION)
    quick = dict(block_steps=2, steps=2, batch_size=2, num_samples=6, holdout=0.34, lr=1e-4)
    audio = SpeechSource(SPEECH, split="calibration", text_column=None)
    one, report = heal_checkpoint(lite, tmp_path / "one", teacher=tiny_en_dir, audio=audio,
                                  settings=HealSettings(**quick), progress=False)
    two = tmp_path / "out" / "two"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in quick.items()]
    run = launch(TORCHRUN, ROOT / "scripts" / "heal.py", "--model", lite, "--teacher", tiny_en_dir, "--data", SPEECH,
                 "--split", "calibration", *flags, "--output", two)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("Wrote ") == 1 and [p.name for p in two.parent.iterdir()] == ["two"]
    healed = CompressionReport.read(two / "compression_report.json").healing
    assert [s.steps for s in healed.stages] == [s.steps for s in report.stages]
    # Every batch was split: each process trained on one window of each, and computed half the hidden states.
    trained = sum(s.steps for s in report.stages) * 2
    assert healed.processes == 2 and healed.trained_windows_per_process == [trained // 2, trained // 2]
    low, high = sorted(healed.computed_windows_per_process)
    assert high - low <= len(report.stages)  # shards of odd sizes differ by one window
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    changed = [key for key in a if key.endswith(("weight1", "weight2"))]
    before = load_file(lite / "model.safetensors")
    assert any(not torch.equal(a[key], before[key]) for key in changed)  # healing did change the factors
    for key, tensor in a.items():
        if key.endswith("k_proj.bias"):
            # Adding a vector to every key shifts each query's scores by a constant, which softmax ignores: this
            # bias's gradient is rounding noise, that Adam scales up to steps of lr, and no two orders of sums share it.
            continue
        # Adam divides each step by the gradient's size, so elements with nearly no gradient move by up to lr whatever
        # their rounding: 1e-4 of the tensor's scale, where the held-out losses agree to 1e-6.
        difference = (b[key] - tensor).abs().max() / tensor.abs().max().clamp_min(1e-30)
        assert difference < 1e-4, (key, difference.item())
    for mine, theirs in zip(report.stages, healed.stages):
        assert theirs.holdout_loss_after == pytest.approx(mine.holdout_loss_after, rel=1e-5, abs=1e-6)


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path

    from liteasr_hf.compression.checkpoint import compress_checkpoint
    from liteasr_hf.data.speech import SpeechSource, load_speech
    from liteasr_hf.evaluation.transcription import evaluate_utterances
    from liteasr_hf.parallel import process_group

    task, model, speech, output = sys.argv[1:5]
    with process_group("cpu") as processes:
        if task == "evaluate":
            utterances, failures = load_speech(speech, split="evaluation", max_samples=4)
            # The second longest goes to process 1; its samples, read as two channels, are not mono audio.
            bad = sorted(utterances, key=lambda u: -u.audio.size)[1]
            bad.audio = bad.audio[: bad.audio.size // 2 * 2].reshape(-1, 2)
            evaluate_utterances(model, utterances, failures, output=output, progress=False, processes=processes)
        else:  # process 1's calibration data is an empty folder
            empty = Path(output).parent / "empty"
            data = SpeechSource(speech if processes.is_main else empty, split="calibration", text_column=None)
            compress_checkpoint(model, output, preset="tiny", num_samples=2, calibration=data, progress=False,
                                processes=processes)
""")


@pytest.mark.parametrize("task, error", [
    ("evaluate", "ValueError: operands could not be broadcast"),  # raised by the feature extractor on process 1
    ("compress", "ValueError: .*empty/metadata.jsonl has no rows"),
])
def test_a_failure_on_one_process_stops_the_run_and_nothing_is_written(task, error, tiny_en_dir, tmp_path):
    import re

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metadata.jsonl").write_text("")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    output = tmp_path / "out"
    run = launch(TORCHRUN, worker, task, tiny_en_dir, SPEECH, output, timeout=240)
    assert run.returncode != 0
    assert re.search(rf"\[rank1\]: {error}", run.stderr), run.stderr[-3000:]
    assert "rank      : 1" in run.stderr  # torchrun's report names the process that failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "worker.py"]  # no output, no temporary folder

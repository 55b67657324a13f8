"""The prepared GPU check runs on CPU in --dry-run: every step listed within the 8-minute budget, every import,
shape spec and CUDA test collected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_lists_every_step_and_checks_imports():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    steps = [line.split("]")[0].lstrip("[") for line in lines if line.startswith("[")]
    assert steps == ["environment", "cuda tests", "benchmark base", "benchmark large-v3", "benchmark large-v3-turbo"]
    assert "total limit 480 s" in lines and lines[-1] == "imports, specs and test collection: ok"
    assert "tests/test_cuda.py" in run.stdout and "--attention-sweep" in run.stdout and "kernel=off" in run.stdout


def test_gpu_check_dry_run_reports_a_bad_spec(tmp_path):
    # The same check with a spec that names no preset: the dry run must fail, naming it.
    code = (
        "import sys; sys.argv = ['gpu_check.py', '--dry-run']; "
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r}); import gpu_check; "
        "gpu_check._SHAPES['base'].append('shape:base@no-such-preset'); sys.exit(gpu_check.main())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 1 and "shape:base@no-such-preset" in run.stdout


def test_gpu_check_smoke_runs_every_step_on_cpu(tmp_path):
    # The GPU run's steps, end to end on the CPU with tiny shapes: the reports and the summary a GPU run will write.
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--smoke", "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["name"] for s in record["steps"]] == ["environment", "cuda tests", "benchmark base",
                                                    "benchmark large-v3", "benchmark large-v3-turbo"]
    assert all(s["result"]["returncode"] == 0 for s in record["steps"])
    large = json.loads((tmp_path / "bench-large-v3.json").read_text())
    assert [m["model"] for m in large["models"]][-2:] == ["shape:tiny@0.55,attention=48",
                                                           "shape:tiny@0.55,attention=48,kernel=off"]
    assert {r["chosen"] for r in large["attention_paths"]} == {"rank_space", "full"}
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("| shape:tiny ") == 3 and "## benchmark large-v3-turbo" in summary

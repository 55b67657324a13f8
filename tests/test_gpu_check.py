"""The prepared GPU check runs on CPU in --dry-run: every step listed within the 8-minute budget, every import,
shape spec and CUDA test collected."""

from __future__ import annotations

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

#!/usr/bin/env python
"""The GPU check: everything that can only run on a CUDA machine, as one command that fits in 8 minutes.

    python3 scripts/gpu_check.py --wheels .whl --output results/gpu     # on the GPU machine
    python3 scripts/gpu_check.py --dry-run                              # anywhere: list the steps, check imports
    python3 scripts/gpu_check.py --prepare-wheels .whl                  # here: fetch what the GPU image lacks

Steps: the environment (GPU, driver, versions); the CUDA-only tests (the Triton kernel's fp16/bf16 tests and
timing, fp16/bf16 inference and generate, the fused kernel inside the model against the PyTorch paths,
torch.compile, compression and healing on the GPU); then encoder benchmarks in fp16 at batch 1 and 16 of random-weight
models with the real shapes of whisper-base, large-v3 and large-v3-turbo, dense and at each preset's size, with the
Triton kernel on and off where rank-space attention runs, and the one-layer attention sweep at large-v3's size. Each
step is a separate process with its own time limit, so one failure does not hide the others. Writes
``gpu_check.json`` (every step, its command, exit status and time) and ``summary.md`` (the benchmark tables) into
--output.

The GPU image has torch, transformers, triton and accelerate but no network: the few packages it lacks come as
wheels made here with --prepare-wheels and installed there with --wheels (into a temporary folder, on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What the project imports that the GPU image (see the device's KINDS.md) does not have, pinned to versions
#: with wheels for its Python 3.12; their own requirements there are met by the image.
GPU_WHEELS = ("soundfile==0.13.1", "cffi==2.0.0", "pycparser==2.23", "jiwer==4.0.0", "rapidfuzz==3.14.3")
CUDA_TESTS = ("tests/test_cuda.py", "tests/test_rank_attention_triton.py", "tests/test_rank_space_attention.py")
#: Time limit of each size's benchmark, seconds (the steps' limits add up to 8 minutes).
_LIMITS = {"base": 70, "large-v3": 140, "large-v3-turbo": 80}
_SHAPES = {
    "base": ["shape:base", "shape:base@base-acc", "shape:base@base", "shape:base@base-fast",
             "shape:base@0.74,attention=48", "shape:base@0.74,attention=48,kernel=off"],
    "large-v3": ["shape:large-v3", "shape:large-v3@large-v3-acc", "shape:large-v3@large-v3",
                 "shape:large-v3@large-v3-fast", "shape:large-v3@0.55,attention=48",
                 "shape:large-v3@0.55,attention=48,kernel=off"],
    "large-v3-turbo": ["shape:large-v3-turbo", "shape:large-v3-turbo@large-v3-turbo-acc",
                       "shape:large-v3-turbo@large-v3-turbo", "shape:large-v3-turbo@large-v3-turbo-fast"],
}


@dataclass
class Step:
    name: str
    command: list[str]
    timeout: int
    output: str | None = None  # a benchmark's JSON report
    result: dict = field(default_factory=dict)


def plan(output: Path, repeats: int, smoke: bool = False) -> list[Step]:
    """The steps, in order; ``output`` is where reports go. ``smoke``: the same steps on the CPU, each benchmark on
    tiny's shape with the same presets and variants, one round at batch 1 (a check of the plumbing, not a figure)."""
    py = sys.executable
    steps = [
        Step("environment", [py, "-c", _ENVIRONMENT, "cpu" if smoke else "cuda"], 20),
        Step("cuda tests", [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--junitxml",
                            str(output / "pytest.xml"), *CUDA_TESTS], 170),
    ]
    device, dtype, batches = ("cpu", "float32", ["1"]) if smoke else ("cuda", "float16", ["1", "16"])
    for size, models in _SHAPES.items():
        report = output / f"bench-{size}.json"
        if smoke:
            models = [spec.replace(f"shape:{size}", "shape:tiny", 1) for spec in models]
        command = [py, "scripts/benchmark.py", "--models", *models, "--device", device, "--dtype", dtype,
                   "--batch-sizes", *batches, "--repeats", "1" if smoke else str(repeats),
                   "--warmup", "1" if smoke else "3", "--e2e-clips", "0", "--output", str(report)]
        if size == "large-v3":
            command += ["--attention-sweep", *(["16", "128"] if smoke else ["16", "32", "48", "64", "96", "128"])]
        steps.append(Step(f"benchmark {size}", command, _LIMITS[size], output=str(report)))
    return steps


_ENVIRONMENT = """
import json, platform, subprocess, torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
try:
    import triton; info["triton"] = triton.__version__
except ImportError:
    info["triton"] = None
try:
    info["nvidia-smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                         "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except FileNotFoundError:
    info["nvidia-smi"] = None
print(json.dumps(info))
import sys
assert sys.argv[-1] != "cuda" or torch.cuda.is_available(), "no CUDA device visible to torch"
"""


def install_wheels(folder: Path, target: Path) -> dict[str, str]:
    """Install the wheels in ``folder`` into ``target`` (no index, no dependencies) and return the environment in
    which the steps see them."""
    wheels = sorted(str(w) for w in folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: no wheels in {folder}; make them with --prepare-wheels {folder} on a machine "
                         "that reaches PyPI.")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(target), *wheels], check=True)
    return {"PYTHONPATH": str(target)}


def step_environment(extra_path: str | None) -> dict[str, str]:
    """The steps' environment: this checkout first on PYTHONPATH (the GPU machine runs it without installing it,
    and a script's own folder is not the repo root), then the installed wheels, then what was there."""
    parts = [str(ROOT), extra_path, os.environ.get("PYTHONPATH")]
    return {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, parts))}


def prepare_wheels(folder: Path) -> None:
    """Download :data:`GPU_WHEELS` for the GPU image's Python 3.12 on x86-64 Linux into ``folder``."""
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
                    *GPU_WHEELS], check=True)


def check_imports(steps: list[Step]) -> list[str]:
    """What --dry-run checks without a GPU: the modules and shape specs the steps use, and that pytest collects
    the CUDA tests. Returns the problems found."""
    problems = []
    if str(ROOT) not in sys.path:  # as the steps see it: the checkout, installed or not
        sys.path.insert(0, str(ROOT))
    for module in ("liteasr_hf", "liteasr_hf.evaluation.benchmark", "liteasr_hf.evaluation.synthetic_models",
                   "liteasr_hf.models.lite_whisper.rank_attention_triton", "soundfile", "jiwer"):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 (any failure to import is what this reports)
            problems.append(f"import {module}: {err}")
    from liteasr_hf.evaluation.synthetic_models import parse_spec

    for models in _SHAPES.values():
        for spec in models:
            try:
                parse_spec(spec)
            except (ValueError, FileNotFoundError) as err:
                problems.append(f"{spec}: {err}")
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              *CUDA_TESTS], capture_output=True, text=True, cwd=ROOT)
    if collect.returncode != 0:
        problems.append("pytest cannot collect the CUDA tests:\n" + collect.stdout[-2000:] + collect.stderr[-2000:])
    for step in steps:
        script = next((part for part in step.command if part.endswith(".py")), None)
        if script and not (ROOT / script).is_file():
            problems.append(f"{step.name}: {script} is missing")
    return problems


def run_step(step: Step, env: dict[str, str], log) -> None:
    started = time.perf_counter()
    try:
        run = subprocess.run(step.command, capture_output=True, text=True, timeout=step.timeout, cwd=ROOT,
                             env={**os.environ, **env})
        code, out, err = run.returncode, run.stdout, run.stderr
    except subprocess.TimeoutExpired as timeout:
        code, out, err = "timeout", _text(timeout.stdout), _text(timeout.stderr)
    step.result = {"returncode": code, "seconds": round(time.perf_counter() - started, 1),
                   "stdout_tail": out[-6000:], "stderr_tail": err[-3000:]}
    log(f"[{step.name}] {'ok' if code == 0 else f'FAILED ({code})'} in {step.result['seconds']} s")
    print(out[-6000:], flush=True)
    if code != 0:
        print(err[-3000:], file=sys.stderr, flush=True)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def summary(steps: list[Step]) -> str:
    """Markdown: each step's status, then each benchmark's printed tables."""
    lines = ["| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s.name} | {'ok' if s.result.get('returncode') == 0 else s.result.get('returncode')} | "
              f"{s.result.get('seconds', '')} |" for s in steps]
    for step in steps:
        if step.output and step.result.get("returncode") == 0:
            lines += ["", f"## {step.name}", "", step.result["stdout_tail"].strip()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="results/gpu", help="folder for gpu_check.json, summary.md and reports")
    p.add_argument("--wheels", default=None, help="folder of wheels to install first (made with --prepare-wheels)")
    p.add_argument("--prepare-wheels", metavar="DIR", default=None,
                   help="download the wheels the GPU image lacks into DIR, then stop")
    p.add_argument("--dry-run", action="store_true", help="list the steps and check imports; run nothing")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds per benchmark")
    p.add_argument("--smoke", action="store_true",
                   help="run every step on the CPU with tiny shapes and one round (checks the check; no GPU figures)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare_wheels:
        prepare_wheels(Path(args.prepare_wheels))
        print(f"Wrote the wheels to {args.prepare_wheels}; carry that folder to the GPU machine.")
        return 0
    output = Path(args.output)
    steps = plan(output, args.repeats, smoke=args.smoke)
    if args.dry_run:
        for step in steps:
            shown = ["<environment probe>" if part == _ENVIRONMENT else part for part in step.command]
            print(f"[{step.name}] (limit {step.timeout} s) {shlex.join(shown)}")
        print(f"total limit {sum(s.timeout for s in steps)} s")
        problems = check_imports(steps)
        print("\n".join(problems) if problems else "imports, specs and test collection: ok")
        return 1 if problems else 0
    output.mkdir(parents=True, exist_ok=True)
    wheels = install_wheels(Path(args.wheels), Path("/tmp/liteasr-gpu-site")) if args.wheels else {}
    env = step_environment(wheels.get("PYTHONPATH"))
    started = time.perf_counter()
    for step in steps:
        run_step(step, env, lambda message: print(message, file=sys.stderr, flush=True))
    record = {"steps": [asdict(s) for s in steps], "seconds": round(time.perf_counter() - started, 1)}
    (output / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    (output / "summary.md").write_text(summary(steps))
    print(summary(steps))
    return 0 if all(s.result.get("returncode") == 0 for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The package as a user installs it: an sdist and a wheel built from this checkout, the wheel installed without
``-e`` into a fresh environment, and the main job run from a folder outside the checkout, offline: ``liteasr
compress`` with a preset and the default calibration audio, ``liteasr evaluate`` on the default speech, ``liteasr
upload --dry-run`` (a staged Hub folder with its card), and the result loaded and run by transformers.

The fresh environment reuses this one's installed dependencies (a path line, not this environment's ``.pth`` files,
so its editable liteasr_hf stays out): building and installing cost seconds, not a second torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the fresh environment's bin folder, the environment to run it with, a working folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1")
    # python -m build: the sdist, then the wheel built from the unpacked sdist, as pip does for an sdist from PyPI.
    # --no-isolation: the build backend of this environment (the test extra has it), no download.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(ROOT)], cwd=tmp, env=env)
    wheels, sdists = list((tmp / "dist").glob("*.whl")), list((tmp / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list((tmp / "dist").iterdir())
    fresh = tmp / "fresh"
    venv.create(fresh, with_pip=False)
    site = Path(subprocess.check_output([fresh / "bin" / "python", "-c", "import sysconfig; "
                                         "print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install", "--no-deps",
         "--no-index", "--quiet", str(wheels[0])], cwd=tmp, env=env)
    work = tmp / "work"
    work.mkdir()
    return fresh / "bin", env, work


def test_the_wheel_carries_presets_card_template_and_speech(installed):
    bin_dir, env, work = installed
    wheel = next((work.parent / "dist").glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"liteasr_hf/shipped/configs/base.yaml", "liteasr_hf/shipped/configs/tiny.yaml",
            "liteasr_hf/shipped/model_cards/lite_whisper.md", "liteasr_hf/shipped/data/evaluation.jsonl",
            "liteasr_hf/models/lite_whisper/modeling_lite_whisper.py"} <= names
    shipped = {n for n in names if n.startswith("liteasr_hf/shipped/data/")}
    in_checkout = {f"liteasr_hf/shipped/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "data").rglob("*")
                   if p.is_file()}
    assert shipped == in_checkout
    where = run([str(bin_dir / "python"), "-c", "import liteasr_hf, liteasr_hf.shipped as s; "
                 "print(liteasr_hf.__file__); print(s.PRESET_DIR)"], cwd=work, env=env).stdout.split()
    assert all(str(ROOT) not in line and "site-packages" in line for line in where), where


def test_liteasr_help_lists_every_tool(installed):
    bin_dir, env, work = installed
    from liteasr_hf.cli import COMMANDS

    out = run([str(bin_dir / "liteasr"), "--help"], cwd=work, env=env).stdout
    assert all(f"  {name} " in out for name in COMMANDS), out
    usage = run([str(bin_dir / "liteasr"), "compress", "--help"], cwd=work, env=env).stdout
    assert usage.startswith("usage: liteasr compress") and "--preset" in usage
    wrong = subprocess.run([str(bin_dir / "liteasr"), "compres"], cwd=work, env=env, capture_output=True, text=True)
    assert wrong.returncode == 2 and "Did you mean compress?" in wrong.stderr


def test_compress_evaluate_and_stage_outside_the_checkout(installed):
    bin_dir, env, work = installed
    liteasr = str(bin_dir / "liteasr")
    run([liteasr, "compress", "--model", "tiny.en", "--preset", "tiny", "--num-samples", "2", "--no-heal",
         "--no-evaluate", "--output", "lite-tiny"], cwd=work, env=env)
    report = json.loads((work / "lite-tiny" / "compression_report.json").read_text())
    assert report["preset"] == "tiny" and report["calibration"]["windows"] == 2
    assert report["calibration_data"]["data"].startswith("speaker-mix-v")  # the default audio, found installed
    assert report["command"].startswith("liteasr compress --model tiny.en --preset tiny")

    run([liteasr, "evaluate", "--model", "lite-tiny", "--num-samples", "6", "--output", "eval"], cwd=work, env=env)
    summary = json.loads(next((work / "eval").glob("*.summary.json")).read_text())
    assert summary["n_scored"] == 6 and summary["wer"] < 100

    run([liteasr, "upload", "--model", "lite-tiny", "--repo-id", "me/lite-whisper-tiny.en", "--dry-run"],
        cwd=work, env=env)
    card = (work / "lite-tiny-hub" / "README.md").read_text()
    assert "liteasr compress --model tiny.en --preset tiny" in card

    # Loaded and run as a user of the published folder would: transformers and the folder's own code.
    script = (
        "import json, soundfile as sf\n"
        "from transformers import pipeline\n"
        "from liteasr_hf.shipped import DATA_ROOT\n"
        "rows = [json.loads(l) for l in (DATA_ROOT / 'evaluation.jsonl').read_text().splitlines()]\n"
        "row = next(r for r in rows if r['group'] == 'synthetic')\n"
        "audio, rate = sf.read(DATA_ROOT / row['file_name'], dtype='float32')\n"
        "asr = pipeline('automatic-speech-recognition', model='lite-tiny-hub', trust_remote_code=True)\n"
        "print(json.dumps({'reference': row['text'], 'text': asr({'raw': audio, 'sampling_rate': rate})['text']}))\n"
    )
    heard = json.loads(run([str(bin_dir / "python"), "-c", script], cwd=work, env=env).stdout.splitlines()[-1])
    reference, text = set(heard["reference"].lower().split()), set(heard["text"].lower().split())
    assert len(reference & text) >= len(reference) / 2, heard

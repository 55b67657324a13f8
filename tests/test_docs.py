"""README.md and docs/: every results table is what its committed reports render, the README's runnable commands run
(on tiny.en), the README stays short, and every relative link leads to a file."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from liteasr_hf import cli
from liteasr_hf.cli import report as report_cli
from liteasr_hf.evaluation.results_tables import RESULTS_DIR, SPEC_FILE, documents, render_documents, table_names

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 250
#: The info string of a README code block that this test runs: GitHub still highlights it as bash.
RUNNABLE = "bash runnable"
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def _copy_docs(tmp_path: Path) -> Path:
    """README.md and docs/ (with the reports) copied into ``tmp_path``: the repository as ``liteasr report`` reads it."""
    shutil.copy(README, tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def test_every_results_table_is_what_its_reports_render():
    stale = [f"{doc.path.relative_to(ROOT)}: {name}" for doc in render_documents(ROOT) for name in doc.changed]
    assert not stale, "Tables that differ from their reports (run `liteasr report`):\n" + "\n".join(stale)


def test_every_table_of_the_specification_is_shown_somewhere():
    spec = json.loads((ROOT / RESULTS_DIR / SPEC_FILE).read_text(encoding="utf-8"))
    shown = {name for path in documents(ROOT) for name in table_names(path.read_text(encoding="utf-8"))}
    assert set(spec) <= shown, f"Tables specified but shown nowhere: {sorted(set(spec) - shown)}"
    assert "presets" in table_names(README.read_text(encoding="utf-8"))


def test_check_names_a_table_typed_by_hand(tmp_path, capsys):
    root = _copy_docs(tmp_path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert " 27.80 |" in text  # base's overall WER, as rendered from its summary
    readme.write_text(text.replace(" 27.80 |", " 26.80 |", 1), encoding="utf-8")
    assert report_cli.main(["--check", "--root", str(root)]) == 1
    assert "README.md: table 'presets' differs" in capsys.readouterr().err
    assert report_cli.main(["--root", str(root)]) == 0  # rewrites it from the reports
    assert readme.read_text(encoding="utf-8") == text
    assert report_cli.main(["--check", "--root", str(root)]) == 0


def test_a_summary_and_a_line_of_the_specification_add_a_preset_row(tmp_path):
    root = _copy_docs(tmp_path)
    results = root / RESULTS_DIR
    spec = json.loads((results / SPEC_FILE).read_text(encoding="utf-8"))
    shutil.copy(results / "evaluation" / "base.summary.json", results / "evaluation" / "base-copy.summary.json")
    spec["presets"]["rows"].append({"report": "evaluation/base-copy.summary.json", "label": "base-copy",
                                    "original": "whisper-base"})
    (results / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    (readme,) = [doc for doc in render_documents(root) if doc.path.name == "README.md"]
    assert readme.changed == ["presets"]
    row = next(line for line in readme.rendered.splitlines() if line.startswith("| base-copy "))
    assert "17.75M (89.5%)" in row and "27.80" in row


def test_the_presets_table_shows_each_rows_encoder_latency_from_one_benchmark(tmp_path):
    root = _copy_docs(tmp_path)
    for page in (root / "docs").glob("*.md"):  # their figures quote the real benchmark, which this test replaces
        page.unlink()
    results = root / RESULTS_DIR
    spec = json.loads((results / SPEC_FILE).read_text(encoding="utf-8"))
    timings = [("dense", 1, 100.0), ("lite", 1, 80.0), ("dense", 8, 700.0), ("lite", 8, 500.0)]
    (results / "bench.json").write_text(json.dumps({
        "settings": {"device": "cpu", "dtype": "float32", "threads": 2}, "torch_version": "2.13.0",
        "encoder": [{"model": m, "batch_size": b, "latency_ms": ms} for m, b, ms in timings]}), encoding="utf-8")
    spec["presets"]["benchmark"] = "bench.json"
    rows = spec["presets"]["rows"]
    for row in rows:
        row.pop("timing", None)
    whisper_base = next(r for r in rows if r["label"] == "whisper-base")
    base = next(r for r in rows if r.get("original") == "whisper-base")
    whisper_base["timing"], base["timing"] = "dense", "lite"
    (results / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    (readme,) = [doc for doc in render_documents(root) if doc.path.name == "README.md"]
    lines = readme.rendered.splitlines()
    assert any("encoder ms (batch 1)" in line and "speed-up" in line for line in lines)
    def cells(label: str) -> list[str]:
        return [c.strip() for c in next(line for line in lines if line.startswith(f"| {label} ")).split("|")]

    assert cells(base["label"])[-4:-2] == ["80.0", "1.25x"]  # the smallest batch, against its original's latency
    assert cells("whisper-base")[-4:-2] == ["100.0", "1.00x"]
    assert any("at batch 1, PyTorch 2.13.0, cpu, float32, 2 threads" in line for line in lines)

    base["timing"] = "not-timed"
    (results / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    with pytest.raises(ValueError, match="no encoder timing for not-timed; it times dense, lite"):
        render_documents(root)


def _runnable_commands(text: str) -> list[str]:
    """The commands of the README's ``bash runnable`` blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in _FENCE.finditer(text):
        if block["info"].strip() != RUNNABLE:
            continue
        joined = block["code"].replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_the_readme_runnable_commands_run_on_tiny_en(tmp_path, monkeypatch, capsys):
    commands = _runnable_commands(README.read_text(encoding="utf-8"))
    assert any(c.startswith("liteasr evaluate --model tiny.en") for c in commands), commands
    monkeypatch.chdir(_copy_docs(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "liteasr", f"a runnable block runs only liteasr commands: {command}"
        # In this process, as the console script would (``liteasr_hf.cli.main``): a new interpreter per command
        # would spend most of the test importing torch again.
        status = cli.main(words[1:])
        assert status == 0, f"{command} exited with {status}:\n{capsys.readouterr().err[-3000:]}"
    summaries = list((tmp_path / "results" / "quick").glob("*.summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text(encoding="utf-8"))
    assert summary["command"].startswith("liteasr evaluate --model tiny.en") and summary["machine"]["cpu_count"]


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_the_readme_keeps_its_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("path", documents(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(path):
    broken = []
    for match in _LINK.finditer(path.read_text(encoding="utf-8")):
        target = match["target"].split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):  # an anchor in the page, or a URL
            continue
        if not (path.parent / target).exists():
            broken.append(match["target"])
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"

"""Figures quoted in prose: formulas over rendered table cells and report values, written by ``liteasr report`` and
checked by ``liteasr report --check``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from liteasr_hf.cli import report as report_cli
from liteasr_hf.evaluation.results_figures import (FIGURE, FigureError, cell_value, evaluate_formula, figure_formulas,
                                                   format_figure, markdown_rows, report_value)
from liteasr_hf.evaluation.results_tables import documents, render_documents

ROOT = Path(__file__).resolve().parent.parent

TABLE = """Encoder:

| model | batch | ms | params |
|---|---:|---:|---:|
| dense | 1 | 1,200.5 | 19.82M (100.0%) |
| lite | 1 | 1,000.0 | 17.75M (89.5%) |
| lite | 8 | 7,000.0 | 17.75M (89.5%) |

End to end:

| system | time s |
|---|---:|
| dense | 10.0 |
"""


def test_a_cell_is_the_one_row_holding_every_key_under_its_column():
    tables = markdown_rows(TABLE)
    assert len(tables) == 2 and tables[0][0] == ["model", "batch", "ms", "params"]
    assert cell_value(tables, ["dense"], "ms") == 1200.5                     # thousands separators read
    assert cell_value(tables, ["lite", "batch=8"], "ms") == 7000.0           # HEADER=VALUE pins a key to a column
    assert cell_value(tables, ["lite", "1"], "params", part=2) == 89.5       # the cell's second number
    assert cell_value(tables, ["dense"], "time s") == 10.0                   # the second table
    with pytest.raises(FigureError, match=r"2 cells match row \['lite'\].*add a key"):
        cell_value(tables, ["lite"], "ms")
    with pytest.raises(FigureError, match="0 cells match .*the columns are .*'time s'"):
        cell_value(tables, ["dense"], "latency")
    with pytest.raises(FigureError, match="has no number 3"):
        cell_value(tables, ["dense"], "params", part=3)


def test_a_report_value_follows_a_json_pointer_and_picks_list_items_by_key(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({
        "systems": [{"system": "onnx/a", "seconds": 12.5}, {"system": "onnx/b", "seconds": 10}],
        "groups": {"real native adult": {"errors": 6}, "a/b": {"errors": 3}}, "name": "x", "ok": True}))
    assert report_value(tmp_path, "run.json#/systems/[system=onnx/b]/seconds") == 10.0
    assert report_value(tmp_path, "run.json#/systems/0/seconds") == 12.5
    assert report_value(tmp_path, "run.json#/groups/real native adult/errors") == 6.0
    assert report_value(tmp_path, "run.json#/groups/a~1b/errors") == 3.0      # JSON pointer escaping
    with pytest.raises(FigureError, match="0 items of the list have system='onnx/c'"):
        report_value(tmp_path, "run.json#/systems/[system=onnx/c]/seconds")
    with pytest.raises(FigureError, match="no 'group' there .*'groups'"):
        report_value(tmp_path, "run.json#/group/x")
    with pytest.raises(FigureError, match="is 'x', not a number"):
        report_value(tmp_path, "run.json#/name")
    with pytest.raises(FigureError, match="is True, not a number"):
        report_value(tmp_path, "run.json#/ok")
    with pytest.raises(FigureError, match="cannot read the report"):
        report_value(tmp_path, "missing.json#/x")


def test_a_formula_is_arithmetic_and_nothing_else():
    values = {"a": 185.7, "b": 120.9}
    assert evaluate_formula("{a} / {b}", values.__getitem__) == pytest.approx(1.536, abs=1e-3)
    assert evaluate_formula("-({b} - {a}) * 2 + abs(-1) + max({a}, 3)", values.__getitem__) == pytest.approx(316.3)
    for formula in ("__import__('os').system('true')", "{a}.real", "[{a}]", "{a} ** 2", "open('x')", "{a} /"):
        with pytest.raises(FigureError):
            evaluate_formula(formula, values.__getitem__)
    with pytest.raises(FigureError, match="division by zero"):
        evaluate_formula("{a} / 0", values.__getitem__)
    assert format_figure(-0.001, "+.2f") == "+0.00"   # a negative zero reads as zero
    assert format_figure(1682.0, ",.0f") == "1,682"
    with pytest.raises(FigureError, match="not a format"):
        format_figure(1.0, "q")


def _copy_docs(tmp_path: Path) -> Path:
    for path in documents(ROOT):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    shutil.copytree(ROOT / "docs" / "results", tmp_path / "docs" / "results")
    return tmp_path


def test_check_names_a_figure_typed_by_hand_and_report_writes_it(tmp_path, capsys):
    root = _copy_docs(tmp_path)
    page = root / "docs" / "development.md"
    text = page.read_text(encoding="utf-8")
    sentence = ("whisper-base makes <!-- figure: {evaluation/whisper-base.summary.json#/groups/real non-native "
                "adult/errors} | .0f -->0<!-- /figure --> errors, {presets[base-fast][WER real non-native adult]} "
                "points: <!-- figure: {presets[base-fast][WER real non-native adult]} - {presets[whisper-base][WER "
                "real non-native adult]} | +.2f -->+0.00<!-- /figure --> against it.\n")
    page.write_text(text + "\n" + sentence, encoding="utf-8")
    assert report_cli.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.count("docs/development.md: figure '") == 2 and "differs from its reports" in err
    assert report_cli.main(["--root", str(root)]) == 0
    written = page.read_text(encoding="utf-8")
    summary = json.loads((root / "docs/results/evaluation/whisper-base.summary.json").read_text())
    errors = summary["groups"]["real non-native adult"]["errors"]
    assert f"-->{errors}<!-- /figure --> errors" in written
    # the difference of the two cells the presets table shows, as rounded there
    # the base presets table: README shows the tiny presets' table first
    presets = next(t for t in markdown_rows((root / "README.md").read_text(encoding="utf-8"))
                   if any(row[0] == "base-fast" for row in t))
    column = presets[0].index("WER real non-native adult")
    wer = {row[0]: float(row[column]) for row in presets[1:]}
    assert f"-->{wer['base-fast'] - wer['whisper-base']:+.2f}<!-- /figure --> against it" in written
    assert report_cli.main(["--check", "--root", str(root)]) == 0
    assert len(figure_formulas(written)) == len(figure_formulas(text)) + 2


def test_a_figure_that_would_split_its_paragraph_or_cannot_be_computed_is_refused(tmp_path):
    root = _copy_docs(tmp_path)
    page = root / "docs" / "development.md"
    text = page.read_text(encoding="utf-8")
    for bad, message in [
        ("Line one\n<!-- figure: {presets[base][WER % (all)]} | .2f -->0<!-- /figure --> at a line's start.",
         "starts a line"),
        ("It is <!-- figure: {presets[base][WER % (all)]}\n- {presets[whisper-base][WER % (all)]} | .2f -->0"
         "<!-- /figure -->.", "starts with '-"),
        ("It is <!-- figure: {presets[nothing][WER % (all)]} | .2f -->0<!-- /figure -->.", "0 cells match"),
        ("It is <!-- figure: {no-such-table[base][WER]} | .2f -->0<!-- /figure -->.", "'no-such-table' is not in"),
        ("It is <!-- figure: {presets[base][WER % (all)]} -->0<!-- /figure -->.", "has no format"),
    ]:
        page.write_text(text + "\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=re.escape(message)):
            render_documents(root)


#: What a result looks like in prose: a decimal, a signed change, a speed-up.
_RESULT_LIKE = re.compile(r"(?<![\w.+-])(?:[-+]\d+(?:\.\d+)?|\d+\.\d+|\d+(?:\.\d+)?x)(?![\w.]*\d)(?![\w])")
#: Numbers of that look that are not results: versions, an arXiv id, the augmentation's settings (speed, RT60), and
#: the targets and thresholds the issues set.
_NOT_RESULTS = {"0.12", "0.32", "0.33", "4.57", "4.58", "5.20", "2.11", "2.13", "3.6", "3.10", "2502.20583",
                "0.9", "1.1", "0.3", "0.7", "0.8", "+0.5", "+1.0", "+3.0"}


def _prose(text: str) -> list[str]:
    """``text`` without tables, code, inline code, link targets and marked figures: the sentences a person typed."""
    text = FIGURE.sub(" ", text)
    text = re.sub(r"<!-- table: .*?<!-- /table -->", " ", text, flags=re.DOTALL)
    text = re.sub(r"^```.*?^```", " ", text, flags=re.DOTALL | re.MULTILINE)
    lines = [line for line in text.splitlines() if not line.startswith("|")]
    return [re.sub(r"\]\([^)]*\)", "]", re.sub(r"`[^`]*`", " ", line)) for line in lines]


def test_no_result_is_typed_into_the_prose_of_readme_or_docs():
    sample = "runs 1.54x faster, 11.5 points better, +0.53 on readers, (-1.06); torch 2.13.0, `0.94`, 2026-12-04"
    assert [m[0] for m in _RESULT_LIKE.finditer(" ".join(_prose(sample)))] == ["1.54x", "11.5", "+0.53", "-1.06"]
    typed = [f"{path.relative_to(ROOT)}: {m[0]!r} in {line.strip()[:100]!r}"
             for path in documents(ROOT) for line in _prose(path.read_text(encoding="utf-8"))
             for m in _RESULT_LIKE.finditer(line) if m[0] not in _NOT_RESULTS]
    assert not typed, ("Results typed by hand (mark each with <!-- figure: FORMULA | FORMAT -->, see "
                       "docs/development.md):\n" + "\n".join(typed))

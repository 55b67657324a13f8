"""Figures quoted in the prose of README.md and docs/*.md, computed from the rendered tables and committed reports.

A number in a sentence is marked with the formula that gives it and its format; ``liteasr report`` writes the value
between the two comments, and ``liteasr report --check`` fails when the text there differs::

    base-fast runs <!-- figure: {onnx-base-cpu-systems[faster-whisper base:int8][time s]}
    / {onnx-base-cpu-systems[lite-whisper-base-fast, q8, audio][time s]} | .2f -->1.54<!-- /figure -->x faster

An operand in braces is either

- a **table cell**, ``{TABLE[KEY, KEY, ...][COLUMN]}``: in the table ``TABLE`` of ``tables.json`` (as rendered),
  the one row that has every ``KEY`` as a cell (``HEADER=VALUE`` pins a key to a column; a label with a comma is
  one key where a cell reads so) and, in it, the column headed ``COLUMN``. The value is the cell's first number
  (``[COLUMN].2`` takes its second: ``17.75M (89.5%)`` gives 17.75, then 89.5); or
- a **report value**, ``{FILE#/POINTER}``: in the JSON report ``FILE`` (relative to ``docs/results/``), the value at
  the JSON pointer, where a segment ``[KEY=VALUE]`` picks the one list item whose ``KEY`` is ``VALUE``.

Operands combine with ``+ - * /``, parentheses, numbers, ``abs``, ``min`` and ``max``; nothing else is evaluated.
The format after ``|`` (``\\|`` in a table cell) is Python's format specification (``.2f``, ``+.2f``, ``,.0f``,
``.0%``). A figure computed from table cells is computed from the rounded figures the reader sees.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Callable
from pathlib import Path

FIGURE = re.compile(r"(<!-- figure:\s(?P<formula>.*?)\s-->)(?P<value>[^<\n]*)(<!-- /figure -->)", re.DOTALL)
_OPERAND = re.compile(r"\{(?P<ref>[^{}]*)\}")
_CELL = re.compile(r"^(?P<table>[\w.-]+)\[(?P<row>[^\]]*)\]\[(?P<column>[^\]]*)\](?:\.(?P<part>\d+))?$")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ITEM = re.compile(r"^\[(?P<key>[^=\]]+)=(?P<value>[^\]]*)\]$")

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max}


class FigureError(ValueError):
    """A figure whose formula cannot be computed: the message names the formula and what is wrong."""


def markdown_rows(text: str) -> list[list[list[str]]]:
    """The Markdown tables in ``text``: each a list of rows (the header first, the ``|---|`` line dropped), each
    row its stripped cells."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def cell_value(tables: list[list[list[str]]], row_keys: list[str], column: str, part: int = 1,
               where: str = "") -> float:
    """The ``part``-th number in the cell under ``column`` of the one row holding every key of ``row_keys``
    (``HEADER=VALUE`` or a bare cell text), across ``tables``."""
    found: list[str] = []
    for table in tables:
        header, *rows = table
        if column not in header:
            continue
        for row in rows:
            if all(_row_has(header, row, key) for key in row_keys):
                found.append(row[header.index(column)])
    if len(found) != 1:
        columns = sorted({c for table in tables for c in table[0]})
        raise FigureError(f"{where}: {len(found)} cells match row {row_keys} and column {column!r}"
                          + ("; add a key that tells the rows apart" if found else
                             f"; the columns are {', '.join(map(repr, columns))}"))
    numbers = _NUMBER.findall(found[0])
    if len(numbers) < part:
        raise FigureError(f"{where}: the cell {found[0]!r} has no number {part}.")
    return float(numbers[part - 1].replace(",", ""))


def _row_has(header: list[str], row: list[str], key: str) -> bool:
    if "=" in key:
        name, value = (s.strip() for s in key.split("=", 1))
        return name in header and header.index(name) < len(row) and row[header.index(name)] == value
    return key in row


def report_value(results: Path, ref: str, where: str = "") -> float:
    """The number at ``FILE#/POINTER`` in a report under ``results``."""
    file, _, pointer = ref.partition("#")
    path = results / file.strip()
    try:
        node = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FigureError(f"{where}: cannot read the report {path}: {err}") from err
    # a [KEY=VALUE] segment may hold slashes (a system named onnx/whisper-base)
    for segment in re.findall(r"/(\[[^\]]*\]|[^/]*)", pointer.strip()):
        segment = segment.replace("~1", "/").replace("~0", "~")
        item = _ITEM.match(segment)
        if item and isinstance(node, list):
            hits = [x for x in node if isinstance(x, dict) and str(x.get(item["key"])) == item["value"]]
            if len(hits) != 1:
                raise FigureError(f"{where}: {len(hits)} items of the list have {item['key']}={item['value']!r}.")
            node = hits[0]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        elif isinstance(node, dict) and segment in node:
            node = node[segment]
        else:
            keys = ", ".join(map(repr, node)) if isinstance(node, dict) else f"a list of {len(node)}"
            raise FigureError(f"{where}: {file} has no {segment!r} there (it holds {keys}).")
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise FigureError(f"{where}: {ref} is {node!r}, not a number.")
    return float(node)


def evaluate_formula(formula: str, resolve: Callable[[str], float], where: str = "") -> float:
    """The arithmetic of ``formula`` with each ``{...}`` operand replaced by ``resolve(operand)``."""
    where = where or repr(" ".join(formula.split()))
    operands: list[float] = []

    def name(match: re.Match) -> str:
        operands.append(resolve(match["ref"].strip()))
        return f"_{len(operands) - 1}"

    expression = _OPERAND.sub(name, " ".join(formula.split()))
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as err:
        raise FigureError(f"{where}: not a formula ({err.msg}).") from err

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value,
                                                                                                     bool):
            return float(node.value)
        if isinstance(node, ast.Name) and re.fullmatch(r"_\d+", node.id):
            return operands[int(node.id[1:])]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise FigureError(f"{where}: division by zero.")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](value(node.operand))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and node.args and not node.keywords):
            return float(_FUNCTIONS[node.func.id](*(value(a) for a in node.args)))
        raise FigureError(f"{where}: only numbers, {{operands}}, + - * /, parentheses, abs, min and max are "
                          f"allowed, not {ast.unparse(node)!r}.")

    return value(tree)


def format_figure(value: float, spec: str) -> str:
    """``value`` in the format ``spec``, with a negative zero written as zero."""
    try:
        text = format(value, spec)
        if (number := _NUMBER.search(text)) and float(number[0].replace(",", "")) == 0:
            text = format(0.0, spec)
    except ValueError as err:
        raise FigureError(f"{spec!r} is not a format for a number: {err}") from err
    return text


class Figures:
    """Computes the figures of the documents under one ``docs/results/``; ``table_text(name)`` gives a rendered
    table's body (each table is parsed once)."""

    def __init__(self, results: Path, table_text: Callable[[str], str]):
        self.results = results
        self._table_text = table_text
        self._tables: dict[str, list[list[list[str]]]] = {}

    def _resolve(self, ref: str, where: str) -> float:
        if "#" in ref:
            return report_value(self.results, ref, where)
        cell = _CELL.match(ref)
        if not cell:
            raise FigureError(f"{where}: {{{ref}}} is neither TABLE[KEYS][COLUMN] nor FILE#/POINTER.")
        table = cell["table"]
        if table not in self._tables:
            self._tables[table] = markdown_rows(self._table_text(table))
        tables, whole = self._tables[table], cell["row"].strip()
        # a label that holds a comma, "tiny-fast (0.85, healed)", is one key when some cell reads so
        if any(whole in row for t in tables for row in t[1:]):
            keys = [whole]
        else:
            keys = [k.strip() for k in whole.split(",") if k.strip()]
        return cell_value(tables, keys, cell["column"].strip(), int(cell["part"] or 1), where)

    def value(self, formula: str, where: str = "") -> str:
        """The text of the figure ``FORMULA | FORMAT``."""
        body, sep, spec = formula.rpartition("|")
        body = body.removesuffix("\\")  # in a table cell the separator is written \|
        if not sep:
            raise FigureError(f"{where}: {formula!r} has no format (end it with `| .2f` or the like).")
        where = f"{where}: figure {' '.join(body.split())!r}"
        try:
            return format_figure(evaluate_formula(body, lambda ref: self._resolve(ref, where), where), spec.strip())
        except FigureError as err:
            raise err if str(err).startswith(where) else FigureError(f"{where}: {err}") from err

    def render(self, text: str, where: str, changed: list[str]) -> str:
        """``text`` with every marked figure's value written; the formulas whose committed text differed are
        appended to ``changed``."""
        errors: list[str] = []

        def replace(match: re.Match) -> str:
            try:
                _check_inline(text, match, where)
                value = self.value(match["formula"], where)
            except FigureError as err:
                errors.append(str(err))
                return match.group(0)
            if match["value"] != value:
                changed.append(" ".join(match["formula"].split()))
            return match.group(1) + value + match.group(4)

        rendered = FIGURE.sub(replace, text)
        if errors:  # every bad figure of the document at once, not the first
            raise FigureError("\n".join(errors))
        return rendered


#: What, at the start of a line, Markdown reads as the start of a block (an HTML block, a list item, a heading, a
#: quote, a table row, a code fence): a figure's comment must not start a line or have its lines start so, or it
#: would split the paragraph it sits in.
_BLOCK_START = re.compile(r"^\s*(<|[-+*>#|]|`{3}|~{3}|\d+[.)](\s|$))")


def _check_inline(text: str, match: re.Match, where: str) -> None:
    line_start = text.rfind("\n", 0, match.start()) + 1
    if not text[line_start:match.start()].strip():
        raise FigureError(f"{where}: the figure {' '.join(match['formula'].split())!r} starts a line, where Markdown "
                          "reads its comment as an HTML block; keep a word before it on its line.")
    for line in match["formula"].split("\n")[1:]:
        if _BLOCK_START.match(line):
            raise FigureError(f"{where}: a line of the figure {' '.join(match['formula'].split())!r} starts with "
                              f"{line.strip()[:12]!r}, which Markdown reads as a new block; break the line elsewhere.")


def figure_formulas(text: str) -> list[str]:
    """The formulas of the figures marked in ``text``, in order."""
    return [" ".join(m["formula"].split()) for m in FIGURE.finditer(text)]


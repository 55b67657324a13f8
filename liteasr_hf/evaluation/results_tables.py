"""The results tables of README.md and docs/*.md, rendered from the JSON reports committed under ``docs/results/``.

A Markdown file marks each table's place with two comments; everything between them is rendered, never typed::

    <!-- table: presets -->
    ...
    <!-- /table -->

``docs/results/tables.json`` says, per table name, what kind of report it shows and from which files (paths relative
to ``docs/results/``), with a label per row. Adding a row is adding a report and a line there. Each rendered table
opens with a line that states the command, date, machine and commit its reports recorded ("not recorded" where an
older report did not), and, where it shows encoder sizes, how they are counted. The tables themselves come from the
formatters the reports' own commands print with (:func:`~.transcription.format_comparison`,
:func:`~.ablation.format_ablation`, :func:`~.benchmark.format_table`, ONNX's ``format_onnx_table``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..records import JsonRecord, by_name, each, reads
from .reporting import markdown_table
from .results_figures import Figures
from .summary import EvaluationSummary

#: Where the reports and the table specification live, relative to the repository root.
RESULTS_DIR = Path("docs") / "results"
SPEC_FILE = "tables.json"
#: The Markdown files whose tables are rendered, relative to the repository root.
DOCUMENTS = ("README.md", "docs/*.md")

_TABLE = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
_PARAMS_NOTE = ("Encoder parameters are counted without Whisper's fixed position table (`max_source_positions x "
                "d_model`), as the published lite-whisper cards count them; \"with positions\" adds it.")
NOT_RECORDED = "not recorded"


@dataclasses.dataclass(kw_only=True)
class Row(JsonRecord):
    """One report of a table: its file (relative to ``docs/results/``), the row's label and, for the presets
    table, the label of the row it is compared with (its original model) and the model's name in the table's
    ``benchmark`` report (``timing``)."""

    report: str
    label: str | None = None
    original: str | None = None
    timing: str | None = None


@dataclasses.dataclass(kw_only=True)
class TableSpec(JsonRecord):
    """What one marked table shows. ``kind``: ``presets`` (each row against its original), ``comparison`` (one
    :func:`~.transcription.format_comparison` table, the first row the reference), ``ablation`` (a healing or
    calibration ablation's ``ablation.json``), ``benchmark`` (``liteasr benchmark``), ``onnx`` (``liteasr benchmark
    --runtime onnxruntime``; ``onnx-systems``: its end-to-end table alone; ``clip-gaps``: its transcripts, every
    system against ``reference``, or each system ``against`` names against its own, clip by clip on real speech,
    with a 95% interval over speakers), ``changes`` (each row against its ``original``, per real group, with 95%
    intervals over speakers, from the per-utterance records beside the summaries), ``vllm`` (``liteasr
    benchmark-vllm``).
    ``of``: which models or presets the figures are of, when that is not today's presets. ``benchmark``: for the
    presets table, a ``liteasr benchmark`` report (relative to ``docs/results/``) whose encoder latency at its
    smallest batch size each row shows in place of the evaluation's RTFx, which a shared machine makes noisy."""

    kind: str
    rows: list[Row] = reads(each(Row.from_dict))
    of: str | None = None
    benchmark: str | None = None
    reference: str | None = None
    against: dict[str, str] | None = None


def read_spec(results: Path) -> dict[str, TableSpec]:
    """``tables.json`` in ``results``: table name -> :class:`TableSpec`."""
    path = results / SPEC_FILE
    try:
        return by_name(TableSpec.from_dict)(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read the table specification {path}: {err}") from err


# ---- provenance: what each report recorded about the run that wrote it -------------------------------------------

@dataclasses.dataclass(frozen=True)
class Provenance:
    """The command, date, machine and commit one report recorded (``None``: not recorded)."""

    command: str | None = None
    date: str | None = None
    machine: str | None = None
    commit: str | None = None

    def line(self) -> str:
        command = f"`{self.command}`" if self.command else NOT_RECORDED
        return (f"command {command}; date {self.date or NOT_RECORDED}; machine {self.machine or NOT_RECORDED}; "
                f"commit {self.commit[:12] if self.commit else NOT_RECORDED}")


def describe_machine(machine: Mapping[str, Any] | None, settings: Mapping[str, Any] | None = None) -> str | None:
    """``machine_info``'s record (and a report's device, dtype, threads) in a few words."""
    machine, settings = machine or {}, settings or {}
    parts = []
    if machine.get("gpu"):
        parts.append(machine["gpu"])
    if machine.get("cpu"):
        features = machine.get("cpu_features")
        # what decides 8-bit kernels on x86 (recorded since 2026-12-05; older reports say nothing)
        isa = ("" if features is None or "avx2" not in features else
               ", VNNI" if {"avx512_vnni", "avx_vnni"} & set(features) else ", AVX2 without VNNI")
        parts.append(f"{machine['cpu']} ({machine.get('cpu_count', '?')} CPUs{isa})")
    for key, fmt in (("device", "{}"), ("dtype", "{}"), ("threads", "{} threads"), ("batch_size", "batch {}")):
        if settings.get(key) is not None:
            parts.append(fmt.format(settings[key]))
    return ", ".join(parts) or None


def provenance(report: Mapping[str, Any] | EvaluationSummary) -> Provenance:
    """What ``report`` (an evaluation summary, or the dict of any other report) recorded about its run."""
    if isinstance(report, EvaluationSummary):
        settings = {"device": report.device, "dtype": report.dtype, "batch_size": report.batch_size}
        return Provenance(command=report.command, date=(report.timestamp or "")[:10] or None,
                          machine=describe_machine(report.machine, settings), commit=report.commit)
    settings = dict(report.get("settings") or {})
    if "threads" in report:
        settings.setdefault("threads", report["threads"])
    return Provenance(command=report.get("command"), date=(report.get("timestamp") or "")[:10] or None,
                      machine=describe_machine(report.get("machine"), settings), commit=report.get("commit"))


def provenance_lines(named: Sequence[tuple[str, Provenance]]) -> list[str]:
    """One line per distinct provenance, naming the rows (or files) it holds for."""
    groups: dict[Provenance, list[str]] = {}
    for name, prov in named:
        groups.setdefault(prov, []).append(name)
    return [f"*{', '.join(names)}: {prov.line()}.*" for prov, names in groups.items()]


# ---- the kinds of table --------------------------------------------------------------------------------------------

def _read_json(results: Path, row: Row) -> dict:
    path = results / row.report
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read the report {path}: {err}") from err


def _summaries(results: Path, spec: TableSpec) -> list[EvaluationSummary]:
    """The rows' summaries, each relabelled with its row's label."""
    return [dataclasses.replace(summary, model=row.label or summary.model)
            for row in spec.rows for summary in [EvaluationSummary.read(results / row.report)]]


def render_presets(results: Path, spec: TableSpec) -> list[str]:
    """Each row's encoder size (share of its original's), WER per speaker group (real speech first), overall WER,
    speed and long outputs. Speed is the encoder latency from ``spec.benchmark`` (one timed run of every model) and
    the speed-up over the row's original; without a benchmark, the evaluation's RTFx."""
    from .transcription import ENCODER_SIZE_HEADERS, encoder_size_cells

    summaries = _summaries(results, spec)
    by_label = {row.label: s for row, s in zip(spec.rows, summaries)}
    timed = _encoder_latency(results, spec) if spec.benchmark else None
    groups = list(dict.fromkeys(g for s in summaries for g in s.groups))
    speed = ([f"encoder ms (batch {timed.batch_size})", "speed-up"] if timed else ["RTFx"])
    table = [("model", *ENCODER_SIZE_HEADERS, *(f"WER {g}" for g in groups), "WER % (all)", *speed,
              "long outputs")]
    for row, s in zip(spec.rows, summaries):
        original = by_label.get(row.original) if row.original else None
        if row.original and original is None:
            raise ValueError(f"{row.report}: its original {row.original!r} is not a row of the table.")
        if timed:
            reference = next((r.timing for r in spec.rows if r.label == row.original), row.timing)
            cells = [timed.cell(row.timing), timed.speedup(row.timing, reference)]
        else:
            cells = [f"{s.rtfx:.1f}" if s.rtfx is not None else "-"]
        table.append((s.model, *encoder_size_cells(s, original or s),
                      *(f"{s.groups[g].wer:.2f}" if g in s.groups else "-" for g in groups), f"{s.wer:.2f}",
                      *cells, str(s.n_long_outputs or 0)))
    first = summaries[0]
    head = provenance_lines([(s.model, provenance(s)) for s in summaries])
    if timed:
        head += provenance_lines([(f"encoder latency (`{spec.benchmark}`)", provenance(timed.report))])
        note = (f"{first.data} ({first.split}): {first.n_scored} utterances scored per model; encoder latency: one "
                f"30 s input at batch {timed.batch_size}, {timed.describe()}, every model in one run (median, "
                "speed-up against the row's original).")
    else:
        note = (f"{first.data} ({first.split}): {first.n_scored} utterances scored per model; RTFx is comparable "
                "only between a preset and its original, measured in one run.")
    return [*head, "", *markdown_table(table), note]


@dataclasses.dataclass(frozen=True)
class _Latency:
    """A benchmark report's encoder latency per model at its smallest batch size."""

    report: dict
    batch_size: int
    latency_ms: dict[str, float]

    def cell(self, model: str | None) -> str:
        return "-" if model is None else f"{self.latency_ms[model]:.1f}"

    def speedup(self, model: str | None, reference: str | None) -> str:
        if model is None or reference is None:
            return "-"
        return f"{self.latency_ms[reference] / self.latency_ms[model]:.2f}x"

    def describe(self) -> str:
        settings = self.report.get("settings", {})
        runtime = f"PyTorch {self.report.get('torch_version', '')}".strip()
        threads = settings.get("threads")
        return ", ".join(part for part in (runtime, settings.get("device"), settings.get("dtype"),
                                           f"{threads} threads" if threads else None) if part)


def _encoder_latency(results: Path, spec: TableSpec) -> _Latency:
    """The presets table's benchmark: latency per model at the smallest batch size; every ``timing`` a row names
    must be a model of it."""
    path = results / spec.benchmark
    report = _read_json(results, Row(report=spec.benchmark))
    rows = report.get("encoder") or []
    if not rows:
        raise ValueError(f"{path} has no encoder timings; write it with `liteasr benchmark`.")
    batch = min(r["batch_size"] for r in rows)
    latency = {r["model"]: float(r["latency_ms"]) for r in rows if r["batch_size"] == batch}
    missing = [r.timing for r in spec.rows if r.timing is not None and r.timing not in latency]
    if missing:
        raise ValueError(f"{path} has no encoder timing for {', '.join(missing)}; it times {', '.join(latency)}.")
    return _Latency(report, batch, latency)


def render_comparison(results: Path, spec: TableSpec) -> list[str]:
    """One run of ``liteasr evaluate --compare``, as it printed it."""
    from .transcription import format_comparison

    summaries = _summaries(results, spec)
    head = provenance_lines([(s.model, provenance(s)) for s in summaries])
    return [*head, "", format_comparison(summaries)]


def _one_report(results: Path, spec: TableSpec, format_report: Callable[[dict], str]) -> list[str]:
    """A table of one report: its provenance, then ``format_report`` of it (the command's own Markdown)."""
    (row,) = spec.rows
    report = _read_json(results, row)
    return [*provenance_lines([(f"`{row.report}`", provenance(report))]), "", format_report(report)]


def render_ablation(results: Path, spec: TableSpec) -> list[str]:
    """A healing or calibration ablation (``ablation.json``), as it wrote ``ablation.md``."""
    from .ablation import format_ablation

    return _one_report(results, spec, format_ablation)


def render_benchmark(results: Path, spec: TableSpec) -> list[str]:
    """``liteasr benchmark``'s encoder (and end-to-end) tables."""
    from .benchmark import format_table

    return _one_report(results, spec, format_table)


def render_onnx(results: Path, spec: TableSpec) -> list[str]:
    """``liteasr benchmark --runtime onnxruntime``'s tables (ONNX Runtime encoders, then every system end to end)."""
    from ..integrations.onnx.benchmark import format_onnx_table

    return _one_report(results, spec, format_onnx_table)


def render_onnx_systems(results: Path, spec: TableSpec) -> list[str]:
    """The end-to-end table alone of ``liteasr benchmark --runtime onnxruntime`` (README shows it)."""
    from ..integrations.onnx.benchmark import format_onnx_systems

    return _one_report(results, spec, format_onnx_systems)


def render_clip_gaps(results: Path, spec: TableSpec) -> list[str]:
    """The per-clip transcripts beside an ONNX benchmark report: every system against ``spec.reference``, or each
    system of ``spec.against`` against its own reference, on the real-speech clips."""
    from ..integrations.onnx.benchmark import clip_gaps, format_clip_gaps, transcripts_path
    from .intervals import BOOTSTRAP_RESAMPLES

    (row,) = spec.rows
    if not spec.reference and not spec.against:
        raise ValueError("A clip-gaps table needs a \"reference\" (the system the others are compared with) or "
                         "\"against\" (system -> its reference).")
    report = _read_json(results, row)
    rows = clip_gaps(transcripts_path(results / row.report), spec.reference or "", against=spec.against)
    whom = spec.reference or "its reference"
    note = (f"The real-speech clips of `{transcripts_path(row.report).name}`: a system is behind (ahead of) "
            f"{whom} on a clip where it makes more (fewer) word errors on it; the largest gap is its most errors "
            f"more on one clip. The WER change's 95% interval comes from {BOOTSTRAP_RESAMPLES} draws of the speakers "
            "with replacement, each speaker's clips together.")
    return [*provenance_lines([(f"`{row.report}`", provenance(report))]), "",
            format_clip_gaps(rows, spec.reference), note]


def render_changes(results: Path, spec: TableSpec) -> list[str]:
    """Each row that names an ``original`` against that original's row, clip by clip on the real speech of one
    evaluation run: the WER change per real group and over all real speech, each with its 95% interval over
    speakers (:mod:`.intervals`; the per-utterance records beside each summary), as ``liteasr evaluate --compare``
    prints it."""
    from .intervals import CHANGES_NOTE, format_changes, group_changes, read_records

    labels = {row.label: row for row in spec.rows}
    compared = [row for row in spec.rows if row.original]
    if not compared:
        raise ValueError("A changes table needs rows that name their \"original\".")
    rows = []
    for row in compared:
        if row.original not in labels:
            raise ValueError(f"{row.report}: its original {row.original!r} is not a row of the table.")
        rows.append((row.label or row.report, row.original,
                     group_changes(read_records(results / row.report),
                                   read_records(results / labels[row.original].report))))
    summaries = _summaries(results, spec)
    head = provenance_lines([(s.model, provenance(s)) for s in summaries])
    return [*head, "", format_changes(rows), CHANGES_NOTE]


def render_vllm(results: Path, spec: TableSpec) -> list[str]:
    """``liteasr benchmark-vllm``: each model's best round, throughput against the first, latency percentiles and
    WER (per speaker group where the report has them). (The command's own ``format_serving_table`` needs every
    request's latency, which the report does not keep.)"""
    (row,) = spec.rows
    report = _read_json(results, row)
    models = report["models"]
    first = models[0]["audio_seconds_per_second"]
    groups = list(dict.fromkeys(g for m in models for g in m.get("wer_groups") or {}))
    table = [("model", "requests", "concurrency", "audio s / s", "vs first", "p50 latency", "p90", "p99",
              "rounds (audio s / s)", *(f"WER {g}" for g in groups), "WER % (all)" if groups else "WER %")]
    for m in models:
        rounds = ", ".join(f"{r:.2f}" for r in m.get("rounds_audio_seconds_per_second", []))
        by_group = m.get("wer_groups") or {}
        table.append((m["label"], str(m["requests"]), str(m["concurrency"]), f"{m['audio_seconds_per_second']:.2f}",
                      f"{m['audio_seconds_per_second'] / first:.2f}x", f"{m['latency_p50_s']:.2f} s",
                      f"{m['latency_p90_s']:.2f} s", f"{m['latency_p99_s']:.2f} s", rounds or "-",
                      *(f"{by_group[g]:.2f}" if g in by_group else "-" for g in groups),
                      f"{m['wer']:.2f}" if m.get("wer") is not None else "-"))
    env = " ".join(f"{k}={v}" for k, v in (report.get("server_env") or {}).items())
    note = (f"{report['utterances']} utterances ({report['audio_seconds']:.0f} s of audio), {report['rounds']} "
            f"round(s) per model; server arguments {' '.join(report.get('server_args') or []) or 'none'}"
            f"{'; ' + env if env else ''}.")
    return [*provenance_lines([(f"`{row.report}`", provenance(report))]), "", *markdown_table(table), note]


def render_q8(results: Path, spec: TableSpec) -> list[str]:
    """``liteasr compare-q8``: each 8-bit scheme against the same model in fp32."""
    from ..integrations.onnx.q8_comparison import format_q8_comparison

    return _one_report(results, spec, format_q8_comparison)


def render_profile(results: Path, spec: TableSpec) -> list[str]:
    """``liteasr profile-onnx``: where each encoder's time goes, per operator kind."""
    from ..integrations.onnx.profiling import format_profiles

    return _one_report(results, spec, format_profiles)


def render_part_profile(results: Path, spec: TableSpec) -> list[str]:
    """``liteasr profile-onnx``: where each encoder's time goes, per part, beside each part's FLOPs."""
    from ..integrations.onnx.profiling import format_part_profiles

    return _one_report(results, spec, format_part_profiles)


RENDERERS = {"presets": render_presets, "comparison": render_comparison, "ablation": render_ablation,
             "benchmark": render_benchmark, "onnx": render_onnx, "onnx-systems": render_onnx_systems,
             "clip-gaps": render_clip_gaps, "changes": render_changes, "vllm": render_vllm, "q8": render_q8,
             "profile": render_profile, "profile-parts": render_part_profile}
#: The kinds whose tables show encoder sizes, and so say how they are counted.
_SHOWS_PARAMS = {"presets", "comparison", "ablation"}


def render_table(results: Path, name: str, spec: TableSpec) -> str:
    """The body of table ``name`` (between its markers): its provenance, what it is of, the table."""
    if spec.kind not in RENDERERS:
        raise ValueError(f"Table {name!r}: unknown kind {spec.kind!r}; choose from {', '.join(RENDERERS)}.")
    if not spec.rows:
        raise ValueError(f"Table {name!r} names no report.")
    lines = RENDERERS[spec.kind](results, spec)
    intro = []
    if spec.of:
        intro.append(f"**Of:** {spec.of}")
    if spec.kind in _SHOWS_PARAMS:
        intro.append(f"*{_PARAMS_NOTE}*")
    return _spaced("\n".join([*intro, *lines]))


def _spaced(text: str) -> str:
    """``text`` with a blank line before and after every Markdown table, which GitHub needs to end one."""
    out: list[str] = []
    for line in text.strip().split("\n"):
        if out and out[-1] and out[-1].startswith("|") != line.startswith("|") and line:
            out.append("")
        out.append(line)
    return "\n".join(out) + "\n"


# ---- documents ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RenderedDocument:
    """One Markdown file: its text as committed and as rendered, the tables whose text differs and the formulas of
    the figures whose text differs."""

    path: Path
    committed: str
    rendered: str
    changed: list[str]
    changed_figures: list[str] = dataclasses.field(default_factory=list)


def documents(root: Path) -> list[Path]:
    """README.md and docs/*.md under ``root``, in a fixed order."""
    paths = []
    for pattern in DOCUMENTS:
        paths += sorted(root.glob(pattern))
    return [p for p in paths if p.is_file()]


class _Tables:
    """Each table of ``spec`` rendered (and parsed for figures) once, for every document that shows or quotes it."""

    def __init__(self, results: Path, spec: Mapping[str, TableSpec]):
        self.results, self.spec = results, spec
        self._bodies: dict[str, str] = {}
        self.figures = Figures(results, self.body)

    def body(self, name: str, where: str = "") -> str:
        if name not in self.spec:
            raise ValueError(f"{where}: the table {name!r} is not in {self.results / SPEC_FILE}.")
        if name not in self._bodies:
            self._bodies[name] = render_table(self.results, name, self.spec[name])
        return self._bodies[name]


def render_document(path: Path, results: Path, spec: Mapping[str, TableSpec],
                    tables: _Tables | None = None) -> RenderedDocument:
    """``path`` with every marked table rendered and every marked figure computed (see
    :mod:`.results_figures`); ``ValueError`` for a marker whose table is not in ``spec`` or a figure that cannot be
    computed."""
    tables = tables or _Tables(results, spec)
    committed = path.read_text(encoding="utf-8")
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        body = tables.body(match["name"], str(path))
        if match["body"] != body:
            changed.append(match["name"])
        return match.group(1) + body + match.group(4)

    rendered = _TABLE.sub(replace, committed)
    changed_figures: list[str] = []
    rendered = tables.figures.render(rendered, str(path), changed_figures)
    return RenderedDocument(path=path, committed=committed, rendered=rendered, changed=changed,
                            changed_figures=changed_figures)


def render_documents(root: str | Path = ".") -> list[RenderedDocument]:
    """Every document under ``root`` rendered from ``root/docs/results``; nothing is written."""
    root = Path(root)
    results = root / RESULTS_DIR
    spec = read_spec(results)
    tables = _Tables(results, spec)
    rendered, errors = [], []
    for path in documents(root):  # every document's errors at once, not the first document's
        try:
            rendered.append(render_document(path, results, spec, tables))
        except ValueError as err:
            errors.append(str(err))
    if errors:
        raise ValueError("\n".join(errors))
    return rendered


def table_names(text: str) -> list[str]:
    """The names of the tables marked in ``text``, in order."""
    return [m["name"] for m in _TABLE.finditer(text)]

"""WER against encoder size and against measured encoder latency, for stock Whisper and LiteWhisper models:
the evaluation summaries give WER and parameters, a benchmark report (:mod:`liteasr_hf.evaluation.benchmark`) the
latency; the Pareto front is the set of models that no other model beats on both axes. :func:`plot_wer_against_size`
sets named series of models (recipes: the paper's, ours, healed) side by side by size alone.

Parameters are counted without the position table, as the published lite-whisper tables count them. ``speech``
chooses the WER: ``"all"``, the corpus WER of the evaluation, or ``"real"``, the real speakers' groups pooled
(:meth:`~.summary.EvaluationSummary.pooled_wer`)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from ..atomic import atomic_write_bytes
from .summary import EvaluationSummary


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    model: str
    wer: float  # percent
    encoder_params: int
    latency_ms: float  # median encoder forward pass at the benchmark's batch size
    lite: bool  # a LiteWhisper model (else stock Whisper)


#: What ``speech`` may name, and the axis label of each.
SPEECH = {"all": "WER (%, every evaluation group)", "real": "WER on real speakers (%, their groups pooled)"}


def summary_wer(summary: EvaluationSummary, speech: str = "all") -> float:
    """The WER a plot shows for ``summary``: the corpus WER (``"all"``) or the real speakers' pooled (``"real"``)."""
    if speech not in SPEECH:
        raise ValueError(f"Unknown speech {speech!r}: choose one of {', '.join(SPEECH)}.")
    return float(summary.wer) if speech == "all" else summary.pooled_wer("real")


def _same_data(read: Sequence[tuple[EvaluationSummary, str]]) -> None:
    datasets = {(Path(str(s.data)).name, s.config, s.split, s.n_scored) for s, _ in read}
    if len(datasets) > 1:
        raise ValueError("The summaries come from different evaluation data (data, config, split, utterances): "
                         f"{sorted(datasets, key=str)}; WERs would not be comparable.")


def _read_benchmark(source: str | os.PathLike | Mapping) -> tuple[Mapping, str]:
    if isinstance(source, Mapping):
        return source, str(source.get("model", "?"))
    path = Path(source)
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read {path}: {err}") from err


def _summary(source: str | os.PathLike | EvaluationSummary) -> tuple[EvaluationSummary, str]:
    if isinstance(source, EvaluationSummary):
        return source, source.model
    try:
        return EvaluationSummary.read(source), str(source)
    except OSError as err:
        raise ValueError(f"Cannot read {source}: {err}") from err


def _label(summary: EvaluationSummary, source: str | os.PathLike | EvaluationSummary) -> str:
    """A point's label: the summary file's name as its writer chose it (``liteasr evaluate`` writes
    ``<model>__<data>-<split>.summary.json``), else the model's folder name."""
    if isinstance(source, EvaluationSummary):
        path = str(summary.model_path or summary.model)
        return Path(path).name or path
    return Path(source).name.removesuffix(".summary.json").split("__")[0]


def _keys(model: str | None, model_path: str | None) -> set[str]:
    """What a model can be recognized by: its name as given and its resolved path; local folders as absolute
    paths, so that ``models/x`` and ``/work/models/x`` match."""
    keys = set()
    for value in (model, model_path):
        if value:
            path = Path(str(value))
            keys.add(str(path.resolve()) if path.exists() else str(value))
    return keys


def load_points(
    summaries: Sequence[str | os.PathLike | EvaluationSummary],
    benchmark: str | os.PathLike | Mapping,
    batch_size: int | None = None,
    speech: str = "all",
) -> list[ParetoPoint]:
    """One point per evaluation summary (``*.summary.json`` written by ``liteasr evaluate``), with the
    encoder latency of the same model at ``batch_size`` (default: the benchmark's smallest) from the benchmark
    report. Every summary must have a benchmark row and every benchmarked model a summary; the summaries must
    come from the same evaluation data. Raises ``ValueError`` naming what does not match."""
    read = [(*_summary(s), s) for s in summaries]
    if not read:
        raise ValueError("No evaluation summaries given.")
    report, report_name = _read_benchmark(benchmark)
    if "encoder" not in report or "models" not in report:
        raise ValueError(f"{report_name} is not a benchmark report (no 'encoder' or 'models').")

    _same_data([(summary, name) for summary, name, _ in read])

    sizes = sorted({r["batch_size"] for r in report["encoder"]})
    batch_size = sizes[0] if batch_size is None else batch_size
    if batch_size not in sizes:
        raise ValueError(f"{report_name} has no encoder timings at batch size {batch_size} (it has {sizes}).")
    latency = {r["model"]: r["latency_ms"] for r in report["encoder"] if r["batch_size"] == batch_size}
    benchmarked = [(m["model"], _keys(m.get("model"), m.get("model_path"))) for m in report["models"]]

    points, matched, unmatched = [], set(), []
    for summary, name, source in read:
        keys = _keys(summary.model, summary.model_path)
        hits = [model for model, model_keys in benchmarked if keys & model_keys]
        if not hits:
            unmatched.append(str(summary.model))
            continue
        if hits[0] in matched:
            raise ValueError(f"Two summaries are for the same model {hits[0]} (one is {name}).")
        matched.add(hits[0])
        points.append(ParetoPoint(
            label=_label(summary, source),
            model=hits[0],
            wer=summary_wer(summary, speech),
            encoder_params=int(summary.published_encoder_params),
            latency_ms=float(latency[hits[0]]),
            lite=summary.model_type != "whisper",
        ))
    if unmatched:
        raise ValueError(f"No benchmark timings in {report_name} for {', '.join(unmatched)}; it has "
                         f"{', '.join(m for m, _ in benchmarked)}. Benchmark these models too.")
    without = [m for m, _ in benchmarked if m not in matched]
    if without:
        raise ValueError(f"No evaluation summary for the benchmarked model(s) {', '.join(without)}; "
                         "evaluate them (liteasr evaluate) and pass their .summary.json.")
    return points


def pareto_front(points: Sequence[ParetoPoint], cost: Callable[[ParetoPoint], float]) -> list[ParetoPoint]:
    """The points that no other point beats on both ``cost`` and WER (lower is better), by increasing cost."""
    front: list[ParetoPoint] = []
    for point in sorted(points, key=lambda p: (cost(p), p.wer)):
        if not front or point.wer < front[-1].wer:
            front.append(point)
    return front


def plot_pareto(
    points: Sequence[ParetoPoint],
    output: str | os.PathLike | None = None,
    latency_label: str = "encoder latency (ms)",
    title: str | None = None,
    wer_label: str = "WER (%)",
) -> Figure:
    """Two panels, WER against encoder parameters and against encoder latency: stock Whisper as squares,
    LiteWhisper as circles, each point labelled, the Pareto front as a staircase. Writes a PNG to ``output``."""
    fig = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(fig)
    panels = [
        (PARAMS_LABEL, lambda p: p.encoder_params / 1e6),
        (latency_label, lambda p: p.latency_ms),
    ]
    for ax, (xlabel, cost) in zip(fig.subplots(1, 2), panels):
        for lite, marker, name in ((False, "s", "Whisper"), (True, "o", "LiteWhisper")):
            group = [p for p in points if p.lite == lite]
            if group:
                ax.scatter([cost(p) for p in group], [p.wer for p in group], marker=marker, s=40, label=name,
                           zorder=3)
        front = pareto_front(points, cost)
        ax.step([cost(p) for p in front], [p.wer for p in front], where="post", linestyle="--", color="grey",
                linewidth=1, label="Pareto front", zorder=2)
        _label_points(ax, [(p.label, cost(p), p.wer) for p in points], dx=4)
        # A collapsed variant can sit at several times the others' WER; a log axis keeps both readable.
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{wer_label}, log scale")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    if output is not None:
        _write_png(fig, output)
    return fig


def _label_points(ax, labelled: Sequence[tuple[str, float, float]], dx: int) -> None:
    """Label each (text, x, y) point; neighbours along x get their labels above and below in turn, so that close
    points stay readable."""
    for i, (text, x, y) in enumerate(sorted(labelled, key=lambda item: item[1])):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, 5 if i % 2 else -11), fontsize=7)


def _write_png(fig: Figure, output: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150)
    atomic_write_bytes(output, buffer.getvalue())


def plot_from_files(
    summaries: Sequence[str | os.PathLike],
    benchmark: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int | None = None,
    speech: str = "all",
) -> tuple[Figure, list[ParetoPoint]]:
    """:func:`load_points` and :func:`plot_pareto`, with the benchmark's device and settings on the figure."""
    report, _ = _read_benchmark(benchmark)
    points = load_points(summaries, report, batch_size, speech)
    settings = report.get("settings", {})
    batch = batch_size or min(r["batch_size"] for r in report["encoder"])
    where = f"{settings.get('device', '?')}, {settings.get('threads', '?')} threads, {settings.get('dtype', '?')}"
    fig = plot_pareto(points, output, latency_label=f"encoder latency, batch {batch} (ms; {where})",
                      title="WER against encoder size and speed", wer_label=SPEECH[speech])
    return fig, points


PARAMS_LABEL = "encoder parameters, without the position table (M)"


@dataclass(frozen=True)
class SizePoint:
    series: str  # e.g. "Whisper", "paper's recipe", "ours", "ours, healed"
    label: str  # the model's folder name
    wer: float
    encoder_params: int  # without the position table


def size_points(series: Mapping[str, Sequence[str | os.PathLike | EvaluationSummary]],
                speech: str = "real") -> list[SizePoint]:
    """One point per summary, in its named series. Every summary must come from the same evaluation data, and no model
    may appear twice; raises ``ValueError`` naming the one that does not fit."""
    read = [(name, _summary(s)[0], s) for name, sources in series.items() for s in sources]
    if not read:
        raise ValueError("No evaluation summaries given.")
    _same_data([(s, str(n)) for _, s, n in read])
    points, seen = [], {}
    for name, summary, source in read:
        label = _label(summary, source)
        if label in seen:
            raise ValueError(f"{label} is given twice ({seen[label]} and {source}): one point per model.")
        seen[label] = source
        points.append(SizePoint(name, label, summary_wer(summary, speech), int(summary.published_encoder_params)))
    return points


def plot_wer_against_size(points: Sequence[SizePoint], output: str | os.PathLike | None = None,
                          speech: str = "real", title: str | None = None) -> Figure:
    """WER against encoder parameters, one marker per series, each point labelled; a PNG to ``output``."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    markers = "soD^v<>P*"
    for i, name in enumerate(dict.fromkeys(p.series for p in points)):
        group = [p for p in points if p.series == name]
        ax.scatter([p.encoder_params / 1e6 for p in group], [p.wer for p in group], marker=markers[i % len(markers)],
                   s=45, label=name, zorder=3)
    _label_points(ax, [(p.label, p.encoder_params / 1e6, p.wer) for p in points], dx=5)
    ax.set_xlabel(PARAMS_LABEL)
    ax.set_ylabel(SPEECH[speech])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    if output is not None:
        _write_png(fig, output)
    return fig

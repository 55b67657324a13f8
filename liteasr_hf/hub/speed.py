"""The model card's speed comparison: a LiteWhisper model against its base model, both read from one report of
``liteasr benchmark`` (:func:`~liteasr_hf.evaluation.benchmark.run_benchmark`), in which the two ran interleaved
on one machine. Speeds from separate runs (two evaluation summaries, say) are never set against each other: a shared
machine that is busier during one run than the other makes such a ratio meaningless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints.ctranslate2_format import PACKAGED_ALIASES
from ..compression.report import CompressionReport

_REQUIRED = ("reference", "models", "encoder", "end_to_end", "settings")


def load_benchmark(path: str | os.PathLike) -> dict:
    """Read a benchmark report written by ``liteasr benchmark --output FILE``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Benchmark report {path} does not exist. Run liteasr benchmark --models BASE_MODEL MODEL "
            "--output FILE first, or publish without --benchmark (the card then says no speed comparison was made)."
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    missing = [key for key in _REQUIRED if not isinstance(report, dict) or key not in report]
    if missing:
        raise ValueError(f"{path} is not a report of liteasr benchmark (missing {missing}).")
    return report


@dataclass(frozen=True)
class EncoderSpeed:
    """Both encoders at one batch size (median latency of one forward pass over a batch of 30 s inputs)."""

    batch_size: int
    base_ms: float
    model_ms: float
    speedup: float  # base latency / this model's
    flop_reduction: float  # base FLOPs / this model's


@dataclass(frozen=True)
class EndToEndSpeed:
    """Both models transcribing the same clips (features, ``generate``, decoding)."""

    batch_size: int
    n_clips: int
    audio_seconds: float
    base_rtfx: float
    model_rtfx: float
    speedup: float  # base seconds / this model's


@dataclass(frozen=True)
class SpeedComparison:
    """This model and its base model in one benchmark run: the rows of each, and how the run was made."""

    source: str  # the report's file name
    base: str  # the base model's name in the report
    model: str  # this model's name in the report
    encoder: list[EncoderSpeed]
    end_to_end: list[EndToEndSpeed]
    settings: dict
    machine: dict
    date: str | None  # YYYY-MM-DD of the run


def _normpath(path: str) -> str:
    return os.path.normpath(os.path.expanduser(path))


def _find(entries: list[dict], role: str, model_type_ok, paths: set[str], exact: set[str], names: set[str],
          source: Path) -> dict | None:
    """The one entry of ``entries`` that is the model ``role`` describes: by its resolved folder, else the name it
    was given as, else its folder name; ``None`` when none fits. Several equally good fits are an error."""
    ranked: dict[int, list[dict]] = {}
    for entry in entries:
        if not model_type_ok(entry.get("model_type")):
            continue
        given, where = str(entry.get("model", "")), str(entry.get("model_path", entry.get("model", "")))
        if Path(where).is_absolute() and _normpath(where) in paths:
            rank = 0
        elif given in exact or where in exact:
            rank = 1
        elif {Path(given.rstrip("/")).name, Path(where.rstrip("/")).name} & names:
            rank = 2
        else:
            continue
        ranked.setdefault(rank, []).append(entry)
    if not ranked:
        return None
    best = ranked[min(ranked)]
    if len(best) > 1:
        raise ValueError(f"{source} holds several models that could be {role}: "
                         f"{', '.join(e['model'] for e in best)}; benchmark it with its base model alone.")
    return best[0]


def speed_comparison(benchmark: Mapping, source: str | os.PathLike, model_dir: str | os.PathLike,
                     compression: CompressionReport, base_model: str, repo_id: str | None = None) -> SpeedComparison:
    """Match ``model_dir`` (with its ``compression`` report) and its base model (Hub id ``base_model``) to the
    models of the ``benchmark`` report read from ``source``, and return their rows side by side.

    This model matches the report's entry for the same folder (resolved path), or the same name (``repo_id``, or
    the folder's name); the base model the entry for the folder, Hub id or packaged alias it was compressed from.
    The encoder sizes must agree with ``compression_report.json``. Raises ``ValueError`` when the report lacks
    either model, so that no card compares two separate runs.
    """
    source = Path(source)
    model_dir = Path(model_dir)
    entries = [e for e in benchmark["models"] if isinstance(e, dict) and "model" in e]
    encoder = compression.encoder

    ours = _find(entries, "this model", lambda t: t == "lite-whisper",
                 {_normpath(str(model_dir.resolve()))}, {str(model_dir), *([repo_id] if repo_id else [])},
                 {model_dir.resolve().name}, source)

    origin = [str(where) for where in (compression.source_model, compression.resolved_model) if where]
    exact = {*origin, base_model}
    exact |= {name for name, alias in PACKAGED_ALIASES.items() if f"openai/whisper-{alias}" == base_model}
    paths = {_normpath(str(Path(p).resolve())) for p in origin if Path(p).exists()}
    paths |= {_normpath(p) for p in origin if Path(p).is_absolute()}
    names = {Path(p.rstrip("/")).name for p in [*origin, base_model]} - {model_dir.resolve().name}
    others = [e for e in entries if e is not ours]
    base = _find(others, f"the base model {base_model}", lambda t: t != "lite-whisper", paths, exact, names, source)

    held = ", ".join(f"{e['model']} ({e.get('model_type')})" for e in entries) or "no models"
    missing = [what for what, entry in ((f"this model ({model_dir.name})", ours),
                                         (f"its base model ({base_model})", base)) if entry is None]
    if missing:
        raise ValueError(
            f"Benchmark {source} does not contain {' nor '.join(missing)}: it holds {held}. A speed comparison on "
            "the card must come from one run with both models; run liteasr benchmark --models "
            f"{base_model} {model_dir} --output FILE, or publish without --benchmark."
        )
    for entry, role, expected in ((ours, "this model", encoder.params_after),
                                  (base, "the base model", encoder.params_before)):
        if entry.get("random_weights"):
            raise ValueError(f"{source}: {entry['model']} ({role}) was benchmarked with random weights; benchmark "
                             "the real checkpoints.")
        if entry.get("encoder_params") not in (None, expected):
            raise ValueError(
                f"{source}: {entry['model']}, taken for {role}, has {entry['encoder_params']:,} encoder parameters, "
                f"but compression_report.json says {expected:,}: it is another checkpoint. Benchmark {model_dir} "
                f"with {base_model}."
            )

    def rows(table: str) -> dict[int, tuple[dict, dict]]:
        by_model = {}
        for row in benchmark.get(table) or []:
            by_model.setdefault(row["batch_size"], {})[row["model"]] = row
        return {size: (r[base["model"]], r[ours["model"]]) for size, r in sorted(by_model.items())
                if base["model"] in r and ours["model"] in r}

    encoder_rows = [
        EncoderSpeed(size, b["latency_ms"], m["latency_ms"], b["latency_ms"] / m["latency_ms"],
                     b["encoder_gflops"] / m["encoder_gflops"])
        for size, (b, m) in rows("encoder").items()
    ]
    if not encoder_rows:
        raise ValueError(f"{source} has no encoder timings of both {ours['model']} and {base['model']}.")
    e2e_rows = [
        EndToEndSpeed(size, m["n_clips"], m["audio_seconds"], b["rtfx"], m["rtfx"], b["seconds"] / m["seconds"])
        for size, (b, m) in rows("end_to_end").items()
    ]
    timestamp = benchmark.get("timestamp")
    return SpeedComparison(source.name, base["model"], ours["model"], encoder_rows, e2e_rows,
                           dict(benchmark["settings"]), dict(benchmark.get("machine") or {}),
                           str(timestamp)[:10] if timestamp else None)

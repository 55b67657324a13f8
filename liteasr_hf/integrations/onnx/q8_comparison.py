"""Which 8-bit scheme keeps a model's accuracy: one export per model, every :class:`~.quantization.Q8Scheme` written
beside its fp32 graphs, each scored on the same speech (WER per speaker group) and by how far its encoder's output
moves from fp32 on real speech (where an encoder's time goes is :mod:`.profiling`'s).

    from liteasr_hf.integrations.onnx.q8_comparison import compare_q8_schemes
    report = compare_q8_schemes(["tiny.en", "models/lite-tiny"], "exp/q8", max_per_group=40)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...data.speech import SpeechSource, Utterance, load_speech
from ...data.windows import pack_clips
from ...portable import portable_data
from .calibration import CALIBRATION_WINDOWS, calibration_features
from .layout import ENCODER, SUBFOLDER, OnnxLayout
from .quantization import Q8_SCHEMES, Q8Scheme
from .runtime import OnnxWhisper

FP32 = "fp32"


@dataclass
class SchemeRow:
    """One model under one scheme (``fp32``: not quantized) on the same utterances."""

    model: str
    scheme: str
    encoder_mb: float
    decoder_mb: float
    encoder_error: float  # ||q8 - fp32|| / ||fp32|| of last_hidden_state on real-speech windows (0 for fp32)
    wer: float
    groups: dict[str, float]  # WER per speaker group, real speech first
    delta_wer: float  # this scheme's WER minus the same model's fp32 WER
    delta_groups: dict[str, float]
    n_utterances: int
    seconds: float  # transcription time (features, encoder, greedy decoding)


def export_q8_variants(model: str | os.PathLike, output: str | os.PathLike, schemes: Sequence[Q8Scheme],
                       calibration: SpeechSource | None = None, calibration_windows: int = CALIBRATION_WINDOWS,
                       log: Callable[[str], None] | None = print) -> dict[str, Path]:
    """Export ``model`` once and write ``output/fp32`` (the fp32 pair) and ``output/<scheme>`` (the ``q8`` pair
    of that scheme), each a folder the clients and :class:`~.runtime.OnnxWhisper` load; their paths by scheme name.
    Folders already there are kept (delete them to redo)."""
    from ...checkpoints.loading import load_model_and_processor
    from .client_files import write_client_files
    from .export import export_graphs, write_variant

    output = Path(output)
    wanted = {FP32: None, **{s.name: s for s in schemes}}
    folders = {name: output / name for name in wanted}
    todo = [name for name, folder in folders.items() if not (folder / SUBFOLDER).is_dir()]
    if not todo:
        return folders
    whisper, processor, _ = load_model_and_processor(model, attn_implementation="eager")
    whisper = whisper.float().eval()
    layout = OnnxLayout.from_config(whisper.config)
    features = None
    if any(wanted[n] is not None and wanted[n].calibrated for n in todo):
        features = calibration_features(processor.feature_extractor, calibration, calibration_windows)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output, prefix=".graphs-") as work:
        if log:
            log(f"{model}: exporting the graphs")
        # A scheme that quantizes attention's products needs them as separate MatMuls, so then nothing is fused
        # (fusion changes only float rounding, so the other schemes compare the same either way).
        graphs = export_graphs(whisper, Path(work), fuse=not any(s.quantize_attention for s in schemes))
        for name in todo:
            if log:
                log(f"{model}: writing {name}")
            partial = output / f".{name}-partial"
            shutil.rmtree(partial, ignore_errors=True)
            (partial / SUBFOLDER).mkdir(parents=True)
            scheme = wanted[name]
            external = write_variant(graphs, FP32 if scheme is None else "q8", partial / SUBFOLDER, layout,
                                     **({} if scheme is None else {"scheme": scheme, "calibration": features}))
            write_client_files(whisper, processor, partial, external_data=external)
            if scheme is not None:
                (partial / SUBFOLDER / "q8_scheme.json").write_text(json.dumps(scheme.to_dict(), indent=2) + "\n")
            partial.rename(folders[name])
    return folders


def real_speech_windows(utterances: Sequence[Utterance], feature_extractor, windows: int = 4) -> np.ndarray:
    """Log-mel windows ``(windows, mels, 3000)`` of the real-speech utterances (``group`` starting with "real"),
    joined into 28 s windows in their order."""
    clips = [u.audio for u in utterances if (u.group or "").startswith("real")]
    packed = pack_clips(clips, 28.0, limit=windows)
    if not packed:
        raise ValueError("No real-speech utterances to build encoder windows from.")
    return feature_extractor(packed, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)


def encoder_error(reference: Callable[[np.ndarray], np.ndarray], other: Callable[[np.ndarray], np.ndarray],
                  features: np.ndarray) -> float:
    """``||other - reference|| / ||reference||`` of two encoders' outputs (``OnnxWhisper.encode`` and the like)
    over the windows ``features``, one window at a time."""
    squared_error = squared_norm = 0.0
    for window in features:
        expected = reference(window[None])
        got = other(window[None])
        squared_error += float(np.square(got - expected, dtype=np.float64).sum())
        squared_norm += float(np.square(expected, dtype=np.float64).sum())
    return float(np.sqrt(squared_error / squared_norm))


def select_per_group(utterances: Sequence[Utterance], max_per_group: int | None) -> list[Utterance]:
    """The first ``max_per_group`` utterances of every group, in the data's order (None: all)."""
    if max_per_group is None:
        return list(utterances)
    taken: dict[str | None, int] = {}
    chosen = []
    for u in utterances:
        if taken.get(u.group, 0) < max_per_group:
            taken[u.group] = taken.get(u.group, 0) + 1
            chosen.append(u)
    return chosen


def score_groups(utterances: Sequence[Utterance], texts: Sequence[str], normalizer) -> tuple[float, dict[str, float]]:
    """Corpus WER of all ``utterances`` and of each speaker group, as the evaluation reports them."""
    from ...evaluation.transcription import group_word_error_rates, score

    pairs, stats = score([u.text or "" for u in utterances], list(texts), normalizer)
    groups = group_word_error_rates([u.group for u in utterances], pairs)
    return stats.wer, {name: g.wer for name, g in groups.items()}


def _file_mb(path: Path) -> float:
    data = path.with_name(path.name + "_data")
    return (path.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 2**20


def compare_q8_schemes(
    models: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    schemes: Sequence[Q8Scheme] = tuple(Q8_SCHEMES.values()),
    data: str | os.PathLike | None = None,
    split: str | None = None,
    max_per_group: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = 128,
    threads: int | None = None,
    calibration: SpeechSource | None = None,
    calibration_windows: int = CALIBRATION_WINDOWS,
    error_windows: int = 4,
    report: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Export every model of ``models`` in fp32 and under every scheme (folders under ``output/<model name>/``),
    transcribe the same utterances of ``data`` (default: the shipped evaluation split, every speaker group; with
    ``max_per_group`` the first N of each group) with each, and return (and write to ``report``) the rows: WER per
    group, the change from the same model's fp32, the encoder's relative error on real-speech windows.
    ``max_new_tokens`` bounds a decoding that loops (the longest reference is far shorter)."""
    from transformers import WhisperTokenizer

    from ...data.suite import EVALUATION_MANIFEST
    from ...evaluation.reporting import library_versions, machine_info
    from ...evaluation.transcription import english_normalizer

    started = time.perf_counter()
    data = data or EVALUATION_MANIFEST
    utterances, failures = load_speech(data, split=split)
    utterances = select_per_group(utterances, max_per_group)
    if not utterances:
        raise ValueError(f"No usable utterances in {data}.")
    audios = [u.audio for u in utterances]
    rows: list[SchemeRow] = []
    for model in models:
        name = Path(str(model)).name
        folders = export_q8_variants(model, Path(output) / name, schemes, calibration, calibration_windows, log)
        reference = OnnxWhisper(folders[FP32], FP32, threads=threads)
        normalizer, _ = english_normalizer(WhisperTokenizer.from_pretrained(folders[FP32]))
        windows = real_speech_windows(utterances, reference.processor.feature_extractor, error_windows)
        baseline: SchemeRow | None = None
        for scheme in (FP32, *(s.name for s in schemes)):
            dtype = FP32 if scheme == FP32 else "q8"
            runner = reference if scheme == FP32 else OnnxWhisper(folders[scheme], dtype, threads=threads)
            error = 0.0 if scheme == FP32 else encoder_error(reference.encode, runner.encode, windows)
            if log:
                log(f"{name} {scheme}: encoder error {error:.4f}; transcribing {len(audios)} utterances")
            begin = time.perf_counter()
            texts = runner.transcribe(audios, batch_size=batch_size, max_new_tokens=max_new_tokens)
            seconds = time.perf_counter() - begin
            wer, groups = score_groups(utterances, texts, normalizer)
            onnx_dir = folders[scheme] / SUBFOLDER
            row = SchemeRow(
                model=str(model), scheme=scheme,
                encoder_mb=round(_file_mb(onnx_dir / runner.layout.file_name(ENCODER, dtype)), 2),
                decoder_mb=round(_file_mb(onnx_dir / runner.layout.file_name("decoder_model_merged", dtype)), 2),
                encoder_error=round(error, 5), wer=wer, groups=groups,
                delta_wer=round(wer - (baseline.wer if baseline else wer), 2),
                delta_groups={g: round(w - (baseline.groups[g] if baseline else w), 2) for g, w in groups.items()},
                n_utterances=len(utterances), seconds=round(seconds, 1))
            baseline = baseline or row
            rows.append(row)
            if log:
                log(f"  WER {wer:.2f} ({row.delta_wer:+.2f}); " + ", ".join(f"{g} {w:.2f}" for g, w in groups.items()))
    import onnxruntime
    import torch

    result = {
        "data": portable_data(data), "split": split, "max_per_group": max_per_group, "n_utterances": len(utterances),
        "failed": len(failures), "batch_size": batch_size, "max_new_tokens": max_new_tokens, "threads": threads,
        "calibration": {"data": portable_data(calibration.data) if calibration else "speaker mix (default)",
                        "windows": calibration_windows},
        "error_windows": error_windows,
        "schemes": [s.to_dict() for s in schemes],
        "rows": [asdict(r) for r in rows],
        "machine": machine_info(torch.device("cpu")), "onnxruntime": onnxruntime.__version__,
        **library_versions(),
        "seconds": round(time.perf_counter() - started, 1),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if report is not None:
        from ...evaluation.benchmark import write_report

        write_report(report, result)
    return result


def format_q8_comparison(report: Mapping) -> str:
    """:func:`compare_q8_schemes`'s report as Markdown: per model and scheme, the encoder's size and relative error,
    WER and its change from the same model in fp32, overall and per speaker group (real speech first)."""
    from ...evaluation.reporting import markdown_table

    rows = report["rows"]
    groups = sorted({g for r in rows for g in r.get("groups", {})}, key=lambda g: (g == "synthetic", g))
    table = [("model", "scheme", "encoder MB", "encoder error", "WER %", "change", *(f"change {g}" for g in groups))]
    for r in rows:
        deltas = r.get("delta_groups") or {}
        table.append((Path(r["model"]).name, r["scheme"], f"{r['encoder_mb']:.1f}", f"{r['encoder_error']:.3f}", f"{r['wer']:.2f}",
                      f"{r['delta_wer']:+.2f}", *(f"{deltas[g]:+.2f}" if g in deltas else "-" for g in groups)))
    per_group = f"the first {report['max_per_group']} of each speaker group" if report.get("max_per_group") else "all"
    split = f" ({report['split']})" if report.get("split") else ""
    note = (f"{report['n_utterances']} utterances ({per_group}) of {Path(str(report['data'])).name}{split}, greedy, at most {report['max_new_tokens']} new tokens; the "
            f"encoder error is |q8 - fp32| / |fp32| of the encoder's output on {report['error_windows']} windows of "
            "real speech; changes are against the same model in fp32.")
    return "\n".join([*markdown_table(table), "", note])

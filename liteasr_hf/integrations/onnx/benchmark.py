"""Timing and accuracy in ONNX Runtime, with faster-whisper (CTranslate2) beside it in the same run.

Models are exported folders named with their weight type, ``DIR`` or ``DIR:q8``; the first is the reference. The
encoders are timed as :func:`liteasr_hf.evaluation.benchmark.benchmark_encoders` times PyTorch's: batches of 30 s
inputs, every round running each model once in rotating order, medians after untimed warm-up rounds. End to end,
each system transcribes the same clips (features, greedy decoding, detokenization) and is scored with Whisper's
English normalizer: RTFx = audio seconds / compute seconds, as the Open ASR Leaderboard counts it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...atomic import atomic_write_text
from ...evaluation.intervals import wer_change_interval
from ...evaluation.reporting import iqr, markdown_table
from ...portable import portable_data
from ...records import read_jsonl
from .layout import DECODER, DTYPE_SUFFIXES, ENCODER, SUBFOLDER, OnnxLayout
from .runtime import PADDINGS, OnnxWhisper, session_options

FRAMES = 3000  # Whisper's 30 s of log-mel frames


def parse_system_spec(spec: str) -> tuple[Path, str, str]:
    """``DIR[:dtype][@padding]`` -> (folder, dtype, padding): the padding of short clips end to end (one of
    :data:`~.runtime.PADDINGS`; default ``audio``, as transformers pads)."""
    text, _, padding = str(spec).partition("@")
    padding = padding or "audio"
    if padding not in PADDINGS:
        raise ValueError(f"{spec}: unknown padding {padding!r}; write DIR[:TYPE][@PADDING] with PADDING one of "
                         f"{', '.join(PADDINGS)}.")
    return (*parse_model_spec(text), padding)


def parse_model_spec(spec: str) -> tuple[Path, str]:
    """``DIR`` or ``DIR:dtype`` -> (folder, dtype)."""
    if "@" in str(spec):
        raise ValueError(f"{spec}: a padding (@...) chooses how clips are transcribed, not an encoder to time.")
    folder, _, dtype = str(spec).rpartition(":") if ":" in str(spec) else (str(spec), "", "fp32")
    if dtype not in DTYPE_SUFFIXES:
        raise ValueError(f"{spec}: unknown weight type {dtype!r}; write DIR or DIR:TYPE with TYPE one of "
                         f"{', '.join(DTYPE_SUFFIXES)}.")
    if not (Path(folder) / SUBFOLDER).is_dir():
        raise FileNotFoundError(f"{folder} has no onnx/ folder: export it with liteasr export-onnx first.")
    return Path(folder), dtype


def _file_bytes(path: Path) -> int:
    data = path.with_name(path.name + "_data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


@dataclass
class OnnxEncoderRow:
    """One exported encoder at one batch size; ratios against the first model at the same batch size."""

    model: str
    dtype: str
    batch_size: int
    encoder_mb: float  # the ONNX file (and its external data)
    encoder_gflops: float  # one 30 s input, from the configuration (quantization does not change it)
    flop_reduction: float
    latency_ms: float
    latency_min_ms: float
    latency_iqr_ms: float
    speedup: float
    speedup_per_flop_reduction: float
    throughput: float  # audio seconds per second
    repeats: int


def benchmark_onnx_encoders(specs: Sequence[str], batch_sizes: Sequence[int] = (1,), repeats: int = 5,
                            warmup: int = 1, threads: int | None = None) -> list[OnnxEncoderRow]:
    """Time the encoder session of each ``DIR[:dtype]`` (the first is the reference)."""
    import onnxruntime as ort
    from transformers import AutoConfig

    from ...compression.cost import encoder_cost

    if not specs:
        raise ValueError("No models to benchmark.")
    if repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"repeats and batch sizes must be at least 1, got {repeats}, {list(batch_sizes)}.")
    names = list(dict.fromkeys(str(s) for s in specs))
    parsed = {name: parse_model_spec(name) for name in names}
    sessions, flops, sizes, mels = {}, {}, {}, {}
    for name in names:
        folder, dtype = parsed[name]
        config = AutoConfig.from_pretrained(folder)
        path = folder / SUBFOLDER / OnnxLayout.from_config(config).file_name(ENCODER, dtype)
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: export {folder} with --quantize {dtype}.")
        sessions[name] = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        flops[name] = encoder_cost(config).flops
        sizes[name] = _file_bytes(path)
        mels[name] = config.num_mel_bins
    warmup = max(warmup, 1)
    rows = []
    rng = np.random.default_rng(0)
    for batch_size in batch_sizes:
        inputs = {n: rng.standard_normal((batch_size, mels[n], FRAMES), dtype=np.float32) for n in names}
        times: dict[str, list[float]] = {n: [] for n in names}
        for round_ in range(warmup + repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                sessions[name].run(None, {"input_features": inputs[name]})
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
        reference = statistics.median(times[names[0]])
        for name in names:
            latency = statistics.median(times[name])
            reduction = flops[names[0]] / flops[name]
            rows.append(OnnxEncoderRow(
                model=str(parsed[name][0]), dtype=parsed[name][1], batch_size=batch_size,
                encoder_mb=sizes[name] / 2**20, encoder_gflops=flops[name] / 1e9, flop_reduction=reduction,
                latency_ms=1000 * latency, latency_min_ms=1000 * min(times[name]),
                latency_iqr_ms=1000 * iqr(times[name]), speedup=reference / latency,
                speedup_per_flop_reduction=reference / latency / reduction,
                throughput=batch_size * 30.0 / latency, repeats=repeats))
    return rows


@dataclass
class SystemRow:
    """One system transcribing the same clips: ONNX Runtime over an export, or faster-whisper."""

    system: str
    runtime: str  # onnxruntime | faster-whisper
    dtype: str  # weight type (ONNX file suffix, or CTranslate2 compute type)
    size_mb: float  # the files the system loads for its weights
    n_clips: int
    audio_seconds: float
    seconds: float  # median compute time over the repeats
    rtfx: float
    wer: float
    batch_size: int
    repeats: int
    padding: str = "audio"  # how a short clip fills its 30 s window (runtime.PADDINGS)
    wer_groups: dict[str, float] = field(default_factory=dict)  # WER per speaker group, real speech first
    long_outputs: int | None = None  # predictions over LONG_OUTPUT_RATIO x the reference's words (runaways)
    # per clip, in the clips' order: kept out of the report, written beside it (write_transcripts)
    predictions: list[str] = field(default_factory=list, repr=False)
    errors: list[int | None] = field(default_factory=list, repr=False)
    reference_words: list[int] = field(default_factory=list, repr=False)  # normalized, as WER counts them

    def summary(self) -> dict:
        """The row as the report stores it: without the per-clip texts and errors."""
        row = asdict(self)
        del row["predictions"], row["errors"], row["reference_words"]
        return row


def transcripts_path(report: str | os.PathLike) -> Path:
    """Where the per-clip transcripts of a report are written: ``x.json`` -> ``x.transcripts.jsonl``."""
    report = Path(report)
    return report.with_name(f"{report.stem}.transcripts.jsonl")


def write_transcripts(path: str | os.PathLike, utterances: Sequence, rows: Sequence[SystemRow]) -> Path:
    """One JSON line per clip: its id, group, reference and every system's prediction and word errors, so that two
    systems' WER can be traced to the clips it comes from. Written atomically."""
    lines = []
    for i, utterance in enumerate(utterances):
        systems = {row.system: {"prediction": row.predictions[i], "errors": row.errors[i]} for row in rows}
        lines.append(json.dumps({"id": utterance.id, "group": utterance.group,
                                 "speaker": getattr(utterance, "speaker", None), "reference": utterance.text,
                                 "reference_words": rows[0].reference_words[i] if rows else None,
                                 "systems": systems}, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def _read_transcripts(path: str | os.PathLike) -> list[dict]:
    return read_jsonl(path, "transcripts")


def clips_behind(path: str | os.PathLike, system: str, reference: str) -> list[dict]:
    """The clips of a transcripts file (:func:`write_transcripts`) where ``system`` makes more word errors than
    ``reference``, most first: ``id``, ``group``, both error counts and both predictions. Where one system's WER
    is behind another's, this says whether a few runaway clips or many small slips make the difference."""
    behind = []
    for clip in _read_transcripts(path):
        missing = [name for name in (system, reference) if name not in clip["systems"]]
        if missing:
            raise ValueError(f"{path} has no system {missing[0]!r}; it has {', '.join(clip['systems'])}.")
        ours, theirs = clip["systems"][system], clip["systems"][reference]
        if (ours["errors"] or 0) > (theirs["errors"] or 0):
            behind.append({"id": clip["id"], "group": clip["group"], "reference": clip["reference"],
                           "errors": ours["errors"], "reference_errors": theirs["errors"],
                           "prediction": ours["prediction"], "reference_prediction": theirs["prediction"]})
    return sorted(behind, key=lambda c: (c["reference_errors"] or 0) - c["errors"])


def clip_gaps(path: str | os.PathLike, reference: str, group_prefix: str = "real",
              against: Mapping[str, str] | None = None) -> list[dict]:
    """Every system of a transcripts file against ``reference`` (or, for the systems ``against`` names, against
    its own reference there; then only those), clip by clip, over the clips whose group starts with
    ``group_prefix`` ("": all): word errors, the clips where it makes more errors than its reference and how many
    more, the clips where it makes fewer and how many fewer, and the WER change with its 95% interval over speakers
    (:func:`wer_change_interval`; each clip its own speaker where the file names none). Says whether a WER gap is a
    few runaway clips or many small slips, and whether it is more than another draw of speakers would give."""
    clips = [c for c in _read_transcripts(path) if (c.get("group") or "").startswith(group_prefix)]
    if not clips:
        raise ValueError(f"{path} has no clip in a group starting with {group_prefix!r}.")
    systems = list(clips[0]["systems"])
    pairs = dict(against) if against else {system: reference for system in systems}
    for name in [*pairs, *pairs.values()]:
        if name not in systems:
            raise ValueError(f"{path} has no system {name!r}; it has {', '.join(systems)}.")
    words = [c["reference_words"] or 0 for c in clips]
    speakers = [c.get("speaker") or c["id"] for c in clips]
    rows = []
    for system, ref in pairs.items():
        diffs = [(c["systems"][system]["errors"] or 0) - (c["systems"][ref]["errors"] or 0) for c in clips]
        errors = sum(c["systems"][system]["errors"] or 0 for c in clips)
        low, high = wer_change_interval(diffs, words, speakers)
        rows.append({"system": system, "reference": ref, "clips": len(clips), "speakers": len(set(speakers)),
                     "words": sum(words), "errors": errors,
                     "wer": round(100 * errors / sum(words), 2) if sum(words) else float("nan"),
                     "wer_change": round(100 * sum(diffs) / sum(words), 2) if sum(words) else float("nan"),
                     "interval": (round(low, 2), round(high, 2)),
                     "clips_behind": sum(d > 0 for d in diffs), "errors_behind": sum(d for d in diffs if d > 0),
                     "clips_ahead": sum(d < 0 for d in diffs), "errors_ahead": -sum(d for d in diffs if d < 0),
                     "largest_gap": max(diffs)})
    return rows


def format_clip_gaps(rows: Sequence[Mapping], reference: str | None = None) -> str:
    """:func:`clip_gaps` as a Markdown table (``reference``'s own row marked; rows against several references get
    an "against" column)."""
    several = len({r["reference"] for r in rows}) > 1 or reference is None
    table = [("system", *(["against"] if several else []), "clips", "speakers", "words", "errors", "WER %",
              "WER change", "95% interval", "clips behind", "errors more", "clips ahead", "errors fewer",
              "largest gap on one clip")]
    for r in rows:
        name = Path(r["system"]).name  # an export's folder name, as the other tables show it
        head = [name, *([Path(r["reference"]).name] if several else []), str(r["clips"]), str(r["speakers"]),
                str(r["words"]), str(r["errors"]), f"{r['wer']:.2f}"]
        if r["system"] == r["reference"]:
            table.append((*head, "(reference)", "", "", "", "", "", ""))
            continue
        low, high = r["interval"]
        table.append((*head, f"{r['wer_change']:+.2f}", f"{low:+.2f} to {high:+.2f}", str(r["clips_behind"]),
                      f"+{r['errors_behind']}", str(r["clips_ahead"]), f"-{r['errors_ahead']}",
                      f"{r['largest_gap']:+d}"))
    return "\n".join(markdown_table(table))


def _faster_whisper_runner(source: str, compute_type: str, threads: int | None, cache: Path,
                           max_new_tokens: int | None = None):
    from faster_whisper import WhisperModel

    from ...checkpoints.ctranslate2_format import ctranslate2_folder

    folder = ctranslate2_folder(source, cache)
    model = WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=threads or 0,
                         num_workers=1)

    def run(audios: Sequence[np.ndarray]) -> list[str]:
        texts = []
        for audio in audios:
            # greedy, one temperature, no timestamps, no VAD, no fallbacks: the same decoding as ours
            segments, _ = model.transcribe(
                audio, language="en", task="transcribe", beam_size=1, best_of=1, temperature=0.0,
                without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                compression_ratio_threshold=None, log_prob_threshold=None, no_speech_threshold=None,
                max_new_tokens=max_new_tokens)
            texts.append("".join(s.text for s in segments).strip())
        return texts

    return run, (folder / "model.bin").stat().st_size


def _checkpoints(faster_whisper: str | os.PathLike | Sequence[str] | None) -> list[str]:
    if faster_whisper is None:
        return []
    if isinstance(faster_whisper, (str, os.PathLike)):
        return [str(faster_whisper)]
    return list(dict.fromkeys(str(c) for c in faster_whisper))


def benchmark_systems(
    specs: Sequence[str],
    utterances: Sequence,
    *,
    batch_size: int = 1,
    repeats: int = 1,
    threads: int | None = None,
    faster_whisper: str | Sequence[str] | None = None,
    compute_types: Sequence[str] = ("int8", "float32"),
    cache: str | os.PathLike = "models/ctranslate2",
    max_new_tokens: int | None = None,
    log: Callable[[str], None] | None = print,
) -> list[SystemRow]:
    """Transcribe ``utterances`` (with ``audio``, ``text`` and ``group``) with every ONNX ``DIR[:dtype]`` and, with
    ``faster_whisper`` (CTranslate2 folders or packaged aliases, one or several), with faster-whisper on each at
    each compute type;
    systems interleaved per repeat after one untimed pass over the first clip. Every system stops a clip after
    ``max_new_tokens`` tokens (None: at the decoder's length), so that a runaway costs each the same."""
    from transformers import WhisperTokenizer

    from ...evaluation.transcription import english_normalizer, group_word_error_rates, score

    audios = [u.audio for u in utterances]
    references = [u.text or "" for u in utterances]
    audio_seconds = sum(a.size for a in audios) / 16000
    runners: dict[str, tuple[str, str, float, Callable]] = {}
    paddings: dict[str, str] = {}
    for spec in specs:
        folder, dtype, padding = parse_system_spec(spec)
        model = OnnxWhisper(folder, dtype, threads=threads, padding=padding)
        size = sum(_file_bytes(folder / SUBFOLDER / model.layout.file_name(g, dtype)) for g in (ENCODER, DECODER))
        paddings[str(spec)] = padding
        runners[str(spec)] = ("onnxruntime", dtype, size,
                              lambda a, m=model: m.transcribe(list(a), batch_size=batch_size, language="en",
                                                              max_new_tokens=max_new_tokens))
    checkpoints = _checkpoints(faster_whisper)
    # a checkpoint is named by its folder's name, or by the path as given where two folders share a name
    short = [Path(c).name for c in checkpoints]
    labels = {c: (n if short.count(n) == 1 else c) for c, n in zip(checkpoints, short)}
    for checkpoint in checkpoints:
        for compute_type in compute_types:
            run, size = _faster_whisper_runner(checkpoint, compute_type, threads, Path(cache), max_new_tokens)
            name = f"faster-whisper {labels[checkpoint]}:{compute_type}"
            paddings[name] = "log-mel"  # openai's
            runners[name] = ("faster-whisper", compute_type, size, run)
    tokenizer = WhisperTokenizer.from_pretrained(parse_system_spec(specs[0])[0]) if specs else None
    normalizer, _ = english_normalizer(tokenizer)
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    texts: dict[str, list[str]] = {}
    for name in names:
        runners[name][3](audios[:1])  # warm-up
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if log:
                log(f"  transcribing with {name} (pass {round_ + 1}/{repeats})")
            start = time.perf_counter()
            texts[name] = runners[name][3](audios)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name in names:
        runtime, dtype, size, _ = runners[name]
        seconds = statistics.median(times[name])
        pairs, stats = score(references, texts[name], normalizer)
        groups = group_word_error_rates([u.group for u in utterances], pairs)
        rows.append(SystemRow(name, runtime, dtype, size / 2**20, len(audios), audio_seconds, seconds,
                              audio_seconds / seconds, stats.wer, batch_size if runtime == "onnxruntime" else 1,
                              repeats, padding=paddings[name], wer_groups={g: w.wer for g, w in groups.items()},
                              long_outputs=sum(p.long_output for p in pairs), predictions=list(texts[name]),
                              errors=[p.errors for p in pairs], reference_words=[p.reference_words for p in pairs]))
    return rows


def run_onnx_benchmark(
    specs: Sequence[str],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    data: str | os.PathLike | None = None,
    split: str | None = "evaluation",
    clips: int = 16,
    e2e_batch_size: int = 1,
    e2e_repeats: int = 1,
    faster_whisper: str | Sequence[str] | None = None,
    compute_types: Sequence[str] = ("int8", "float32"),
    cache: str | os.PathLike = "models/ctranslate2",
    max_new_tokens: int | None = None,
    output: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = print,
    command: str | None = None,
) -> dict:
    """Encoders, then (with ``data`` and ``clips > 0``) end-to-end transcription and WER of the first ``clips``
    utterances (0 < clips; None: all); returns the report and writes it as JSON to ``output``. ``command``, the
    command line that ran this, is recorded with the source commit."""
    from ...evaluation.benchmark import write_report
    from ...evaluation.reporting import library_versions, machine_info

    started = time.perf_counter()
    if log:
        log(f"ONNX Runtime encoders: batch sizes {list(batch_sizes)}, {max(warmup, 1)} warm-up + {repeats} rounds")
    # a padding changes the transcription only: each exported encoder is timed once
    encoders = list(dict.fromkeys(str(spec).partition("@")[0] for spec in specs))
    encoder_rows = benchmark_onnx_encoders(encoders, batch_sizes, repeats, warmup, threads)
    system_rows, utterances = [], []
    if data is not None and clips != 0:
        from ...data.speech import load_speech

        utterances, _ = load_speech(data, split=split, max_samples=clips)
        if not utterances:
            raise ValueError(f"No usable audio in {data} (split {split}).")
        if log:
            log(f"end to end: {len(utterances)} clips")
        system_rows = benchmark_systems(specs, utterances, batch_size=e2e_batch_size, repeats=e2e_repeats,
                                        threads=threads, faster_whisper=faster_whisper, compute_types=compute_types,
                                        cache=cache, max_new_tokens=max_new_tokens, log=log)
    import onnxruntime
    import torch

    report = {
        "runtime": "onnxruntime",
        "reference": encoders[0],
        "settings": {"threads": threads, "batch_sizes": list(batch_sizes), "repeats": repeats,
                     "warmup": max(warmup, 1), "e2e_data": portable_data(data) if system_rows else None,
                     "e2e_split": split if system_rows else None, "e2e_batch_size": e2e_batch_size,
                     "e2e_repeats": e2e_repeats, "max_new_tokens": max_new_tokens},
        "machine": machine_info(torch.device("cpu")),
        "encoder": [asdict(r) for r in encoder_rows],
        "systems": [r.summary() for r in system_rows],
        "onnxruntime": onnxruntime.__version__,
        "benchmark_seconds": round(time.perf_counter() - started, 1),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **library_versions(),
    }
    if _checkpoints(faster_whisper) and system_rows:
        import faster_whisper as fw

        report["faster_whisper"] = fw.__version__
    if command is not None:
        from ...evaluation.reporting import run_provenance

        recorded = run_provenance(command)
        report.update(command=recorded["command"], commit=recorded["commit"])
    if output is not None:
        if system_rows:
            write_transcripts(transcripts_path(output), utterances, system_rows)
        write_report(output, report)
    return report


def format_onnx_table(report: Mapping) -> str:
    """The report's encoder and end-to-end tables in Markdown."""
    systems = format_onnx_systems(report)
    return format_onnx_encoders(report) + ("\n\n" + systems if systems else "")


def format_onnx_encoders(report: Mapping) -> str:
    """The report's encoder table in Markdown."""
    rows = [("model", "weights", "batch", "encoder MB", "GFLOPs", "FLOP red.", "latency ms (IQR)", "speed-up",
             "speed-up / FLOP red.")]
    for r in report["encoder"]:
        rows.append((Path(r["model"]).name, r["dtype"], str(r["batch_size"]), f"{r['encoder_mb']:.1f}",
                     f"{r['encoder_gflops']:.2f}", f"{r['flop_reduction']:.2f}x",
                     f"{r['latency_ms']:.1f} ({r['latency_iqr_ms']:.1f})", f"{r['speedup']:.2f}x",
                     f"{r['speedup_per_flop_reduction']:.2f}"))
    settings = report["settings"]
    return "\n".join([f"ONNX Runtime {report['onnxruntime']} encoders (one run over a batch of 30 s inputs, "
                      f"{settings['threads'] or 'default'} threads):", *markdown_table(rows)])


def format_onnx_systems(report: Mapping) -> str:
    """The report's end-to-end table in Markdown (empty where the run transcribed nothing)."""
    systems = report.get("systems")
    if not systems:
        return ""
    groups = list(dict.fromkeys(g for r in systems for g in r.get("wer_groups") or {}))
    runaways = any(r.get("long_outputs") is not None for r in systems)
    padded = any("padding" in r for r in systems)
    rows = [("system", "runtime", "weights", *(("padding",) if padded else ()), "files MB", "clips", "audio s",
             "time s", "RTFx", *(f"WER {g}" for g in groups), "WER % (all)" if groups else "WER %",
             *(("runaways",) if runaways else ()))]
    for r in systems:
        by_group = r.get("wer_groups") or {}
        rows.append((Path(r["system"].split(":")[0].split("@")[0]).name if r["runtime"] == "onnxruntime"
                     else r["system"],
                     r["runtime"], r["dtype"], *((r.get("padding", "-"),) if padded else ()),
                     f"{r['size_mb']:.0f}", str(r["n_clips"]), f"{r['audio_seconds']:.1f}", f"{r['seconds']:.1f}",
                     f"{r['rtfx']:.1f}", *(f"{by_group[g]:.2f}" if g in by_group else "-" for g in groups),
                     f"{r['wer']:.2f}", *((str(r.get("long_outputs", "-")),) if runaways else ())))
    limit = report["settings"].get("max_new_tokens")
    return "\n".join(["End to end (features, greedy decoding, text; one clip at a time unless said"
                      + (f"; at most {limit} new tokens per clip" if limit else "") + "):", *markdown_table(rows)])

"""Speed of Whisper / LiteWhisper models, measured the way a comparison needs it: warm-up first, models
interleaved within each repeat, medians; encoder FLOPs beside the times, so that a measured speed-up can be
set against the FLOP reduction.

- :func:`benchmark_encoders`: one encoder forward pass over a batch of 30-second inputs (latency, throughput
  in audio seconds per second, peak memory), optionally under ``torch.compile``.
- :func:`benchmark_end_to_end`: transcription of real clips with ``generate`` (decoder included), as RTFx.
- :func:`run_benchmark`: both, for models named as the other scripts name them; writes one JSON report.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, ProcessorMixin

from ..atomic import atomic_write_text
from ..compression.cost import EncoderCost, encoder_cost
from ..data.audio import SAMPLING_RATE
from ..portable import portable_data
from .reporting import iqr, library_versions, machine_info, markdown_table, run_provenance
from .synthetic_models import describe, is_synthetic, synthetic_model

FRAME_SECONDS = 0.01  # one mel frame: Whisper's hop of 160 samples at 16 kHz


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_inputs(model: PreTrainedModel, batch_size: int, seed: int = 0) -> torch.Tensor:
    """Random log-mel features of shape ``(batch_size, num_mel_bins, 2 * max_source_positions)`` (30 s each)
    on the model's device and dtype; the encoder's cost does not depend on the values."""
    config = model.config
    shape = (batch_size, config.num_mel_bins, 2 * config.max_source_positions)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device=model.device, dtype=model.dtype)


def encoder_latency(
    models: Sequence[PreTrainedModel],
    batch_size: int = 1,
    repeats: int = 5,
    warmup: int = 1,
) -> list[float]:
    """Median seconds of one encoder forward pass (a batch of 30-second inputs) for each model.

    The models run in turn within each repeat, so a machine that is busier at one moment than another
    slows all of them alike; compare the results as ratios within one call.
    """
    inputs = [encoder_inputs(model, batch_size) for model in models]
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for round_ in range(warmup + repeats):
            for i, (model, features) in enumerate(zip(models, inputs)):
                elapsed = _timed(model.get_encoder(), features)
                if round_ >= warmup:
                    times[i].append(elapsed)
    return [statistics.median(t) for t in times]


def _timed(encoder: torch.nn.Module, features: torch.Tensor) -> float:
    _synchronize(features.device)
    start = time.perf_counter()
    encoder(features)
    _synchronize(features.device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# Peak memory of one forward pass
# ---------------------------------------------------------------------------------------------------------------


def forward_peak_bytes(encoder: torch.nn.Module, features: torch.Tensor) -> int:
    """Peak bytes allocated by PyTorch during one ``encoder(features)`` above what was allocated before it:
    activations and workspaces, not the weights or the input.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: the profiler's record of every allocation
    and free of PyTorch's CPU allocator (``profile_memory``), summed in time order; memory that a library
    allocates itself with ``malloc`` (oneDNN / MKL scratch space) is not seen. This is the quantity that
    differs between the models; the process's resident size would add the allocator's cached pages and the
    other models loaded beside it.
    """
    device = features.device
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            encoder(features)
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - before
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            encoder(features)
    # kineto_results keeps the "[memory]" events with their signed sizes (frees negative) and start times.
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Encoder benchmark
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class EncoderRow:
    """One model at one batch size. Ratios are against the first (reference) model, at the same batch size."""

    model: str
    batch_size: int
    encoder_params: int  # the position table included
    encoder_params_excluding_positions: int  # as the published lite-whisper tables count
    encoder_gflops: float  # one 30-second input (encoder_cost); the batch costs batch_size times this
    flop_reduction: float  # reference FLOPs / this model's FLOPs
    latency_ms: float  # median of one forward pass over the whole batch
    latency_min_ms: float
    latency_iqr_ms: float  # interquartile range of the repeats (0 with fewer than 2)
    speedup: float  # reference median latency / this model's
    speedup_per_flop_reduction: float  # 1: the FLOPs saved all show up as time saved
    throughput: float  # audio seconds per second: batch_size * 30 s / latency
    achieved_gflops_per_s: float
    peak_memory_mb: float | None  # encoder weights + forward_peak_bytes; None where not measured
    weights_mb: float
    compile_seconds: float | None  # first call minus the median: the compilation (None without compile)
    repeats: int


def _encoder_cost(model: PreTrainedModel) -> EncoderCost:
    """The encoder's parameters and FLOPs from its configuration (dense where there is no low_rank_config)."""
    return encoder_cost(model.config)


def benchmark_encoders(
    models: Mapping[str, PreTrainedModel],
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 5,
    warmup: int = 1,
    compile: bool = False,
    measure_memory: bool = True,
) -> list[EncoderRow]:
    """Time each model's encoder on batches of 30-second inputs; the first model is the reference.

    For each batch size, every round runs each model once, starting each round with the next model in
    turn, so that a moment of machine noise and the position in the round hit all models alike;
    ``warmup`` rounds (at least one) are not timed. ``compile``: each encoder is compiled in place
    (``nn.Module.compile``, so later calls, ``generate`` included, use it); the first warm-up call compiles,
    and ``compile_seconds`` is its time minus the median. Peak memory (encoder weights plus
    :func:`forward_peak_bytes`) is measured after all timings, in one extra forward pass per model and batch size.
    """
    if not models:
        raise ValueError("No models to benchmark.")
    if repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"repeats and batch sizes must be at least 1, got repeats={repeats}, "
                         f"batch_sizes={list(batch_sizes)}.")
    names = list(models)
    encoders = {name: model.get_encoder() for name, model in models.items()}
    if compile:
        for encoder in encoders.values():
            encoder.compile()
    costs = {name: _encoder_cost(model) for name, model in models.items()}
    warmup = max(warmup, 1)
    rows: list[EncoderRow] = []
    for batch_size in batch_sizes:
        inputs = {name: encoder_inputs(model, batch_size) for name, model in models.items()}
        first: dict[str, float] = {}
        times: dict[str, list[float]] = {name: [] for name in names}
        with torch.inference_mode():
            for round_ in range(warmup + repeats):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    elapsed = _timed(encoders[name], inputs[name])
                    first.setdefault(name, elapsed)
                    if round_ >= warmup:
                        times[name].append(elapsed)
        reference = names[0]
        ref_latency = statistics.median(times[reference])
        for name in names:
            latency = statistics.median(times[name])
            weights = weight_bytes(encoders[name])
            flops = costs[name].flops
            flop_reduction = costs[reference].flops / flops
            speedup = ref_latency / latency
            audio_seconds = batch_size * inputs[name].shape[-1] * FRAME_SECONDS
            rows.append(EncoderRow(
                model=name,
                batch_size=batch_size,
                encoder_params=sum(p.numel() for p in encoders[name].parameters()),
                encoder_params_excluding_positions=costs[name].params_excluding_positions,
                encoder_gflops=flops / 1e9,
                flop_reduction=flop_reduction,
                latency_ms=1000 * latency,
                latency_min_ms=1000 * min(times[name]),
                latency_iqr_ms=1000 * iqr(times[name]),
                speedup=speedup,
                speedup_per_flop_reduction=speedup / flop_reduction,
                throughput=audio_seconds / latency,
                achieved_gflops_per_s=batch_size * flops / 1e9 / latency,
                peak_memory_mb=None,
                weights_mb=weights / 2**20,
                compile_seconds=max(first[name] - latency, 0.0) if compile else None,
                repeats=repeats,
            ))
    if measure_memory:  # after all timings, so that the profiler cannot disturb any of them
        for row in rows:
            features = encoder_inputs(models[row.model], row.batch_size)
            peak = weight_bytes(encoders[row.model]) + forward_peak_bytes(encoders[row.model], features)
            row.peak_memory_mb = peak / 2**20
    return rows


# ---------------------------------------------------------------------------------------------------------------
# End-to-end transcription
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class EndToEndRow:
    """Transcription of the same clips by one model: feature extraction, ``generate`` and decoding."""

    model: str
    batch_size: int
    n_clips: int
    audio_seconds: float
    seconds: float  # median over the repeats of the time for all clips
    seconds_min: float
    rtfx: float  # audio_seconds / seconds
    speedup: float  # reference seconds / this model's
    repeats: int


def benchmark_end_to_end(
    models: Mapping[str, tuple[PreTrainedModel, ProcessorMixin]],
    audios: Sequence[np.ndarray],
    batch_size: int = 8,
    repeats: int = 3,
    warmup: int = 1,
    language: str | None = "en",
    max_new_tokens: int | None = None,
) -> list[EndToEndRow]:
    """Transcribe 16 kHz ``audios`` with each ``(model, processor)`` (greedy: the generation config's default),
    ``warmup`` untimed passes and then ``repeats`` timed ones, models interleaved as in
    :func:`benchmark_encoders`; the first model is the reference."""
    from .transcription import transcribe

    if not audios:
        raise ValueError("No audio to transcribe.")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            model, processor = models[name]
            result = transcribe(model, processor, audios, batch_size=batch_size, language=language,
                                max_new_tokens=max_new_tokens, warmup_batches=0, progress=False)
            if round_ >= warmup:
                times[name].append(result.compute_seconds)
    audio_seconds = sum(a.size for a in audios) / SAMPLING_RATE
    reference = statistics.median(times[names[0]])
    rows = []
    for name in names:
        seconds = statistics.median(times[name])
        rows.append(EndToEndRow(name, batch_size, len(audios), audio_seconds, seconds, min(times[name]),
                                audio_seconds / seconds, reference / seconds, repeats))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# A whole run: models by name, a JSON report, a table
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AttentionPathRow:
    """One self-attention layer with q, k and v at ``rank``, timed on both paths."""

    rank: int
    batch_size: int
    full_ms: float
    rank_space_ms: float
    measured_speedup: float  # full / rank_space time
    flop_ratio: float  # full / rank_space FLOPs, the cost model's estimate of that speed-up
    chosen: str  # the path the cost model picks (attention_path="auto")
    faster: str  # the path that measured faster


def benchmark_attention_paths(
    d_model: int = 512,
    num_heads: int = 8,
    tokens: int = 1500,
    ranks: Sequence[int] = (16, 32, 48, 64, 96, 128),
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[AttentionPathRow]:
    """Time one encoder self-attention layer (low-rank q, k, v at each rank; Whisper-base's width and
    heads by default) on the ``full`` and the ``rank_space`` path, interleaved, and set each measured
    speed-up beside the cost model's FLOP ratio and its choice: does ``auto`` pick the faster path?"""
    from ..models.lite_whisper.configuration_lite_whisper import LiteWhisperConfig
    from ..models.lite_whisper.modeling_lite_whisper import LiteWhisperAttention, attention_flops, select_attention_path

    rows = []
    device = torch.device(device)
    for rank in ranks:
        config = LiteWhisperConfig(
            d_model=d_model, encoder_attention_heads=num_heads, encoder_layers=1, max_source_positions=tokens,
            low_rank_config=[{"q_proj": rank, "k_proj": rank, "v_proj": rank}],
        )
        config._attn_implementation = "sdpa"
        fused = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        chosen = select_attention_path(config, 0, tokens, fused=fused)
        costs = attention_flops(d_model, num_heads, tokens, rank, rank, rank, one_head_size=not fused)
        attention = LiteWhisperAttention(config, 0).to(device=device, dtype=dtype).eval()
        for batch_size in batch_sizes:
            hidden = torch.randn(batch_size, tokens, d_model, generator=torch.Generator().manual_seed(0))
            hidden = hidden.to(device=device, dtype=dtype)
            times: dict[str, list[float]] = {"full": [], "rank_space": []}
            with torch.inference_mode():
                for round_ in range(max(warmup, 1) + repeats):
                    for path in times:
                        config.attention_path = path
                        elapsed = _timed(attention, hidden)
                        if round_ >= max(warmup, 1):
                            times[path].append(elapsed)
            full, rank_space = (statistics.median(times[p]) for p in ("full", "rank_space"))
            rows.append(AttentionPathRow(
                rank=rank, batch_size=batch_size, full_ms=full * 1e3, rank_space_ms=rank_space * 1e3,
                measured_speedup=full / rank_space, flop_ratio=costs["full"] / costs["rank_space"],
                chosen=chosen, faster="rank_space" if rank_space < full else "full",
            ))
    return rows


def format_attention_paths(rows: Sequence[AttentionPathRow]) -> str:
    """The sweep as a Markdown table."""
    table = [("rank", "batch", "full ms", "rank space ms", "measured speed-up", "FLOP ratio", "auto picks", "faster")]
    for r in rows:
        table.append((str(r.rank), str(r.batch_size), f"{r.full_ms:.1f}", f"{r.rank_space_ms:.1f}",
                      f"{r.measured_speedup:.2f}x", f"{r.flop_ratio:.2f}x", r.chosen, r.faster))
    return "\n".join(markdown_table(table))


def run_benchmark(
    models: Sequence[str | os.PathLike],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    measure_memory: bool = True,
    data: str | os.PathLike | None = None,
    split: str | None = "evaluation",
    e2e_clips: int = 16,
    e2e_batch_size: int = 8,
    e2e_repeats: int = 3,
    output: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    log: Callable[[str], None] | None = print,
    command: str | None = None,
) -> dict:
    """Load ``models`` (folders, Hub ids, packaged aliases, or random-weight ``shape:`` specs of
    :mod:`~liteasr_hf.evaluation.synthetic_models`; the first is the reference), benchmark their
    encoders and, where ``data`` is given and ``e2e_clips > 0``, their transcription of the first
    ``e2e_clips`` utterances of ``data``/``split``. Returns the report; writes it as JSON to ``output``.

    The thread count is the process's (``torch.set_num_threads`` before the call) and is recorded; so are
    ``command``, the command line that ran this, and the source commit, where a command is given.
    """
    from ..checkpoints.loading import load_model_and_processor

    names = [str(m) for m in models]
    if not names:
        raise ValueError("No models to benchmark.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Models named more than once: {', '.join(duplicates)}.")
    synthetic = [n for n in names if is_synthetic(n)]
    if synthetic and data is not None and e2e_clips > 0:
        raise ValueError(f"{', '.join(synthetic)}: random-weight models have no tokenizer and transcribe nothing; "
                         "time their encoders only (e2e_clips=0, --e2e-clips 0).")
    loaded = {}
    for name in names:
        if log:
            log(f"loading {name}")
        if is_synthetic(name):
            model = synthetic_model(name, device=device, dtype=dtype)
            if log:
                log(f"  random weights, {describe(model)}")
            loaded[name] = (model, None, name)
        else:
            loaded[name] = load_model_and_processor(name, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)

    audios: list[np.ndarray] = []
    if data is not None and e2e_clips > 0:
        from ..data.speech import load_speech

        utterances, _ = load_speech(data, split=split, max_samples=e2e_clips)
        if not utterances:
            raise ValueError(f"No usable audio in {data} (split {split}) for the end-to-end benchmark.")
        audios = [u.audio for u in utterances]

    started = time.perf_counter()
    if log:
        log(f"encoders: batch sizes {list(batch_sizes)}, {warmup} warm-up + {repeats} timed rounds")
    encoder_rows = benchmark_encoders({n: m for n, (m, _, _) in loaded.items()}, batch_sizes, repeats, warmup,
                                      compile=compile, measure_memory=measure_memory)
    e2e_rows = []
    if audios:
        if log:
            log(f"end to end: {len(audios)} clips, batch size {e2e_batch_size}, {e2e_repeats} timed passes")
        e2e_rows = benchmark_end_to_end({n: (m, p) for n, (m, p, _) in loaded.items()}, audios,
                                        batch_size=e2e_batch_size, repeats=e2e_repeats)
    report = {
        "reference": names[0],
        "models": [
            {"model": name, "model_path": _absolute(path), "model_type": model.config.model_type,
             "d_model": model.config.d_model, "encoder_attention_heads": model.config.encoder_attention_heads,
             "max_source_positions": model.config.max_source_positions,
             "random_weights": is_synthetic(name),
             "encoder_params": sum(p.numel() for p in model.get_encoder().parameters()),
             "encoder_flops": _encoder_cost(model).flops}
            for name, (model, _, path) in loaded.items()
        ],
        "settings": {
            "device": str(torch.device(device)), "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "compile": compile, "batch_sizes": list(batch_sizes),
            "repeats": repeats, "warmup": max(warmup, 1), "measure_memory": measure_memory,
            "e2e_data": None if not audios else portable_data(data), "e2e_split": split if audios else None,
            "e2e_clips": len(audios), "e2e_batch_size": e2e_batch_size if audios else None,
            "e2e_repeats": e2e_repeats if audios else None,
        },
        "machine": machine_info(torch.device(device)),
        "encoder": [asdict(r) for r in encoder_rows],
        "end_to_end": [asdict(r) for r in e2e_rows],
        "benchmark_seconds": round(time.perf_counter() - started, 1),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **library_versions(),
    }
    if command is not None:
        recorded = run_provenance(command, device)
        report.update(command=recorded["command"], commit=recorded["commit"])
    if output is not None:
        write_report(output, report)
    return report


def _absolute(path: str) -> str:
    """A local folder as an absolute path (so that reports written from anywhere can be matched); else as is."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def write_report(path: str | os.PathLike, report: Mapping) -> Path:
    """Write the report as JSON, atomically."""
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return Path(path)


def format_table(report: Mapping) -> str:
    """The encoder table (per model and batch size) and the end-to-end table of a report, in Markdown."""
    settings = report["settings"]
    header = ("model", "batch", "params M", "GFLOPs", "FLOP red.", "latency ms (IQR)", "speed-up", "speed-up / FLOP red.",
              "audio s/s", "peak MB")
    if settings.get("compile"):
        header += ("compile s",)
    rows = [header]
    for r in report["encoder"]:
        params = r.get("encoder_params_excluding_positions", r["encoder_params"])
        row = (Path(r["model"]).name or r["model"], str(r["batch_size"]), f"{params / 1e6:.2f}",
               f"{r['encoder_gflops']:.2f}",
               f"{r['flop_reduction']:.2f}x", f"{r['latency_ms']:.1f} ({r['latency_iqr_ms']:.1f})",
               f"{r['speedup']:.2f}x", f"{r['speedup_per_flop_reduction']:.2f}", f"{r['throughput']:.1f}",
               "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}")
        if settings.get("compile"):
            row += (f"{r['compile_seconds']:.1f}",)
        rows.append(row)
    lines = ["Encoder (one forward pass over a batch of 30 s inputs; GFLOPs per input; parameters without the "
             "position table, as the published lite-whisper tables count):", *markdown_table(rows)]
    others = [r for r in report["encoder"] if r["model"] != report["reference"]]
    if others:
        worst = min(others, key=lambda r: r["speedup_per_flop_reduction"])
        lines.append(f"Lowest speed-up / FLOP reduction: {worst['speedup_per_flop_reduction']:.2f} "
                     f"({Path(worst['model']).name}, batch {worst['batch_size']}).")
    if report.get("end_to_end"):
        rows = [("model", "clips", "batch", "audio s", "time s (min)", "RTFx", "speed-up")]
        for r in report["end_to_end"]:
            rows.append((Path(r["model"]).name or r["model"], str(r["n_clips"]), str(r["batch_size"]),
                         f"{r['audio_seconds']:.1f}", f"{r['seconds']:.2f} ({r['seconds_min']:.2f})",
                         f"{r['rtfx']:.1f}", f"{r['speedup']:.2f}x"))
        lines += ["", "End to end (features, generate with the decoder, decoding):", *markdown_table(rows)]
    machine = report.get("machine", {})
    lines.append(
        f"\n{settings['device']} ({machine.get('cpu', '?')}, {settings['threads']} threads), {settings['dtype']}, "
        f"torch.compile {'on' if settings.get('compile') else 'off'}; medians of {settings['repeats']} rounds "
        f"after {settings['warmup']} warm-up, models interleaved; reference {Path(report['reference']).name}. "
        "Peak MB: encoder weights + the most PyTorch held at once during one forward pass."
    )
    return "\n".join(lines)

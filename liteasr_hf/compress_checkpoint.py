"""From a Whisper checkpoint and calibration audio to a saved LiteWhisper folder, in one call."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .checkpoints import load_model_and_processor
from .benchmark import encoder_latency
from .compression import CompressionResult, compress
from .data import load_speech
from .evaluation import compare_models
from .export import save_model_folder
from .memory import RssPeak, peak_rss_mb
from .presets import default_preset, load_settings
from .rank_selection import RankPlan

DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "speech"


def compress_checkpoint(
    model: str | os.PathLike,
    output: str | os.PathLike,
    preset: str | None = None,
    calibration: str | os.PathLike = DEFAULT_CALIBRATION,
    calibration_split: str | None = "calibration",
    calibration_config: str | None = None,
    audio_column: str = "audio",
    num_samples: int | None = None,
    plan: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    **overrides,
) -> tuple[Path, CompressionResult]:
    """Compress ``model`` (folder, Hub id or packaged alias) and save the LiteWhisper folder to ``output``.

    The folder holds the weights, config (remote code and pipeline), code files, processor files,
    ``generation_config.json``, ``compression_report.json`` and ``rank_plan.json``; it is written under a
    temporary name and renamed at the end, so a failed or interrupted run leaves no partial folder.
    ``device_map`` (e.g. ``"auto"``, with ``max_memory`` per device) places a large model with accelerate:
    over several GPUs, or offloaded to CPU memory or disk (``offload_folder``, default a temporary folder),
    in which case each encoder layer is loaded when its turn comes;
    ``overrides`` are :class:`~liteasr_hf.compression.CompressionSettings` fields (``None`` ignored);
    ``command``, the command line that ran this, is recorded in the report (the model card shows it).
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite or choose another --output.")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        placement = {}
        if device_map is not None:
            if offload_folder is None:  # only used where the map sends weights to disk; removed at the end
                offload_folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="liteasr-offload-"))
            placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": str(offload_folder)}
        whisper, processor, resolved = load_model_and_processor(model, device=device, dtype=dtype, **placement)
        if getattr(whisper.config, "low_rank_config", None):
            raise ValueError(f"{model} is already a LiteWhisper model; compress the original Whisper checkpoint.")
        preset = preset or default_preset(whisper.config)
        settings = load_settings(preset, num_samples=num_samples, **overrides)
        rank_plan = RankPlan.load(plan, whisper.config) if plan is not None else None

        utterances, failures = load_speech(calibration, split=calibration_split, config=calibration_config,
                                           audio_column=audio_column, text_column=None)
        if not utterances:
            raise ValueError(f"No usable calibration audio in {calibration} (split {calibration_split}); "
                             f"{len(failures)} item(s) failed to load.")
        clips = [u.audio for u in utterances]

        with RssPeak() as memory:
            result = compress(whisper, clips, processor.feature_extractor, settings, plan=rank_plan, progress=progress)
        result.report.update({
            "source_model": _portable(model), "resolved_model": _portable(resolved),
            "calibration_data": {"data": _portable(calibration), "split": calibration_split, "failed": len(failures)},
            "device": str(device), "dtype": str(dtype).replace("torch.", ""), "preset": str(preset),
        })
        if command:
            result.report["command"] = command
        if getattr(whisper, "hf_device_map", None):  # where accelerate placed the weights: GPUs, cpu, disk
            result.report["placement"] = sorted({str(where) for where in whisper.hf_device_map.values()})
        result.report["total_seconds"] = round(time.perf_counter() - started, 1)
        result.report["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if memory.growth_mb is not None:  # what calibration and factorization needed beyond the loaded model
            result.report["compression_rss_growth_mb"] = round(memory.growth_mb, 1)
        extra = {"compression_report.json": result.report, "rank_plan.json": asdict(result.plan)}
        folder = save_model_folder(result.model, output, processor=processor, extra_files=extra, overwrite=overwrite)
        return folder, result


def _portable(source: str | os.PathLike) -> str:
    """A Hub id as it is; a local path relative to the working directory when inside it, else its last part:
    the report is published with the model, and absolute paths would say nothing useful about another machine."""
    path = Path(source)
    if not path.exists():
        return str(source)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return path.resolve().name


def compare_original_and_compressed(
    original: str | os.PathLike,
    compressed: str | os.PathLike,
    data: str | os.PathLike,
    split: str | None = "evaluation",
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8,
    output: str | os.PathLike | None = None,
) -> str:
    """Evaluate both models on ``data`` and time their encoders; return one Markdown table of encoder
    parameters, WER and encoder latency (batch 1, interleaved medians)."""
    # A quick look (batch 1, ten interleaved rounds); scripts/benchmark.py measures speed properly.
    models = [load_model_and_processor(m, device=device, dtype=dtype, trust_remote_code=True)[0]
              for m in (original, compressed)]
    latencies = encoder_latency(models, batch_size=1, repeats=10)
    del models
    summaries = compare_models([str(original), str(compressed)], data, split=split, device=device, dtype=dtype,
                               batch_size=batch_size, output=output, progress=True, show=False)
    rows = [("model", "encoder params", "WER %", "outputs > 3x ref", "encoder latency")]
    for summary, latency in zip(summaries, latencies):
        share = summary["encoder_params"] / summaries[0]["encoder_params"]
        speedup = latencies[0] / latency
        rows.append((Path(str(summary["model"])).name, f"{summary['encoder_params'] / 1e6:.2f}M ({share:.1%})",
                     f"{summary['wer']:.2f}", str(summary["n_long_outputs"]), f"{latency * 1000:.0f} ms ({speedup:.2f}x)"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)

"""The table a compression run ends with: the original and the compressed model side by side."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoints.loading import load_model_and_processor
from ..data.speech import SHIPPED_SPEECH_SET, SpeechSource
from .benchmark import encoder_latency
from .transcription import compare_models


def compare_original_and_compressed(
    original: str | os.PathLike,
    compressed: str | os.PathLike,
    data: SpeechSource = SpeechSource(SHIPPED_SPEECH_SET, split="evaluation"),
    *,
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
    summaries = compare_models([str(original), str(compressed)], data.data, split=data.split, config=data.config,
                               text_column=data.text_column, audio_column=data.audio_column, device=device, dtype=dtype,
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

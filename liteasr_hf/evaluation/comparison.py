"""The table a compression run ends with: the original and the compressed model side by side."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoints.loading import load_model_and_processor
from ..data.speech import SpeechSource
from ..data.suite import EVALUATION_MANIFEST
from .benchmark import encoder_latency
from .transcription import ENCODER_SIZE_HEADERS, changes_against_first, compare_models, encoder_size_cells


def compare_original_and_compressed(
    original: str | os.PathLike,
    compressed: str | os.PathLike,
    data: SpeechSource = SpeechSource(EVALUATION_MANIFEST),
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    output: str | os.PathLike | None = None,
) -> str:
    """Evaluate both models on ``data`` and time their encoders; return one Markdown table of encoder
    parameters, WER per speaker group (real speech first) and overall, and encoder latency (batch 1, interleaved
    medians), and, with ``output``, the compressed model's change per real group with its 95% interval over speakers."""
    # A quick look (batch 1, ten interleaved rounds); liteasr benchmark measures speed properly.
    models = [load_model_and_processor(m, device=device, dtype=dtype)[0]
              for m in (original, compressed)]
    latencies = encoder_latency(models, batch_size=1, repeats=10)
    del models
    summaries = compare_models([str(original), str(compressed)], data.data, split=data.split, config=data.config,
                               text_column=data.text_column, audio_column=data.audio_column, device=device, dtype=dtype,
                               batch_size=batch_size, max_new_tokens=max_new_tokens, output=output, progress=True,
                               show=False)
    groups = list(summaries[0].groups)
    rows = [("model", *ENCODER_SIZE_HEADERS, *(f"WER {g}" for g in groups), "WER % (all)" if groups else "WER %",
             "outputs > 3x ref", "encoder latency")]
    for summary, latency in zip(summaries, latencies):
        speedup = latencies[0] / latency
        by_group = [f"{summary.groups[g].wer:.2f}" if g in summary.groups else "-" for g in groups]
        rows.append((Path(str(summary.model)).name, *encoder_size_cells(summary, summaries[0]), *by_group,
                     f"{summary.wer:.2f}", str(summary.n_long_outputs), f"{latency * 1000:.0f} ms ({speedup:.2f}x)"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if output is not None:  # how sure each change is: clip by clip from the records just written
        lines += ["", changes_against_first(summaries, Path(output))]
    return "\n".join(lines)

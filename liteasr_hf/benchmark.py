"""Encoder latency, measured the way a comparison needs it: warm-up first, models interleaved, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    inputs = []
    for model in models:
        config = model.config
        frames = 2 * config.max_source_positions
        inputs.append(torch.randn(batch_size, config.num_mel_bins, frames, generator=torch.Generator().manual_seed(0))
                      .to(device=model.device, dtype=model.dtype))
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for round_ in range(warmup + repeats):
            for i, (model, features) in enumerate(zip(models, inputs)):
                encoder = model.get_encoder()
                _synchronize(model.device)
                start = time.perf_counter()
                encoder(features)
                _synchronize(model.device)
                if round_ >= warmup:
                    times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]

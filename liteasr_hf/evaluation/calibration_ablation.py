"""The calibration ablation: one Whisper at one encoder size, calibrated on each ingredient of the default mix in turn
(the synthetic voices alone, the real speakers alone, the real speakers with augmented copies, everything), every
model evaluated on the same speech in one run, WER per speaker group.

It answers which ingredient of the calibration audio helps the real speaker groups; no healing runs, so the ranks and
factors are all that differ.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..checkpoints.loading import load_model_and_processor
from ..compression.checkpoint import compress_checkpoint
from ..data.augmentation import DEFAULT_AUGMENTATIONS
from ..data.speech import SpeechSource
from ..data.suite import DEVELOPMENT, MIX_SOURCES, MIX_WITH_READERS_SOURCES, build_speaker_mix
from .ablation import evaluate_variant, evaluation_groups, format_ablation
from .reporting import run_provenance
from .transcription import english_normalizer

_REAL = MIX_SOURCES["speechocean762"]
_SYNTHETIC = MIX_SOURCES["synthetic"]
#: name -> (sources, augment): what each variant calibrates on.
INGREDIENTS: dict[str, tuple[dict[str, SpeechSource], bool]] = {
    "synthetic voices": ({"synthetic": _SYNTHETIC}, False),
    "real speakers": ({"speechocean762": _REAL}, False),
    "real + augmented": ({"speechocean762": _REAL}, True),
    "mix (default)": (MIX_SOURCES, True),
    "mix + LibriSpeech readers": (MIX_WITH_READERS_SOURCES, True),
}


def variant_slug(name: str) -> str:
    """A variant's name as a folder and command-line name: ``real + augmented`` -> ``real-augmented``."""
    return name.split(" (")[0].replace(" + ", "-").replace(" ", "-").lower()


def run_calibration_ablation(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    budget: float,
    preset: str | None = None,
    variants: tuple[str, ...] = tuple(INGREDIENTS),
    evaluations: dict[str, SpeechSource] | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    **overrides,
) -> dict:
    """Compress ``model`` to ``budget`` once per calibration ingredient in ``variants`` (unhealed), evaluate the
    original and every variant on ``evaluations`` (default: the development speakers, whom no calibration hears),
    write ``ablation.json`` and ``ablation.md`` to ``output`` and return the report. ``overrides`` go to
    :func:`~liteasr_hf.compression.checkpoint.compress_checkpoint` (e.g. ``num_samples``)."""
    unknown = set(variants) - set(INGREDIENTS)
    if unknown:
        raise ValueError(f"Unknown variant(s) {sorted(unknown)}; choose from {', '.join(INGREDIENTS)}.")
    output = Path(output)
    if (output / "ablation.json").exists() and not overwrite:
        raise FileExistsError(f"{output / 'ablation.json'} already exists; pass overwrite=True (--overwrite).")
    output.mkdir(parents=True, exist_ok=True)
    folders, seconds = {}, {}
    for name in variants:
        sources, augment = INGREDIENTS[name]
        slug = variant_slug(name)
        audio = output / "calibration" / slug
        if not (audio / "calibration" / "metadata.jsonl").is_file():
            build_speaker_mix(audio, sources, augmentations=DEFAULT_AUGMENTATIONS if augment else (),
                              overwrite=audio.exists(), progress=progress)
        start = time.perf_counter()
        folders[name], _ = compress_checkpoint(model, output / slug, preset=preset, budget=budget, healing=False,
                                               calibration=SpeechSource(audio, split="calibration", text_column=None),
                                               overwrite=overwrite, progress=progress, **overrides)
        seconds[name] = round(time.perf_counter() - start, 1)
    groups = evaluation_groups(evaluations or {"development": DEVELOPMENT}, progress=progress)
    _, processor, _ = load_model_and_processor(model)
    normalizer, _ = english_normalizer(processor.tokenizer)
    options = dict(device=device, batch_size=batch_size, progress=progress, max_new_tokens=max_new_tokens)
    results = {"original": evaluate_variant(model, groups, normalizer, **options)}
    for name, folder in folders.items():
        results[name] = {**evaluate_variant(folder, groups, normalizer, **options), "seconds": seconds[name]}
    report = {"model": str(model), "budget": budget, "preset": preset, "max_new_tokens": max_new_tokens,
              "evaluation": {name: len(group) for name, group in groups.items()},
              "threads": torch.get_num_threads(), "results": results}
    if command is not None:  # the command line that ran this, the date, the machine and the commit
        report.update(run_provenance(command, device))
    atomic_write_text(output / "ablation.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(output / "ablation.md", format_ablation(report) + "\n")
    return report

"""The healing ablation: one Whisper at one encoder size, compressed by the paper's recipe and by ours, then healed
block-wise and block-wise plus end to end, every variant evaluated on the same speech in one run.

WER is reported on the whole evaluation split and, where the data says which clips are real recordings (the shipped
set's ``engine`` column), on the synthetic voices and the real recordings apart: a gain that holds only on synthetic
speech is no gain.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..checkpoints.loading import load_model_and_processor
from ..compression.checkpoint import compress_checkpoint, heal_checkpoint
from ..compression.settings import HealSettings
from ..data.speech import SpeechSource
from ..data.suite import EVALUATION_MANIFEST
from ..data.speech_set import read_metadata
from .reporting import run_provenance
from .transcription import encoder_parameters, english_normalizer, score, transcribe

VARIANTS = ("paper", "ours", "ours+block", "ours+block+e2e")


def real_recording_ids(source: SpeechSource) -> set[str]:
    """Ids of the clips whose ``engine`` is ``recording`` in a local audiofolder's metadata (empty otherwise)."""
    folder = Path(source.data) / (source.split or "")
    if not (folder / "metadata.jsonl").is_file():
        return set()
    rows = read_metadata(folder)
    return {row.get("id", Path(row["file_name"]).stem) for row in rows if row.get("engine") == "recording"}


def _wer(pairs, stats) -> dict:
    return {"wer": stats.wer, "errors": stats.errors, "reference_words": stats.reference_words,
            "utterances": stats.n_scored, "long_outputs": sum(p.long_output for p in pairs)}


def evaluation_groups(evaluations: dict[str, SpeechSource], progress: bool = True) -> dict[str, list]:
    """The utterances of each evaluation set, and its parts: by speaker group where its rows name one (``<group>``,
    real speech first), else, where its recordings are marked, ``<name> synthetic`` and ``<name> real``."""
    groups: dict[str, list] = {}
    for name, source in evaluations.items():
        utterances, failures = source.load(progress=progress)
        if failures:
            raise ValueError(f"{len(failures)} clip(s) of {source.data} failed to load: {failures[0]}")
        named = sorted({u.group for u in utterances if u.group}, key=lambda g: (not g.startswith("real"), g))
        for group in named:
            groups[group] = [u for u in utterances if u.group == group]
        groups[name] = utterances
        if named:
            continue
        real_ids = real_recording_ids(source)
        if real_ids and len(real_ids) < len(utterances):
            groups[f"{name} synthetic"] = [u for u in utterances if u.id not in real_ids]
            groups[f"{name} real"] = [u for u in utterances if u.id in real_ids]
    return groups


def evaluate_variant(model: str | os.PathLike, groups: dict[str, list], normalizer, *, device: str = "cpu",
                     batch_size: int = 8, progress: bool = True, max_new_tokens: int | None = None) -> dict:
    """WER of ``model`` on each group of utterances (every utterance transcribed once); encoder parameters."""
    whisper, processor, _ = load_model_and_processor(model, device=device)
    unique = {id(u): u for group in groups.values() for u in group}
    transcription = transcribe(whisper, processor, [u.audio for u in unique.values()], batch_size=batch_size,
                               progress=progress, max_new_tokens=max_new_tokens)
    texts = dict(zip(unique, transcription.texts))
    result = {"encoder_params": encoder_parameters(whisper, positions=False), "wer": {}}
    for name, group in groups.items():
        result["wer"][name] = _wer(*score([u.text for u in group], [texts[id(u)] for u in group], normalizer))
    result["predictions"] = {u.id: texts[key] for key, u in unique.items()}
    del whisper
    return result


def default_evaluations() -> dict[str, SpeechSource]:
    """Every shipped evaluation split (:data:`~liteasr_hf.data.suite.EVALUATION_MANIFEST`), by speaker group."""
    return {"all": SpeechSource(EVALUATION_MANIFEST)}


def run_healing_ablation(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    budget: float,
    preset: str | None = None,
    variants: tuple[str, ...] = VARIANTS,
    heal: HealSettings | None = None,
    healing_audio: SpeechSource | None = None,
    evaluations: dict[str, SpeechSource] | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    **overrides,
) -> dict:
    """Compress ``model`` to ``budget`` of its encoder parameters in each of ``variants``, evaluate the original and
    every variant on ``evaluations`` (default: :func:`default_evaluations`), and write ``ablation.json`` and
    ``ablation.md`` to ``output``.

    ``paper``: the paper's recipe (the ``paper`` preset: one-shot, no outlier directions) at the same budget.
    ``ours``: ``preset`` (default: by model size) at the budget, not healed. ``ours+block``: that model healed
    block-wise only; ``ours+block+e2e``: healed with ``heal`` (default :class:`HealSettings`), going on from
    ``ours+block`` when that is made (its cost then counts both). The model folders are
    kept under ``output``; ``overrides`` go to :func:`~liteasr_hf.compression.checkpoint.compress_checkpoint` (e.g.
    ``num_samples``). Returns the report.
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"Unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}.")
    output = Path(output)
    if (output / "ablation.json").exists() and not overwrite:
        raise FileExistsError(f"{output / 'ablation.json'} already exists; pass overwrite=True (--overwrite).")
    output.mkdir(parents=True, exist_ok=True)
    heal = heal or HealSettings()
    folders: dict[str, Path] = {}
    costs: dict[str, dict] = {}

    def timed(name: str, make) -> None:
        start = time.perf_counter()
        folder, healing = make()
        folders[name] = Path(folder)
        costs[name] = {"seconds": round(time.perf_counter() - start, 1)}
        if healing is not None:
            costs[name].update(heal_seconds=healing.seconds, heal_peak_memory_bytes=healing.peak_memory_bytes,
                               stages=[stage.to_dict() for stage in healing.stages])

    if "paper" in variants:
        timed("paper", lambda: (compress_checkpoint(model, output / "paper", preset="paper", budget=budget,
                                                    healing=False, overwrite=overwrite, progress=progress,
                                                    **overrides)[0], None))
    if {"ours", "ours+block", "ours+block+e2e"} & set(variants):
        timed("ours", lambda: (compress_checkpoint(model, output / "ours", preset=preset, budget=budget,
                                                   healing=False, overwrite=overwrite, progress=progress,
                                                   **overrides)[0], None))
    block_only = dataclasses.replace(heal, steps=0)
    if "ours+block" in variants and heal.block_steps > 0:
        timed("ours+block", lambda: heal_checkpoint(output / "ours", output / "ours-block", teacher=model,
                                                    audio=healing_audio, settings=block_only, overwrite=overwrite,
                                                    progress=progress))
    if "ours+block+e2e" in variants:
        # Healing is block-wise then end to end: when the block-wise model is there, go on from it.
        start, settings = ("ours+block", dataclasses.replace(heal, block_steps=0)) if (
            "ours+block" in folders and heal.steps > 0) else ("ours", heal)
        timed("ours+block+e2e", lambda: heal_checkpoint(
            folders[start], output / "ours-block-e2e", teacher=model, audio=healing_audio, settings=settings,
            overwrite=overwrite, progress=progress))
        if start == "ours+block":
            first, total = costs["ours+block"], costs["ours+block+e2e"]
            total.update(heal_seconds=round(first["heal_seconds"] + total["heal_seconds"], 1),
                         heal_peak_memory_bytes=max(first["heal_peak_memory_bytes"], total["heal_peak_memory_bytes"]),
                         stages=first["stages"] + total["stages"],
                         seconds=round(first["seconds"] + total["seconds"], 1))

    groups = evaluation_groups(evaluations or default_evaluations(), progress=progress)
    _, processor, _ = load_model_and_processor(model)
    normalizer, _ = english_normalizer(processor.tokenizer)
    results = {"original": evaluate_variant(model, groups, normalizer, device=device, batch_size=batch_size,
                                            progress=progress)}
    for name in VARIANTS:
        if name in folders and name in variants:
            results[name] = evaluate_variant(folders[name], groups, normalizer, device=device, batch_size=batch_size,
                                             progress=progress)
            results[name].update(costs[name])
    report = {"model": str(model), "budget": budget, "preset": preset, "heal": dataclasses.asdict(heal),
              "evaluation": {name: len(group) for name, group in groups.items()},
              "threads": torch.get_num_threads(), "results": results}
    if command is not None:  # the command line that ran this, the date, the machine and the commit
        report.update(run_provenance(command, device))
    atomic_write_text(output / "ablation.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(output / "ablation.md", format_ablation(report) + "\n")
    return report


def format_ablation(report: dict) -> str:
    """One Markdown table: each variant's encoder size, WER on every evaluation group, long outputs (on all groups
    together, each utterance once), healing cost."""
    results = report["results"]
    reference = results["original"]["encoder_params"]
    names = list(report["evaluation"])
    rows = [("variant", "encoder params", *(f"WER {n} ({report['evaluation'][n]})" for n in names),
             "outputs > 3x ref", "healing")]
    top = [n for n in names if " " not in n]  # whole sets, not their parts (every part's name has a space)
    for name, r in results.items():
        healing = (f"{r['heal_seconds'] / 60:.1f} min, {r['heal_peak_memory_bytes'] / 2**30:.1f} GiB peak"
                   if "heal_seconds" in r else "-")
        rows.append((name, f"{r['encoder_params'] / 1e6:.2f}M ({r['encoder_params'] / reference:.1%})",
                     *(f"{r['wer'][n]['wer']:.2f}" for n in names), str(sum(r["wer"][n]["long_outputs"] for n in top)),
                     healing))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)

"""From a Whisper checkpoint and calibration audio to a saved LiteWhisper folder, in one call."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from ..atomic import check_distinct
from ..checkpoints.loading import load_model_and_processor
from ..checkpoints.placement import Placement
from ..checkpoints.saving import save_model_folder
from ..data.speech import SHIPPED_SPEECH_SET, LoadFailure, SpeechSource, Utterance
from ..data.suite import DEVELOPMENT, speaker_mix
from ..parallel import Processes
from ..portable import portable_command, portable_path
from .compressor import CompressionResult, compress
from .healing import heal
from .settings import HealSettings
from .memory import RssPeak, peak_rss_mb
from .presets import PRESET_DIR, default_preset, load_settings
from .rank_selection import RankPlan, check_budget_reachable
from .report import CompressionReport, HealingReport, SpeechData

#: The shipped synthetic voices' calibration split alone, audio only (the default before real speakers were shipped).
SYNTHETIC_CALIBRATION = SpeechSource(SHIPPED_SPEECH_SET, split="calibration", text_column=None)


def compress_checkpoint(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    preset: str | os.PathLike | None = None,
    calibration: SpeechSource | None = None,
    placement: Placement = Placement(),
    plan: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    healing: bool | None = None,
    healing_audio: SpeechSource | None = None,
    healing_holdout: SpeechSource | None = None,
    processes: Processes | None = None,
    **overrides,
) -> tuple[Path, CompressionResult]:
    """Compress ``model`` (folder, Hub id or packaged alias) and save the LiteWhisper folder to ``output``.

    ``preset`` names a file in ``configs/`` or is a YAML path (default: by model size); ``calibration`` is the
    audio to calibrate on (default: :func:`~liteasr_hf.data.suite.speaker_mix` of the settings' ``calibration_mix``,
    real speakers of every group, their augmented copies and the synthetic voices, built on first use); ``placement``
    where the model runs (device and dtype, or an accelerate ``device_map`` over GPUs, CPU memory and disk, in which
    case each encoder layer is loaded when its turn comes); ``plan`` a ``rank_plan.json`` whose ranks are re-applied;
    ``overrides`` are :class:`~liteasr_hf.compression.CompressionSettings` fields (``None`` ignored), e.g.
    ``num_samples`` or ``budget``; ``command``, the command line that ran this, is recorded in the report (the
    model card shows it). ``healing``: distil the factors against the dense model afterwards
    (:func:`~liteasr_hf.compression.healing.heal`) with the preset's ``heal`` settings (``None``: when the preset
    has them; ``True``: with defaults where it has none; ``False``: never), on ``healing_audio`` (default: the
    calibration mix), stopping on ``healing_holdout`` (default with the default audio: the development speakers,
    whom neither calibration nor evaluation hears; else a share of ``healing_audio``). ``processes``: the processes of a
    data-parallel run (:func:`liteasr_hf.parallel.process_group`), each calling this with the same arguments; they
    share the calibration windows, and only the main one writes, once all have finished.

    The folder holds the weights, config (remote code and pipeline), code files, processor files,
    ``generation_config.json``, ``compression_report.json`` and ``rank_plan.json``; it is written under a
    temporary name and renamed at the end, so a failed or interrupted run leaves no partial folder.
    """
    output = Path(output)
    check_distinct(output, model)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite or choose another --output.")
    processes = processes or Processes()
    if processes.distributed and placement.device_map is not None:
        raise ValueError("A device_map (--device-map) spreads one model over devices; with several processes each "
                         "holds the whole model: drop --device-map, or run one process.")
    started = time.perf_counter()
    with placement.loading_kwargs() as loading:
        with processes.main_first():  # a packaged checkpoint is converted into a cache once, by the main process
            whisper, processor, resolved = load_model_and_processor(model, device=placement.device,
                                                                    dtype=placement.dtype, **loading)
        if getattr(whisper.config, "low_rank_config", None):
            raise ValueError(f"{model} is already a LiteWhisper model; compress the original Whisper checkpoint.")
        preset = preset or default_preset(whisper.config)
        settings = load_settings(preset, **overrides)
        rank_plan = RankPlan.load(plan, whisper.config) if plan is not None else None
        if rank_plan is None and settings.budget is not None:  # before the calibration, not after it
            check_budget_reachable(whisper.config, settings.budget, settings.budget_measure, settings.rank_multiple,
                                   settings.modules)

        with processes.main_first():  # a datasets name is downloaded and cached once; the mix is built once
            calibration = calibration or speaker_mix(progress=progress and processes.is_main,
                                                     mix=settings.calibration_mix)
            rows = calibration.stream()
        # Decoded as calibration packs them: rows beyond the windows it needs (settings.num_samples) are never read.
        failures: list[LoadFailure] = []
        clips = _audio_of(rows, failures)
        first = next(clips, None)
        if first is None:
            raise ValueError(f"No usable calibration audio in {calibration.data} (split {calibration.split}); "
                             f"{len(failures)} item(s) failed to load.")
        clips = itertools.chain([first], clips)

        with RssPeak() as memory:
            result = compress(whisper, clips, processor.feature_extractor, settings, plan=rank_plan,
                              progress=progress, processes=processes)
        report = result.report
        report.source_model, report.resolved_model = portable_path(model), portable_path(resolved)
        report.calibration_data = SpeechData(data=portable_path(calibration.data), split=calibration.split,
                                             failed=len(failures))
        report.device, report.dtype, report.preset = str(placement.device), placement.dtype_name, _preset_label(preset)
        heal_settings = None if healing is False else settings.heal or (HealSettings() if healing else None)
        if heal_settings is not None:
            with processes.main_first():  # the mix is built on first use, once
                audio = healing_audio or speaker_mix(progress=progress and processes.is_main)
            holdout = healing_holdout or (DEVELOPMENT if healing_audio is None else None)
            report.healing = _heal(result, model, placement, loading, processor, heal_settings, audio, holdout,
                                   progress and processes.is_main, processes)
        if command:
            report.command = portable_command(command)
        if getattr(whisper, "hf_device_map", None):  # where accelerate placed the weights: GPUs, cpu, disk
            report.placement = sorted({str(where) for where in whisper.hf_device_map.values()})
        report.total_seconds = round(time.perf_counter() - started, 1)
        report.peak_rss_mb = round(peak_rss_mb(), 1)
        if memory.growth_mb is not None:  # what calibration and factorization needed beyond the loaded model
            report.compression_rss_growth_mb = round(memory.growth_mb, 1)
        extra = {"compression_report.json": report.to_json(), "rank_plan.json": asdict(result.plan)}
        # Every process has finished before anything is written: one that failed never reaches the barrier, and
        # the launcher stops the others while they wait. The rest wait for the folder, so it exists on return.
        processes.barrier()
        folder = output.resolve()
        if processes.is_main:
            folder = save_model_folder(result.model, output, processor=processor, extra_files=extra,
                                       overwrite=overwrite)
        processes.barrier()
        return folder, result


def heal_checkpoint(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    teacher: str | os.PathLike | None = None,
    audio: SpeechSource | None = None,
    holdout: SpeechSource | None = None,
    settings: HealSettings | None = None,
    placement: Placement = Placement(),
    overwrite: bool = False,
    progress: bool = True,
    processes: Processes | None = None,
    command: str | None = None,
) -> tuple[Path, HealingReport]:
    """Heal an existing LiteWhisper folder or Hub id and save the result to ``output``; returns it and the report.

    ``teacher`` is the dense Whisper it was compressed from (default: the ``source_model`` its
    ``compression_report.json`` names); ``audio`` the speech to heal on (default: the calibration mix) and
    ``holdout`` the speech to stop on (default with the default audio: the development speakers). The output
    is the input folder's layout with healed factors and the
    healing report added to ``compression_report.json``; it appears only when complete. ``processes``: the processes
    of a data-parallel run, each calling this with the same arguments (see :func:`heal`); only the main one writes.
    ``command``: the command line that ran this, recorded in the healing report.
    """
    import json

    output = Path(output)
    check_distinct(output, model)
    if teacher is not None:
        check_distinct(output, teacher, "the teacher")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite or choose another --output.")
    processes = processes or Processes()
    progress = progress and processes.is_main
    with processes.main_first():  # a Hub id or packaged checkpoint is fetched into a cache once
        student, processor, resolved = load_model_and_processor(model, device=placement.device, dtype=placement.dtype)
    if not getattr(student.config, "low_rank_config", None):
        raise ValueError(f"{model} is not a LiteWhisper model (no low_rank_config): compress it first.")
    report_path = Path(resolved) / "compression_report.json"
    # A folder without a report (a published model) gets one that holds the healing alone.
    report = CompressionReport.read(report_path) if report_path.is_file() else CompressionReport()
    teacher = teacher or report.source_model
    if teacher is None:
        raise ValueError(f"{model} does not say which Whisper it was compressed from (no compression_report.json "
                         "with source_model): pass the dense model as --teacher.")
    with processes.main_first():  # caches filled once: the teacher's conversion, the calibration mix, a dataset
        dense, _, _ = load_model_and_processor(teacher, device=placement.device, dtype=placement.dtype)
        holdout = holdout or (DEVELOPMENT if audio is None else None)
        audio = audio or speaker_mix(progress=progress)
        utterances, failures = audio.load()
        held = _holdout_clips(holdout)
    healing = heal(student, dense, [u.audio for u in utterances], processor.feature_extractor, settings,
                   progress=progress, processes=processes, holdout_clips=held)
    healing.teacher = portable_path(teacher)
    healing.data = SpeechData(data=portable_path(audio.data), split=audio.split, failed=len(failures))
    healing.holdout_data = _describe(holdout)
    if command:
        healing.command = portable_command(command)
    report.healing = healing
    extra = {"compression_report.json": report.to_json()}
    plan = Path(resolved) / "rank_plan.json"
    if plan.is_file():
        extra["rank_plan.json"] = json.loads(plan.read_text())
    processes.barrier()  # every process has finished (one that failed never arrives: the launcher stops the run)
    folder = output.resolve()
    if processes.is_main:
        folder = save_model_folder(student, output, processor=processor, extra_files=extra, overwrite=overwrite)
    processes.barrier()
    return folder, healing


def _heal(result: CompressionResult, model, placement: Placement, loading: dict, processor, settings: HealSettings,
          audio: SpeechSource, holdout: SpeechSource | None, progress: bool, processes: Processes) -> HealingReport:
    """Heal ``result.model`` in place against a fresh copy of the dense ``model``, placed as it was (``loading``:
    the ``from_pretrained`` placement arguments); the healing report.

    With a device_map the compressed encoder is resident (compression loaded it layer by layer) and spread as the
    map says; the teacher is offloaded as the map says, to its own folder, and streamed in for its forward passes.
    """
    if "offload_folder" in loading:
        loading = {**loading, "offload_folder": str(Path(loading["offload_folder"]) / "teacher")}
    teacher, _, _ = load_model_and_processor(model, device=placement.device, dtype=placement.dtype, **loading)
    with processes.main_first():  # a datasets name is downloaded and cached once
        utterances, failures = audio.load()
        held = _holdout_clips(holdout)
    report = heal(result.model, teacher, [u.audio for u in utterances], processor.feature_extractor, settings,
                  progress=progress, processes=processes, holdout_clips=held)
    report.data = SpeechData(data=portable_path(audio.data), split=audio.split, failed=len(failures))
    report.holdout_data = _describe(holdout)
    return report


def _holdout_clips(holdout: SpeechSource | None) -> list | None:
    """The audio of the speakers healing stops on, or None (then a share of the healing audio is held out)."""
    if holdout is None:
        return None
    utterances, failures = holdout.load()
    if not utterances:
        raise ValueError(f"No usable audio in the healing hold-out {holdout.data} (split {holdout.split}); "
                         f"{len(failures)} item(s) failed to load.")
    return [u.audio for u in utterances]


def _describe(source: SpeechSource | None) -> SpeechData | None:
    return None if source is None else SpeechData(data=portable_path(source.data), split=source.split)


def _audio_of(rows: Iterable[Utterance | LoadFailure], failures: list[LoadFailure]) -> Iterator:
    """The audio of the utterances among ``rows``; the failures are appended to ``failures`` as they are reached."""
    for row in rows:
        if isinstance(row, LoadFailure):
            failures.append(row)
        else:
            yield row.audio


def _preset_label(preset: str | os.PathLike) -> str:
    """How the report names the preset: a shipped preset by its name, even when given as a path to its file; a
    file of the user's by its portable path (the report is published with the model)."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file() and path.resolve().parent == PRESET_DIR.resolve():
        return path.stem
    return portable_path(preset)

"""``compression_report.json``: what a compression run did, as dataclasses. :func:`~.compressor.compress` fills the
encoder's sizes, the settings, the calibration and the ranks; :func:`~.checkpoint.compress_checkpoint` adds where the
model and audio came from, healing, the command and the time and memory taken; the model card and staging
(:mod:`liteasr_hf.hub`) read it. Files of every earlier version read (missing keys take their defaults, keys this
version does not know are kept), and a report read and written again is unchanged (:mod:`liteasr_hf.records`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..records import JsonRecord, by_name, each, optional, reads


@dataclass(kw_only=True)
class EncoderSize(JsonRecord):
    """The encoder's parameters and FLOPs (one 30 s window) before and after compression."""

    params_before: int
    params_after: int
    params_fraction: float | None = optional()
    # As the published lite-whisper tables count: without the fixed sinusoidal position table. Reports written
    # before these were recorded lack them (the card then subtracts the table itself).
    params_excluding_positions_before: int | None = optional()
    params_excluding_positions_after: int | None = optional()
    flops_before: int
    flops_after: int
    flops_fraction: float | None = optional()


@dataclass(kw_only=True)
class CalibrationRun(JsonRecord):
    """The calibration windows, and on several processes what each one did."""

    windows: int
    audio_seconds: float
    padding_share: float
    processes: int | None = optional()
    windows_per_process: list[int] | None = optional(written_with="processes")
    eigendecompositions_per_process: list[int] | None = optional(written_with="processes")


@dataclass(kw_only=True)
class ModuleReport(JsonRecord):
    """One linear module of one encoder layer: its rank (``None``: left dense), the share of its output variance
    that rank keeps, and its parameters and FLOPs before and after."""

    rank: int | None
    variance_kept: float | None
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int


@dataclass(kw_only=True)
class SpeechData(JsonRecord):
    """The speech a step ran on, as the report names it (a portable path or a Hub id), and how many of its items
    failed to load."""

    data: str
    split: str | None = None
    failed: int | None = optional()
    config: str | None = optional()
    language: str | None = optional()  # the speech's language where it was recorded


@dataclass(kw_only=True)
class HealingWindows(JsonRecord):
    train: int
    holdout: int

    @property
    def total(self) -> int:
        return self.train + self.holdout


@dataclass(kw_only=True)
class HealingStage(JsonRecord):
    """One stage of healing (an encoder layer, or the whole encoder end to end) and its held-out loss."""

    stage: str
    steps: int
    holdout_loss_before: float
    holdout_loss_after: float


@dataclass(kw_only=True)
class HealingReport(JsonRecord):
    """What :func:`~.healing.heal` did, and on which audio against which teacher (added by the caller)."""

    settings: dict[str, Any] = optional(default_factory=dict)  # HealSettings as recorded
    windows: HealingWindows = reads(HealingWindows.from_dict)
    stages: list[HealingStage] = reads(each(HealingStage.from_dict))
    seconds: float
    peak_memory_bytes: int | None = optional()
    trained_windows_per_process: list[int] | None = optional(written_with="processes")
    computed_windows_per_process: list[int] | None = optional(written_with="processes")
    processes: int | None = optional()
    teacher: str | None = optional()
    data: SpeechData | None = optional(read=SpeechData.from_dict)
    holdout_data: SpeechData | None = optional(read=SpeechData.from_dict, written_with="data")
    command: str | None = optional()  # the `liteasr heal` command that healed a saved folder (compress has its own)


def _layers(layers: list) -> list[dict[str, ModuleReport]]:
    return [by_name(ModuleReport.from_dict)(modules) for modules in layers]


@dataclass(kw_only=True)
class CompressionReport(JsonRecord):
    """``compression_report.json``. Every part may be missing from a report of an earlier version (or written by
    hand) and reads as empty or ``None``; a folder healed without a report (a published model) has one that holds
    ``healing`` alone. The model card needs ``encoder`` (:func:`liteasr_hf.hub.model_card.load_report` checks)."""

    encoder: EncoderSize | None = optional(read=EncoderSize.from_dict)
    # CompressionSettings and the rank plan's method as recorded: kept as read, so that the report of a version
    # with other settings still loads (match_preset compares them with the presets').
    settings: dict[str, Any] = optional(default_factory=dict)
    plan_method: dict[str, Any] = optional(default_factory=dict)
    calibration: CalibrationRun | None = optional(read=CalibrationRun.from_dict)
    seconds: float | None = optional()  # calibration and factorization
    layers: list[dict[str, ModuleReport]] = optional(default_factory=list, read=_layers)
    low_rank_config: list[dict[str, int]] = optional(default_factory=list)
    source_model: str | None = optional()
    resolved_model: str | None = optional()
    calibration_data: SpeechData | None = optional(read=SpeechData.from_dict)
    device: str | None = optional()
    dtype: str | None = optional()
    preset: str | None = optional()
    healing: HealingReport | None = optional(read=HealingReport.from_dict)
    command: str | None = optional()
    placement: list[str] | None = optional()  # where accelerate placed the weights: GPUs, cpu, disk
    total_seconds: float | None = optional()  # the whole run
    peak_rss_mb: float | None = optional()
    compression_rss_growth_mb: float | None = optional()

    @property
    def run_seconds(self) -> float | None:
        """The whole run's seconds, or calibration and factorization's in reports that did not time the run."""
        return self.total_seconds if self.total_seconds is not None else self.seconds

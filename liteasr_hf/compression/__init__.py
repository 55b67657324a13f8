"""LiteASR compression: calibrate, choose ranks, factorize; from a checkpoint to a saved LiteWhisper folder.

calibration (running output statistics) -> pca (principal directions) -> rank_selection (thresholds or a budget,
as a plan) -> factorization (two factors and a bias) -> compressor (the calibration schemes, the report) ->
checkpoint (load, compress, save); healing distils the factors afterwards. settings holds what a preset file says
(compression and healing); report is ``compression_report.json`` as dataclasses; cost counts parameters and FLOPs;
presets reads ``configs/``; memory measures and trims resident memory.
"""

from .checkpoint import compress_checkpoint
from .compressor import CompressionResult, compress, compression_report
from .presets import load_settings
from .rank_selection import RankPlan
from .report import CompressionReport, HealingReport
from .settings import CompressionSettings

__all__ = [
    "CompressionReport",
    "CompressionResult",
    "CompressionSettings",
    "HealingReport",
    "RankPlan",
    "compress",
    "compress_checkpoint",
    "compression_report",
    "load_settings",
]

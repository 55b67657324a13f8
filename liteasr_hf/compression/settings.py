"""How to compress and how to heal: the contents of a preset file in ``configs/``, validated on construction with
errors that name the setting.

:class:`CompressionSettings` is read by :mod:`.compressor`, :class:`HealSettings` (its ``heal:`` entry) by
:mod:`.healing`; both live here so that neither of those modules imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.suite import DEFAULT_MIX, MIXES
from ..models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES
from .rank_selection import check_layer_floor

#: End-to-end healing losses (:attr:`HealSettings.loss`).
LOSSES = ("mse", "cosine", "decoder")
#: How healing makes its windows of audio (:attr:`HealSettings.windows`).
WINDOWS = ("pieces", "packed")


@dataclass
class HealSettings:
    """How to heal; the ``heal:`` entry of a preset file."""

    block_steps: int = 20  # gradient steps per encoder layer in the block-wise stage (0 skips it)
    steps: int = 60  # gradient steps of the end-to-end stage (0 skips it)
    lr: float = 1e-4
    batch_size: int = 4
    # end-to-end loss: "cosine" (one minus the cosine per position), "mse" (normalised), or "decoder" (the KL divergence
    # of the frozen decoder's next-token distributions, teacher-forced on the dense model's own transcripts)
    loss: str = "cosine"
    train_layer_norms: bool = False
    holdout: float = 0.1  # share of the windows held out for early stopping
    eval_every: int = 20
    patience: int = 3
    num_samples: int = 160  # windows of healing audio (each padded to Whisper's 30 s)
    # "pieces": each window is one piece of piece_seconds cut at random from a clip and padded, as a short utterance
    # is at inference; "packed": clips joined up to pack_seconds, as calibration does (0: one whole clip a window).
    # Healing on packed windows alone lowers the encoder loss there and raises WER on short utterances.
    windows: str = "pieces"
    piece_seconds: tuple[float, float] = (2.0, 8.0)
    pack_seconds: float = 28.0
    warmup: float = 0.1  # share of each stage's steps with a linearly rising learning rate
    # Share of each window's encoder loss that falls on the positions holding its audio (the rest on the padding that
    # fills the window to 30 s); None weighs every position alike. A 2-8 s piece fills 7-27% of the 1500 positions, so
    # alike, most of the loss fits the encoder's output over padding.
    speech_share: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("block_steps", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"heal.{name} = {value!r}: give a number of gradient steps, 0 or more.")
        if self.block_steps == 0 and self.steps == 0:
            raise ValueError("heal.block_steps and heal.steps are both 0: there is nothing to train. Give either "
                             "a positive number of steps, or leave out `heal` to skip healing.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise ValueError(f"heal.lr = {self.lr!r}: a learning rate must lie in (0, 1) (1e-4 is a good start).")
        for name in ("batch_size", "eval_every", "patience", "num_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"heal.{name} = {value!r}: must be a positive integer.")
        if self.loss not in LOSSES:
            raise ValueError(f"heal.loss = {self.loss!r}: use one of {', '.join(LOSSES)}.")
        if not 0 < self.holdout < 1:
            raise ValueError(f"heal.holdout = {self.holdout!r}: the held-out share must lie in (0, 1).")
        if self.windows not in WINDOWS:
            raise ValueError(f"heal.windows = {self.windows!r}: use one of {', '.join(WINDOWS)}.")
        pieces = self.piece_seconds
        if (not isinstance(pieces, (list, tuple)) or len(pieces) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pieces)
                or not 0.5 <= pieces[0] <= pieces[1] <= 30):
            raise ValueError(f"heal.piece_seconds = {pieces!r}: give [shortest, longest] seconds with "
                             "0.5 <= shortest <= longest <= 30, e.g. [2, 8].")
        self.piece_seconds = (float(pieces[0]), float(pieces[1]))
        if isinstance(self.pack_seconds, bool) or not isinstance(self.pack_seconds, (int, float)) or not (
                0 <= self.pack_seconds <= 30):
            raise ValueError(f"heal.pack_seconds = {self.pack_seconds!r}: give seconds in [0, 30] (0: no packing).")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"heal.warmup = {self.warmup!r}: must lie in [0, 1).")
        if self.speech_share is not None and (isinstance(self.speech_share, bool) or not isinstance(
                self.speech_share, (int, float)) or not 0 < self.speech_share <= 1):
            raise ValueError(f"heal.speech_share = {self.speech_share!r}: give the share of the loss on the audio's "
                             "positions, in (0, 1] (e.g. 0.8), or null to weigh every position alike.")

    @classmethod
    def from_dict(cls, values: dict) -> "HealSettings":
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"Unknown heal setting(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**values)


@dataclass
class CompressionSettings:
    """How to compress; the contents of a preset file in ``configs/``."""

    thresholds: dict[str, float] = field(default_factory=lambda: {"attention": 0.99, "mlp": 0.999})
    budget: float | None = None  # keep at most this fraction of the encoder's `budget_measure`
    budget_measure: str = "params"
    rank_multiple: int = 16
    outlier_share: float | None = 0.5  # None: the paper's plain variance share
    sequential: bool = True
    modules: tuple[str, ...] = LOW_RANK_MODULES
    num_samples: int = 16
    batch_size: int = 4
    pack_seconds: float = 28.0  # join calibration clips to fill Whisper's 30 s window; 0 keeps them apart
    heal: HealSettings | None = None  # distil the factors against the dense encoder afterwards (None: don't)
    # Budget mode: weigh each module's variance loss by how far cutting it moves the encoder's output, measured on
    # this many calibration windows (0: unweighted; liteasr_hf.compression.sensitivity).
    sensitivity_windows: int = 0
    # Budget mode: no layer keeps less than this share of its linear modules' `budget_measure` (None: no floor).
    layer_floor: float | None = None
    # The calibration audio when none is given: a mix of liteasr_hf.data.suite.MIXES (healing reads the default mix).
    calibration_mix: str = DEFAULT_MIX

    def __post_init__(self) -> None:
        self.modules = tuple(self.modules)
        if isinstance(self.heal, dict):
            self.heal = HealSettings.from_dict(self.heal)
        elif self.heal is not None and not isinstance(self.heal, HealSettings):
            raise ValueError(f"heal = {self.heal!r}: give a mapping of heal settings (steps, lr, ...), or leave it out.")
        for key, value in self.thresholds.items():
            if key not in ("attention", "mlp", *LOW_RANK_MODULES):
                raise ValueError(f"thresholds: unknown key {key!r}; use 'attention', 'mlp' or a module name.")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"thresholds.{key} = {value!r}: a variance share must lie in (0, 1].")
        if self.budget is not None and (isinstance(self.budget, bool) or not 0 < self.budget <= 1):
            raise ValueError(f"budget = {self.budget!r}: give the fraction of the encoder to keep, in (0, 1].")
        if self.budget_measure not in ("params", "flops"):
            raise ValueError(f"budget_measure = {self.budget_measure!r}: use 'params' or 'flops'.")
        if not isinstance(self.rank_multiple, int) or self.rank_multiple < 1:
            raise ValueError(f"rank_multiple = {self.rank_multiple!r}: must be a positive integer.")
        if self.outlier_share is not None and not 0 < self.outlier_share < 1:
            raise ValueError(f"outlier_share = {self.outlier_share!r}: must lie in (0, 1), or be null.")
        unknown = set(self.modules) - set(LOW_RANK_MODULES)
        if unknown:
            raise ValueError(f"modules: unknown {sorted(unknown)}; choose from {', '.join(LOW_RANK_MODULES)}.")
        for name in ("num_samples", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} = {value!r}: must be a positive integer.")
        check_layer_floor(self.layer_floor, self.budget)
        if self.calibration_mix not in MIXES:
            raise ValueError(f"calibration_mix = {self.calibration_mix!r}: choose from {', '.join(MIXES)}.")
        if isinstance(self.sensitivity_windows, bool) or not isinstance(self.sensitivity_windows, int) or (
                self.sensitivity_windows < 0):
            raise ValueError(f"sensitivity_windows = {self.sensitivity_windows!r}: give a number of calibration "
                             "windows, or 0 to leave the budget's allocation unweighted.")

    @classmethod
    def from_dict(cls, values: dict) -> "CompressionSettings":
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"Unknown compression setting(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**values)

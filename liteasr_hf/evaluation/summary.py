"""The evaluation summary (``<model>__<data>-<split>.summary.json``): one model's WER, speed and run conditions on
one data set, as :func:`~.transcription.evaluate_utterances` writes it and the comparison tables, the Pareto plot and
the model card read it. Summaries of every earlier version read (missing keys take their defaults, keys this version
does not know are kept), and a summary read and written again is unchanged (:mod:`liteasr_hf.records`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..records import JsonRecord, by_name, each, optional, reads


@dataclass(kw_only=True)
class FailedItem(JsonRecord):
    """An item of the data that did not load, and why."""

    id: str
    reason: str


@dataclass(kw_only=True)
class GroupWer(JsonRecord):
    """Corpus WER of one speaker group (``wer`` in percent; NaN without reference words)."""

    wer: float
    errors: int
    reference_words: int
    utterances: int
    long_outputs: int


@dataclass(kw_only=True)
class EvaluationSummary(JsonRecord):
    """One evaluation run. Required: which model (``model``, ``model_type``, ``encoder_params``), on which data
    (``data``, ``split``) and its ``wer``; everything else reads as ``None`` or empty where an earlier version did
    not write it."""

    json_ascii = False  # summaries have always been written with ensure_ascii=False

    model: str  # as given: a folder, a Hub id or a packaged alias
    model_path: str | None = None  # where it was loaded from
    model_type: str  # "whisper" or "lite-whisper"
    data: str
    config: str | None = None
    split: str | None
    n_utterances: int | None = None
    n_failed: int | None = None
    failed: list[FailedItem] = reads(each(FailedItem.from_dict), default_factory=list)
    # Corpus WER (percent, round(100 * wer, 2)) and its counts, as WerStats holds them.
    wer: float
    errors: int | None = None
    substitutions: int | None = None
    deletions: int | None = None
    insertions: int | None = None
    reference_words: int | None = None
    n_scored: int | None = None
    n_empty_references: int | None = None
    groups: dict[str, GroupWer] = reads(by_name(GroupWer.from_dict), default_factory=dict)
    empty_reference_ids: list[str] = field(default_factory=list)
    n_long_outputs: int | None = None
    long_output_ids: list[str] = field(default_factory=list)
    rtfx: float | None = None  # None: nothing was timed (every batch was a warm-up)
    total_audio_seconds: float | None = None
    compute_seconds: float | None = None
    encoder_params: int  # the position table included
    encoder_params_excluding_positions: int | None = None  # as the published lite-whisper tables count
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    language: str | None = None  # passed to generate (multilingual models only)
    max_new_tokens: int | None = None
    warmup_batches: int | None = None
    normalizer: str | None = None
    timestamp: str | None = None
    liteasr_hf_version: str | None = None
    transformers_version: str | None = None
    torch_version: str | None = None
    # On several processes: how many, and each one's share.
    processes: int | None = optional()
    utterances_per_process: list[int] | None = optional(written_with="processes")
    compute_seconds_per_process: list[float] | None = optional(written_with="processes")
    rtfx_all_processes: float | None = optional(written_with="processes")
    # The run's provenance, where the caller named its command (``liteasr evaluate`` does): the command as a reader
    # can run it (local paths reduced), the machine (:func:`~.reporting.machine_info`) and the source commit.
    command: str | None = optional()
    machine: dict[str, Any] | None = optional()
    commit: str | None = optional()

    @property
    def published_encoder_params(self) -> int:
        """Encoder parameters as the published tables count them (without the position table) where recorded,
        else with it."""
        return self.encoder_params_excluding_positions if self.encoder_params_excluding_positions is not None \
            else self.encoder_params

    @property
    def data_key(self) -> tuple[str, str, str | None]:
        """``(data, config or "", split)``: which evaluation this is, whatever the model."""
        return self.data, self.config or "", self.split

    def pooled_wer(self, prefix: str = "real") -> float:
        """Corpus WER (percent) over every speaker group whose name begins with ``prefix`` taken together (errors over
        reference words, as one set): ``"real"`` pools the real speakers, whatever their group. Raises ``ValueError``
        where the summary has no such group (an evaluation on data without groups, or by an earlier version)."""
        chosen = [g for name, g in self.groups.items() if name.startswith(prefix)]
        words = sum(g.reference_words for g in chosen)
        if not words:
            raise ValueError(f"{self.model}: the evaluation summary has no speaker group beginning {prefix!r} "
                             f"(groups: {', '.join(self.groups) or 'none'}); evaluate on the shipped evaluation "
                             "splits (liteasr evaluate's default data), whose rows name their group.")
        return round(100 * sum(g.errors for g in chosen) / words, 2)

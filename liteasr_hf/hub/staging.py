"""Stage a compressed LiteWhisper folder for the Hub: check that it is a complete LiteWhisper folder, choose the
files a user needs (weights, config, code files, processor, generation config, compression report), copy them into
a staging folder and render the model card there. The source folder is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard
from transformers.dynamic_module_utils import get_relative_import_files

from ..atomic import atomic_directory
from .model_card import DEFAULT_LICENSE, build_model_card, check_card, load_report, load_summaries
from .repo import check_repo_id

#: Hub-bound code files every LiteWhisper folder has (the config names classes in them); the files they import
#: relatively are found and published with them.
CODE_FILES = ("configuration_lite_whisper.py", "modeling_lite_whisper.py", "pipeline_lite_whisper.py")
#: Tokenizer and feature-extractor files, in the layouts transformers 4 and 5 write.
PROCESSOR_FILES = (
    "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "normalizer.json",
)
AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForSpeechSeq2Seq")
REPORT = "compression_report.json"
CARD = "README.md"
#: Written into every staging folder: only a folder that has it is replaced by a later staging run. Not uploaded.
STAGING_MARKER = ".liteasr-staging.json"
#: The package whose files are the Hub-bound code this version of liteasr_hf publishes.
CODE_PACKAGE = "liteasr_hf.models.lite_whisper"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} ({what}) is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} ({what}) must hold a JSON object.")
    return data


def model_files(model_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Check that ``model_dir`` is a LiteWhisper folder written by the compression script and return
    ``(files to publish, files left out)``. Raises ``ValueError`` naming the problem and the fix."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"Model folder {folder} does not exist; pass the --output folder of "
                                "liteasr compress.")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: it is not a model folder. Pass the folder that "
                         "liteasr compress wrote (its --output).")
    config = _read_json(folder / "config.json", "model configuration")
    model_type = config.get("model_type")
    if model_type != "lite-whisper":
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not a LiteWhisper model (config.json model_type must be "
            f"'lite-whisper'). Compress it first: liteasr compress --model {folder} --output OUT."
        )
    auto_map = config.get("auto_map") or {}
    missing = [name for name in AUTO_CLASSES if name not in auto_map]
    if missing:
        raise ValueError(
            f"{folder}/config.json has no auto_map entry for {', '.join(missing)}, so the Hub copy would not load "
            "with trust_remote_code. Load the folder with liteasr_hf and save it again with "
            "liteasr_hf.checkpoints.save_model_folder (LiteWhisperConfig writes the full auto_map)."
        )
    if "automatic-speech-recognition" not in (config.get("custom_pipelines") or {}):
        raise ValueError(
            f"{folder}/config.json has no custom_pipelines entry for automatic-speech-recognition, so the Hub copy "
            "would run in the ASR pipeline without Whisper's processing. Load the folder with liteasr_hf and save it "
            "again with liteasr_hf.checkpoints.save_model_folder (LiteWhisperConfig writes the entry)."
        )
    code = _code_files(folder, config)

    weights = _weight_files(folder)
    if not (folder / "generation_config.json").is_file():
        raise ValueError(f"{folder} has no generation_config.json (Whisper's decoding settings); save the model with "
                         "liteasr_hf.checkpoints.save_model_folder, which writes it.")
    processor = [name for name in PROCESSOR_FILES if (folder / name).is_file()]
    has_tokenizer = any(name in processor for name in ("tokenizer.json", "vocab.json"))
    has_features = "preprocessor_config.json" in processor or (
        "processor_config.json" in processor
        and "feature_extractor" in _read_json(folder / "processor_config.json", "processor configuration"))
    if not (has_tokenizer and has_features):
        raise ValueError(f"{folder} has no complete processor (tokenizer and feature extractor files); save it with "
                         "the model: liteasr_hf.checkpoints.save_model_folder(model, OUT, processor=processor).")
    if not (folder / REPORT).is_file():
        raise ValueError(f"{folder} has no {REPORT}: publish folders written by liteasr compress, whose report "
                         "the model card is built from.")
    load_report(folder)  # the card is built from it: it must read, with the encoder's counts

    keep = sorted({*weights, "config.json", "generation_config.json", REPORT, *code, *processor})
    left_out = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                      if p.is_file() and str(p.relative_to(folder)) not in keep)
    return keep, left_out


ONNX_SUFFIXES = (".onnx", ".onnx_data")
#: Beside onnx/, what onnx-asr reads and transformers 5's save_pretrained no longer writes.
ONNX_VOCABULARY = ("vocab.json", "added_tokens.json")


def onnx_files(model_dir: str | os.PathLike, onnx: str | os.PathLike | None = None) -> dict[str, Path]:
    """The files of an ONNX export to publish with ``model_dir``: repo path -> source file (empty without export).

    ``onnx``: a folder written by ``liteasr export-onnx`` (``None``: the model folder's own ``onnx/``, if any).
    The export must come from this model: the same model type and ``low_rank_config``, or ``ValueError``.
    """
    model_dir = Path(model_dir)
    root = Path(onnx) if onnx is not None else model_dir
    subfolder = root / "onnx"
    if onnx is None and not subfolder.is_dir():
        return {}
    if not all((subfolder / f"{graph}.onnx").is_file() for graph in ("encoder_model", "decoder_model_merged")):
        raise ValueError(f"{root} is not an ONNX export: it needs onnx/encoder_model.onnx and "
                         "onnx/decoder_model_merged.onnx. Write one with liteasr export-onnx --model "
                         f"{model_dir} --output DIR.")
    if onnx is not None:
        ours = _read_json(model_dir / "config.json", "model configuration")
        theirs = _read_json(root / "config.json", "ONNX export configuration") if (root / "config.json").is_file() \
            else {}
        for key in ("model_type", "d_model", "encoder_layers", "low_rank_config"):
            if ours.get(key) != theirs.get(key):
                raise ValueError(f"The ONNX export {root} was not made from {model_dir} (config.json {key} differs). "
                                 f"Export this model: liteasr export-onnx --model {model_dir} --output DIR.")
    files = {f"onnx/{p.name}": p for p in sorted(subfolder.iterdir())
             if p.is_file() and (p.name.endswith(ONNX_SUFFIXES) or p.name == "export_info.json")}
    files.update({name: root / name for name in ONNX_VOCABULARY if (root / name).is_file()})
    return files


def _code_files(folder: Path, config: dict) -> list[str]:
    """The modules ``auto_map`` and ``custom_pipelines`` name, and every file they import relatively (found the
    way transformers' remote-code loader finds them), all of which must be in the folder."""
    modules = {ref.split(".")[0] + ".py" for ref in config["auto_map"].values()}
    modules |= {spec["impl"].split(".")[0] + ".py" for spec in (config.get("custom_pipelines") or {}).values()}
    absent = sorted(name for name in modules | set(CODE_FILES) if not (folder / name).is_file())
    files = set(modules)
    try:
        for name in sorted(modules - set(absent)):
            files |= {Path(f).name for f in get_relative_import_files(str(folder / name))}
    except FileNotFoundError as err:
        absent.append(Path(err.filename or str(err)).name)
    if absent:
        raise ValueError(f"{folder} lacks the code file(s) {', '.join(sorted(set(absent)))} that config.json loads "
                         "remotely; save the model with save_pretrained (it copies them with their relative imports) "
                         "or liteasr_hf.checkpoints.save_model_folder.")
    return sorted(files)


def foreign_code_files(folder: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """The code files among ``names`` in ``folder`` that are not byte for byte this liteasr_hf's own."""
    ours = resources.files(CODE_PACKAGE)
    foreign = []
    for name in names:
        mine = ours / name
        if not mine.is_file() or mine.read_bytes() != (Path(folder) / name).read_bytes():
            foreign.append(name)
    return foreign


def _weight_files(folder: Path) -> list[str]:
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index, "weight index").get("weight_map", {}).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if not shards or missing:
            raise ValueError(f"{index} names weight shards that are not in the folder "
                             f"({', '.join(missing) or 'none'}).")
        return [index.name, *shards]
    if any(folder.glob("*.bin")):
        raise ValueError(f"{folder} holds pickled weights (*.bin), not safetensors; load the model and save it with "
                         "save_pretrained (safetensors is its default) before publishing.")
    raise ValueError(f"{folder} has no weights (model.safetensors); it is not a complete model folder.")


# ---------------------------------------------------------------------------------------------------------------
# Staging
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StagedFolder:
    """A folder ready to upload: ``files`` maps each relative path to its size in bytes."""

    path: Path
    repo_id: str
    files: dict[str, int]
    card: ModelCard
    evaluation: list[Path]
    benchmark: Path | None = None  # the benchmark report the card's speed comparison comes from
    notes: list[str] = field(default_factory=list)
    check: dict | None = None

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def default_staging_dir(model_dir: str | os.PathLike) -> Path:
    """``<model>-hub`` beside the model folder (as ``<model>-evaluation`` holds its evaluation)."""
    folder = Path(model_dir).resolve()
    return folder.parent / f"{folder.name}-hub"


def default_evaluation(model_dir: str | os.PathLike) -> list[Path]:
    """The ``<model>-evaluation`` folder ``liteasr compress`` writes, when it exists."""
    folder = Path(model_dir).resolve()
    candidate = folder.parent / f"{folder.name}-evaluation"
    return [candidate] if any(candidate.glob("*.summary.json")) else []


def _check_staging_target(staging: Path, source: Path) -> None:
    """Refuse a staging folder that is, holds or sits in the source, or is some other folder with content."""
    staging, source = staging.resolve(), source.resolve()
    if staging == source or source in staging.parents or staging in source.parents:
        raise ValueError(f"The staging folder {staging} must lie outside the model folder {source} (and not contain "
                         "it): staging never writes into the source.")
    if staging.exists() and (not staging.is_dir() or any(staging.iterdir())) and \
            not (staging / STAGING_MARKER).is_file():
        # Only a folder that staging wrote (it carries the marker) is replaced: a downloaded Hub repo or any other
        # folder with content is the user's.
        raise FileExistsError(f"{staging} exists and was not written by staging (no {STAGING_MARKER} in it); it is "
                              "left as it is. Choose another --staging-dir, or move that folder away.")


def stage_folder(
    model_dir: str | os.PathLike,
    repo_id: str,
    staging_dir: str | os.PathLike | None = None,
    evaluation: Sequence[str | os.PathLike] | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,  # the card field's name
    datasets: Sequence[str] = (),
    benchmark: str | os.PathLike | None = None,
    onnx: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
) -> StagedFolder:
    """Copy the files a user needs from ``model_dir`` into ``staging_dir`` and write the model card there.

    ``onnx``: an export of this model by ``liteasr export-onnx``, published under ``onnx/`` with the vocabulary
    files onnx-asr reads (``None``: the model folder's own ``onnx/`` if it has one), so that one repo serves
    transformers, transformers.js and onnx-asr.

    ``evaluation``: summary files or folders (``None``: the ``<model>-evaluation`` folder if it exists; ``[]``: none,
    and the card says so). ``benchmark``: a ``liteasr benchmark`` report holding this model and its base model,
    for the card's speed comparison (``None``: the card says none was supplied). The staging folder is written
    atomically and replaced whole on a later run (only a folder staging wrote, which carries
    :data:`STAGING_MARKER`, is ever replaced); the model folder is only read. Raises ``ValueError`` /
    ``FileNotFoundError`` for bad input, before writing anything.

    The code files staged, which the check runs and the Hub serves, are this liteasr_hf's own. A folder whose code
    files differ from them is refused unless ``trust_remote_code``: then its own code is staged, run by the check
    and published, and a warning says so.
    """
    check_repo_id(repo_id)
    source = Path(model_dir)
    keep, left_out = model_files(source)
    exported = onnx_files(source, onnx)
    left_out = [name for name in left_out if name not in exported]
    staging = Path(staging_dir) if staging_dir is not None else default_staging_dir(source)
    _check_staging_target(staging, source)
    code = [name for name in keep if name.endswith(".py")]
    foreign = foreign_code_files(source, code)
    if foreign and not trust_remote_code:
        raise ValueError(
            f"The code file(s) {', '.join(foreign)} in {source} differ from this liteasr_hf's: staging would publish "
            "that code and the check would run it. Save the model again with this liteasr_hf (load it, then "
            "liteasr_hf.checkpoints.save_model_folder) to publish our code, or, if you have read the folder's code "
            "and mean to run and publish it, pass --trust-remote-code (trust_remote_code=True).")
    if foreign:
        warnings.warn(f"--trust-remote-code: the code file(s) {', '.join(foreign)} of {source}, which differ from "
                      "liteasr_hf's, will run in the check and be published.", stacklevel=2)
    code_source = {name: source / name if trust_remote_code else resources.files(CODE_PACKAGE) / name
                   for name in code}
    explicit = evaluation is not None
    evaluation_paths = [Path(p) for p in evaluation] if explicit else default_evaluation(source)
    summaries = load_summaries(evaluation_paths)
    card = build_model_card(source, repo_id, summaries, explicit=explicit, base_model=base_model, license=license,
                            datasets=datasets, code_files=code,
                            benchmark=benchmark,
                            onnx_files=[(name, path.stat().st_size) for name, path in exported.items()
                                        if name.startswith("onnx/") and name.endswith(ONNX_SUFFIXES)])
    check_card(card)

    notes = [f"{name} is not published (not needed to load or run the model)" for name in left_out]
    if foreign:
        notes.append(f"the folder's own code file(s) {', '.join(foreign)} (not liteasr_hf's) are staged and will "
                     "be published (--trust-remote-code)")
    if not summaries:
        notes.append("no evaluation results: the card says the model was not evaluated")
    if benchmark is None:
        notes.append("no benchmark report: the card says no speed comparison was supplied (--benchmark FILE from "
                     "liteasr benchmark --models BASE MODEL adds one)")
    with atomic_directory(staging, overwrite=True) as tmp:
        for name in keep:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if name in code_source:
                (tmp / name).write_bytes(code_source[name].read_bytes())
            else:  # a copy: nothing done to the staged file reaches the source
                shutil.copyfile(source / name, tmp / name)
        for name, path in exported.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / name)
        notes += _fix_generation_config(tmp)
        # newline="\n": the card's bytes (and so its hash on the Hub) must not depend on the platform.
        with open(tmp / CARD, "w", encoding="utf-8", newline="\n") as f:
            f.write(str(card))
        marker = {"source": str(source.resolve()), "repo_id": repo_id}
        (tmp / STAGING_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    files = {str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*"))
             if p.is_file() and p.name != STAGING_MARKER}
    return StagedFolder(staging.resolve(), repo_id, files, card, [file for file, _ in summaries],
                        Path(benchmark) if benchmark is not None else None, notes)


def _fix_generation_config(folder: Path) -> list[str]:
    """transformers' default ``max_length`` of 20 tokens truncates transcripts: use Whisper's decoder length."""
    path = folder / "generation_config.json"
    generation = _read_json(path, "generation configuration")
    if generation.get("max_length") not in (None, 20):
        return []
    limit = _read_json(folder / "config.json", "model configuration").get("max_target_positions", 448)
    generation["max_length"] = limit
    path.write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [f"generation_config.json: max_length set to {limit} (Whisper's decoder length) in the staged copy"]

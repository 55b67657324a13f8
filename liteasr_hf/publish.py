"""Publish a compressed LiteWhisper folder to the Hugging Face Hub: stage, check, upload.

1. :func:`stage_folder` copies what a user needs (weights, config, code files, processor, generation config,
   compression report) into a staging folder and renders the model card there; the source folder is only read.
2. :func:`check_staged_folder` loads the staged folder with ``trust_remote_code`` in a clean Python process in
   which ``liteasr_hf`` cannot be imported, as a user of the Hub repo would.
3. :func:`upload_staged_folder` creates the repo (``exist_ok``), compares the staged files with the repo's and
   commits only what changed, in one commit; an unchanged folder makes no commit at all.

:func:`publish` runs the three; :func:`publish_batch` publishes every variant listed in a YAML file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, get_token
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers.dynamic_module_utils import get_relative_import_files

from .atomic import atomic_directory
from .model_card import DEFAULT_LICENSE, build_model_card, check_card, load_summaries, validate_card_on_hub

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


class PublishError(RuntimeError):
    """Talking to the Hub failed (network, server, permissions); the staged and source folders are unchanged."""


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------


def check_repo_id(repo_id: str) -> None:
    """``namespace/name`` with the Hub's allowed characters, or ``ValueError`` saying what is wrong."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(
            f"Repo id {repo_id!r} is malformed: give it as namespace/name (your user or organization, a slash, "
            "the model's name), e.g. my-org/lite-whisper-large-v3."
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"Repo id {repo_id!r} is malformed: {err}") from err


def resolve_token(token: str | None = None) -> str:
    """``token``, or the one huggingface_hub finds (``HF_TOKEN``, then ``hf auth login``'s file). Never printed."""
    token = token or get_token()
    if not token:
        raise ValueError(
            "No Hugging Face token found. Log in with `hf auth login` (or `huggingface-cli login`), or set HF_TOKEN "
            "to a token with write access (https://huggingface.co/settings/tokens)."
        )
    return token


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
                                "scripts/compress.py.")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: it is not a model folder. Pass the folder that "
                         "scripts/compress.py wrote (its --output).")
    config = _read_json(folder / "config.json", "model configuration")
    model_type = config.get("model_type")
    if model_type != "lite-whisper":
        raise ValueError(
            f"{folder} holds a {model_type!r} model, not a LiteWhisper model (config.json model_type must be "
            f"'lite-whisper'). Compress it first: python scripts/compress.py --model {folder} --output OUT."
        )
    auto_map = config.get("auto_map") or {}
    missing = [name for name in AUTO_CLASSES if name not in auto_map]
    if missing:
        raise ValueError(
            f"{folder}/config.json has no auto_map entry for {', '.join(missing)}, so the Hub copy would not load "
            "with trust_remote_code. Load the folder with liteasr_hf and save it again with "
            "liteasr_hf.export.save_model_folder (LiteWhisperConfig writes the full auto_map)."
        )
    if "automatic-speech-recognition" not in (config.get("custom_pipelines") or {}):
        raise ValueError(
            f"{folder}/config.json has no custom_pipelines entry for automatic-speech-recognition, so the Hub copy "
            "would run in the ASR pipeline without Whisper's processing. Load the folder with liteasr_hf and save it "
            "again with liteasr_hf.export.save_model_folder (LiteWhisperConfig writes the entry)."
        )
    code = _code_files(folder, config)

    weights = _weight_files(folder)
    if not (folder / "generation_config.json").is_file():
        raise ValueError(f"{folder} has no generation_config.json (Whisper's decoding settings); save the model with "
                         "liteasr_hf.export.save_model_folder, which writes it.")
    processor = [name for name in PROCESSOR_FILES if (folder / name).is_file()]
    has_tokenizer = any(name in processor for name in ("tokenizer.json", "vocab.json"))
    has_features = "preprocessor_config.json" in processor or (
        "processor_config.json" in processor
        and "feature_extractor" in _read_json(folder / "processor_config.json", "processor configuration"))
    if not (has_tokenizer and has_features):
        raise ValueError(f"{folder} has no complete processor (tokenizer and feature extractor files); save it with "
                         "the model: liteasr_hf.export.save_model_folder(model, OUT, processor=processor).")
    if not (folder / REPORT).is_file():
        raise ValueError(f"{folder} has no {REPORT}: publish folders written by scripts/compress.py, whose report "
                         "the model card is built from.")
    report = _read_json(folder / REPORT, "compression report")
    if not {"params_before", "params_after", "flops_before", "flops_after"} <= set(report.get("encoder") or {}):
        raise ValueError(f"{folder / REPORT} lacks the encoder's parameter and FLOP counts; compress again with "
                         "scripts/compress.py to get a complete report.")

    keep = sorted({*weights, "config.json", "generation_config.json", REPORT, *code, *processor})
    left_out = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                      if p.is_file() and str(p.relative_to(folder)) not in keep)
    return keep, left_out


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
                         "or liteasr_hf.export.save_model_folder.")
    return sorted(files)


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
    """The ``<model>-evaluation`` folder ``scripts/compress.py`` writes, when it exists."""
    folder = Path(model_dir).resolve()
    candidate = folder.parent / f"{folder.name}-evaluation"
    return [candidate] if any(candidate.glob("*.summary.json")) else []


def _check_staging_target(staging: Path, source: Path) -> None:
    """Refuse a staging folder that is, holds or sits in the source, or is some other folder with content."""
    staging, source = staging.resolve(), source.resolve()
    if staging == source or source in staging.parents or staging in source.parents:
        raise ValueError(f"The staging folder {staging} must lie outside the model folder {source} (and not contain "
                         "it): staging never writes into the source.")
    if staging.exists() and any(staging.iterdir()):
        config = staging / "config.json"
        staged_before = (staging / CARD).is_file() and config.is_file() and \
            json.loads(config.read_text(encoding="utf-8")).get("model_type") == "lite-whisper"
        if not staged_before:
            raise FileExistsError(f"{staging} exists and is not an earlier staging folder; choose another "
                                  "--staging-dir or remove it.")


def stage_folder(
    model_dir: str | os.PathLike,
    repo_id: str,
    staging_dir: str | os.PathLike | None = None,
    evaluation: Sequence[str | os.PathLike] | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,  # the card field's name
    datasets: Sequence[str] = (),
) -> StagedFolder:
    """Copy the files a user needs from ``model_dir`` into ``staging_dir`` and write the model card there.

    ``evaluation``: summary files or folders (``None``: the ``<model>-evaluation`` folder if it exists; ``[]``: none,
    and the card says so). The staging folder is written atomically and replaced whole on a later run; the model
    folder is only read. Raises ``ValueError`` / ``FileNotFoundError`` for bad input, before writing anything.
    """
    check_repo_id(repo_id)
    source = Path(model_dir)
    keep, left_out = model_files(source)
    staging = Path(staging_dir) if staging_dir is not None else default_staging_dir(source)
    _check_staging_target(staging, source)
    explicit = evaluation is not None
    evaluation_paths = [Path(p) for p in evaluation] if explicit else default_evaluation(source)
    summaries = load_summaries(evaluation_paths)
    card = build_model_card(source, repo_id, summaries, explicit=explicit, base_model=base_model, license=license,
                            datasets=datasets, code_files=[name for name in keep if name.endswith(".py")])
    check_card(card)

    notes = [f"{name} is not published (not needed to load or run the model)" for name in left_out]
    if not summaries:
        notes.append("no evaluation results: the card says the model was not evaluated")
    with atomic_directory(staging, overwrite=True) as tmp:
        for name in keep:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, tmp / name)  # a copy: nothing done to the staged file reaches the source
        notes += _fix_generation_config(tmp)
        # newline="\n": the card's bytes (and so its hash on the Hub) must not depend on the platform.
        with open(tmp / CARD, "w", encoding="utf-8", newline="\n") as f:
            f.write(str(card))
    files = {str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
    return StagedFolder(staging.resolve(), repo_id, files, card, [file for file, _ in summaries], notes)


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


# ---------------------------------------------------------------------------------------------------------------
# Checking the staged folder in a clean process
# ---------------------------------------------------------------------------------------------------------------

#: First lines of a script that runs as a Hub user's process would: ``liteasr_hf`` cannot be imported, so a model
#: loads only with the code files beside its weights.
BLOCK_LITEASR_HF = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "liteasr_hf" or name.startswith("liteasr_hf."):
                raise ImportError("liteasr_hf is blocked: the model must load with its own code files")

    sys.meta_path.insert(0, BlockPackage())
    """
)

_CHECK_SCRIPT = BLOCK_LITEASR_HF + textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model, info = AutoModelForSpeechSeq2Seq.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    bare = get_class_from_dynamic_module(config.auto_map["AutoModel"], folder)
    pipeline = get_class_from_dynamic_module(config.custom_pipelines["automatic-speech-recognition"]["impl"], folder)
    features = processor(np.zeros(16000, dtype=np.float32), sampling_rate=16000, return_tensors="pt").input_features
    start = torch.tensor([[model.config.decoder_start_token_id]])
    with torch.inference_mode():
        logits = model.eval()(input_features=features.to(model.dtype), decoder_input_ids=start).logits
    print(json.dumps({
        "config": type(config).__name__, "model": type(model).__name__, "auto_model": bare.__name__,
        "pipeline": pipeline.__name__, "processor": type(processor).__name__,
        "problems": {k: sorted(map(str, v)) for k, v in info.items() if v},
        "finite": bool(torch.isfinite(logits).all()),
        "liteasr_hf_imported": any(m.split(".")[0] == "liteasr_hf" for m in sys.modules),
    }))
    """
)


def check_staged_folder(folder: str | os.PathLike, timeout: float = 1800) -> dict:
    """Load ``folder`` as a Hub user would, in a fresh Python process that cannot import ``liteasr_hf``, offline:
    config, model (every weight matched), processor, the ``AutoModel`` and pipeline classes, and one forward pass.

    Returns what was loaded; raises ``ValueError`` with the subprocess's error when anything fails.
    """
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="liteasr-check-") as home:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        # Own HF_HOME: remote code is imported into an empty modules cache; offline: the folder alone must do.
        env.update(HF_HOME=home, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        try:
            result = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT, str(folder)], cwd=home, env=env,
                                    capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise ValueError(f"Loading {folder} in a clean process took more than {timeout:.0f} s.") from err
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise ValueError(f"The staged folder {folder} does not load with trust_remote_code in a clean Python process "
                         f"(without liteasr_hf):\n{tail}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    problems = []
    if report["model"] != "LiteWhisperForConditionalGeneration" or report["auto_model"] != "LiteWhisperModel":
        problems.append(f"it loads as {report['model']} / {report['auto_model']}, not the LiteWhisper classes")
    if report["problems"]:
        problems.append(f"weights do not match the config: {report['problems']}")
    if not report["finite"]:
        problems.append("a forward pass gives non-finite logits")
    if report["liteasr_hf_imported"]:
        problems.append("liteasr_hf was imported")
    if problems:
        raise ValueError(f"The staged folder {folder} loads, but " + "; ".join(problems) + ".")
    return report


# ---------------------------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class UploadResult:
    """What an upload did. ``changed`` is empty when the repo already held the staged files: then no commit was
    made and ``commit_oid`` is the revision's current commit."""

    repo_id: str
    repo_url: str
    revision: str
    commit_oid: str
    commit_url: str | None
    pr_url: str | None
    changed: list[str]
    deleted: list[str]
    unchanged: list[str]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def _same_content(local: Path, remote: RepoFile) -> bool:
    """Compare by content hash, as the Hub stores it: sha256 for LFS/Xet files, the git blob id otherwise."""
    if local.stat().st_size != remote.size:
        return False
    if remote.lfs is not None:
        return _sha256(local) == remote.lfs.sha256
    return _git_blob_sha1(local) == remote.blob_id


def upload_staged_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> UploadResult:
    """Upload the staged ``folder`` to the model repo ``repo_id`` as one commit of the files that differ.

    The repo is created if needed (``private`` applies then; an existing public repo is not published to when
    ``private`` is asked). ``revision`` is a branch, created from main if missing; ``create_pr`` opens a pull request
    against main instead of committing. Files in the repo that are not in the staged folder are deleted in the same
    commit (``.gitattributes`` excepted), so the repo holds exactly the staged files. Nothing is committed when
    nothing differs. The token comes from ``token`` or huggingface_hub's usual places; ``endpoint`` overrides
    ``HF_ENDPOINT``. Raises ``ValueError`` for bad input and :class:`PublishError` when the Hub fails.
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    if create_pr and revision not in (None, "main"):
        raise ValueError("--create-pr opens a pull request against main; leave out --revision.")
    if not (folder / CARD).is_file() or not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a staged folder (no README.md and config.json); stage it first.")
    token = resolve_token(token)
    card = check_card((folder / CARD).read_text(encoding="utf-8"))
    api = HfApi(endpoint=endpoint, token=token)
    branch = revision or "main"
    local = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    step = "validating the model card's metadata"
    try:
        validate_card_on_hub(card, endpoint=api.endpoint, token=token)
        step = f"creating the repository {repo_id}"
        repo_url = str(api.create_repo(repo_id, private=private, exist_ok=True))
        step = f"reading the repository {repo_id}"
        info = api.model_info(repo_id)
        if private and not info.private:
            raise PublishError(f"{repo_id} already exists and is public; --private only applies when the repo is "
                               "created. Make it private in its settings on the Hub first, or choose another repo id.")
        if branch != "main" and not create_pr:
            step = f"creating the branch {branch}"
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        step = f"listing the files of {repo_id}@{branch}"
        head = api.model_info(repo_id, revision=branch).sha
        remote = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=head)
                  if isinstance(f, RepoFile)}
        changed = [p for p in local if p not in remote or not _same_content(folder / p, remote[p])]
        deleted = [p for p in remote if p not in local and p != ".gitattributes"]
        unchanged = [p for p in local if p not in changed]
        if not changed and not deleted:
            return UploadResult(repo_id, repo_url, branch, head, None, None, [], [], unchanged)
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=folder / p) for p in changed]
        operations += [CommitOperationDelete(path_in_repo=p) for p in deleted]
        step = f"uploading {len(changed)} file(s) and committing to {repo_id}@{branch}"
        commit = api.create_commit(
            repo_id, operations, commit_message=commit_message or f"Upload {repo_id.split('/')[1]} (LiteWhisper)",
            revision=branch, create_pr=create_pr,
            # Commit on top of the files compared above; if the branch moved since, fail instead of overwriting.
            parent_commit=None if create_pr else head,
        )
    except PublishError:
        raise
    except Exception as err:  # network and server errors, whatever the HTTP client raises
        if isinstance(err, ValueError) and step.startswith("validating"):
            raise  # the Hub rejected the card: bad input, not a failed upload
        raise PublishError(
            f"Publishing to {repo_id} failed while {step}: {err}\nThe staged folder {folder} is unchanged. Run the "
            "same command again to retry: it uploads only what the repo does not hold yet."
        ) from err
    committed_to = commit.pr_revision if create_pr and commit.pr_revision else branch
    return UploadResult(repo_id, repo_url, committed_to, commit.oid, commit.commit_url, commit.pr_url, changed,
                        deleted, unchanged)


# ---------------------------------------------------------------------------------------------------------------
# One variant, or a batch of them
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PublishResult:
    staged: StagedFolder
    upload: UploadResult | None  # None for a dry run


def publish(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    evaluation: Sequence[str | os.PathLike] | None = None,
    staging_dir: str | os.PathLike | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,  # the card field's name
    datasets: Sequence[str] = (),
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    check: bool = True,
) -> PublishResult:
    """Stage ``model_dir``, check that the staged folder loads with remote code (``check``), and unless
    ``dry_run`` upload it to ``repo_id``. A dry run makes no network request. See :func:`stage_folder` and
    :func:`upload_staged_folder` for the arguments."""
    check_repo_id(repo_id)
    if create_pr and revision not in (None, "main"):
        raise ValueError("--create-pr opens a pull request against main; leave out --revision.")
    if not dry_run:
        resolve_token(token)  # fail before the (possibly long) staging when no token is set
    staged = stage_folder(model_dir, repo_id, staging_dir, evaluation, base_model, license, datasets)
    if check:
        staged.check = check_staged_folder(staged.path)
    if dry_run:
        return PublishResult(staged, None)
    upload = upload_staged_folder(staged.path, repo_id, private=private, revision=revision, create_pr=create_pr,
                                  commit_message=commit_message, token=token, endpoint=endpoint)
    return PublishResult(staged, upload)


_BATCH_KEYS = {
    "model", "repo_id", "evaluation", "staging_dir", "base_model", "license", "datasets", "private", "revision",
    "create_pr", "commit_message",
}


def load_batch(config_file: str | os.PathLike) -> list[dict]:
    """Read a batch file: ``variants``, a list of mappings with ``model`` and ``repo_id`` (and any other argument of
    :func:`publish`), and optional ``defaults`` applied to every variant. Relative paths are taken from the current
    folder, as with the other scripts. ``evaluation: []`` publishes without results."""
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(f"Batch file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("variants"), list) or not data["variants"]:
        raise ValueError(f"{path} must hold a 'variants' list (each with model and repo_id) and optional 'defaults'.")
    defaults = data.get("defaults") or {}
    unknown_top = set(data) - {"variants", "defaults"}
    if unknown_top or not isinstance(defaults, dict):
        raise ValueError(f"{path}: only 'variants' and 'defaults' (a mapping) are allowed at the top level.")
    jobs = []
    for i, variant in enumerate(data["variants"]):
        if not isinstance(variant, dict):
            raise ValueError(f"{path}: variants[{i}] must be a mapping with model and repo_id.")
        job = {**defaults, **variant}
        unknown = sorted(set(job) - _BATCH_KEYS)
        if unknown:
            raise ValueError(f"{path}: variants[{i}] has unknown key(s) {unknown}; allowed: {sorted(_BATCH_KEYS)}.")
        for key in ("model", "repo_id"):
            if not isinstance(job.get(key), str):
                raise ValueError(f"{path}: variants[{i}] needs '{key}' (a string).")
        for key in ("private", "create_pr"):
            # A quoted "false" would be truthy: only YAML booleans are accepted.
            if not isinstance(job.get(key, False), bool):
                raise ValueError(f"{path}: variants[{i}].{key} must be true or false, got {job[key]!r}.")
        for key in ("evaluation", "datasets"):
            if key in job:
                value = job[key]
                job[key] = [] if value in (None, False) else [value] if isinstance(value, str) else list(value)
        job.setdefault("staging_dir", str(default_staging_dir(job["model"])))
        jobs.append(job)
    for key, what in (("repo_id", "repo"), ("staging_dir", "staging_dir")):
        values = [str(Path(job[key]).resolve()) if key == "staging_dir" else job[key] for job in jobs]
        if len(set(values)) != len(values):
            raise ValueError(f"{path}: two variants share a {key}; give each variant its own {what}.")
    return jobs


def publish_batch(
    config_file: str | os.PathLike,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    check: bool = True,
    on_result: Callable[[PublishResult], None] | None = None,
) -> list[PublishResult]:
    """Publish every variant of a batch file (see :func:`load_batch`).

    All variants are staged and checked before anything is uploaded, so bad input in any of them stops the batch
    with nothing published. Uploads then run one after another; if one fails, :class:`PublishError` says which
    variants were published and which were not. ``on_result`` is called after each variant.
    """
    jobs = load_batch(config_file)
    for job in jobs:
        check_repo_id(job["repo_id"])
    if not dry_run:
        resolve_token(token)
    staged = []
    for job in jobs:
        folder = stage_folder(job["model"], job["repo_id"], job.get("staging_dir"), job.get("evaluation"),
                              job.get("base_model"), job.get("license", DEFAULT_LICENSE), job.get("datasets", ()))
        if check:
            folder.check = check_staged_folder(folder.path)
        staged.append(folder)
    results = []
    for job, folder in zip(jobs, staged, strict=True):
        upload = None
        if not dry_run:
            try:
                upload = upload_staged_folder(
                    folder.path, job["repo_id"], private=job.get("private", False), revision=job.get("revision"),
                    create_pr=job.get("create_pr", False), commit_message=job.get("commit_message"),
                    token=token, endpoint=endpoint)
            except PublishError as err:
                done = [r.staged.repo_id for r in results]
                left = [j["repo_id"] for j in jobs[len(results):]]
                raise PublishError(f"{err}\nBatch {config_file}: published {done or 'none'}; not published {left}."
                                   ) from err
        results.append(PublishResult(folder, upload))
        if on_result is not None:
            on_result(results[-1])
    return results

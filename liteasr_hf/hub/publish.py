"""Publish a compressed LiteWhisper folder to the Hugging Face Hub: stage, check, upload.

1. :func:`~.staging.stage_folder` copies what a user needs (weights, config, code files, processor, generation
   config, compression report) into a staging folder and renders the model card there; the source folder is only
   read.
2. :func:`~.check.check_staged_folder` loads the staged folder with ``trust_remote_code`` in a clean Python process
   in which ``liteasr_hf`` cannot be imported, as a user of the Hub repo would.
3. :func:`~.upload.upload_staged_folder` creates the repo (``exist_ok``), compares the staged files with the repo's
   and commits only what changed, in one commit; an unchanged folder makes no commit at all.

:func:`publish` runs the three; :func:`publish_batch` publishes every variant listed in a YAML file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .check import check_staged_folder
from .model_card import DEFAULT_LICENSE
from .repo import check_repo_id, resolve_token
from .staging import StagedFolder, default_staging_dir, stage_folder
from .upload import PublishError, UploadResult, upload_staged_folder


@dataclass
class PublishResult:
    """What publishing one variant did: its staged folder and, unless it was a dry run, the upload."""

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
    benchmark: str | os.PathLike | None = None,
    onnx: str | os.PathLike | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    check: bool = True,
    trust_remote_code: bool = False,
) -> PublishResult:
    """Stage ``model_dir``, check that the staged folder loads with remote code (``check``), and unless
    ``dry_run`` upload it to ``repo_id``. A dry run makes no network request. See :func:`stage_folder` and
    :func:`upload_staged_folder` for the arguments; ``trust_remote_code`` stages (and so runs and publishes) a folder's
    own code files where they differ from this liteasr_hf's, which are otherwise refused."""
    check_repo_id(repo_id)
    if create_pr and revision not in (None, "main"):
        raise ValueError("--create-pr opens a pull request against main; leave out --revision.")
    if not dry_run:
        resolve_token(token)  # fail before the (possibly long) staging when no token is set
    staged = stage_folder(model_dir, repo_id, staging_dir, evaluation, base_model, license, datasets, benchmark,
                          onnx, trust_remote_code=trust_remote_code)
    if check:
        staged.check = check_staged_folder(staged.path)
    if dry_run:
        return PublishResult(staged, None)
    upload = upload_staged_folder(staged.path, repo_id, private=private, revision=revision, create_pr=create_pr,
                                  commit_message=commit_message, token=token, endpoint=endpoint)
    return PublishResult(staged, upload)


_BATCH_KEYS = {
    "model", "repo_id", "evaluation", "benchmark", "onnx", "staging_dir", "base_model", "license", "datasets", "private",
    "revision", "create_pr", "commit_message",
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
        if job.get("benchmark") is not None and not isinstance(job["benchmark"], str):
            raise ValueError(f"{path}: variants[{i}].benchmark must be one file (a liteasr benchmark report).")
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
    trust_remote_code: bool = False,
) -> list[PublishResult]:
    """Publish every variant of a batch file (see :func:`load_batch`).

    All variants are staged and checked before anything is uploaded, so bad input in any of them stops the batch
    with nothing published. Uploads then run one after another; if one fails, :class:`PublishError` says which
    variants were published and which were not. ``on_result`` is called after each variant. ``trust_remote_code``
    applies to every variant (see :func:`publish`).
    """
    jobs = load_batch(config_file)
    for job in jobs:
        check_repo_id(job["repo_id"])
    if not dry_run:
        resolve_token(token)
    staged = []
    for job in jobs:
        folder = stage_folder(job["model"], job["repo_id"], job.get("staging_dir"), job.get("evaluation"),
                              job.get("base_model"), job.get("license", DEFAULT_LICENSE), job.get("datasets", ()),
                              job.get("benchmark"), job.get("onnx"), trust_remote_code=trust_remote_code)
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

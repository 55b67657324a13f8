"""Upload a staged folder to a Hub model repo: create the repo (``exist_ok``), compare the staged files with the
repo's by content hash and commit only what changed, in one commit; an unchanged folder makes no commit at all.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.hf_api import RepoFile

from .model_card import check_card, validate_card_on_hub
from .repo import check_repo_id, resolve_token
from .staging import CARD, STAGING_MARKER


class PublishError(RuntimeError):
    """Talking to the Hub failed (network, server, permissions); the staged and source folders are unchanged."""


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
    local = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != STAGING_MARKER)

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

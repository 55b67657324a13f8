"""The Hub repo to publish to and the token to publish with, both checked before any work is done."""

from __future__ import annotations

from huggingface_hub import get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id


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

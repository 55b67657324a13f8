"""Publishing to the Hugging Face Hub: staging a folder, its model card, the clean-process check, the upload.

``staging`` chooses and copies the files, ``model_card`` renders the card (``speed`` takes its speed comparison
from one benchmark report of both models), ``check`` loads the staged folder as a Hub user would, ``repo`` checks the
repo id and token, ``upload`` commits what changed, and ``publish`` runs them for one variant or a batch.
"""

from .check import BLOCK_LITEASR_HF, check_staged_folder
from .model_card import build_model_card
from .publish import PublishResult, load_batch, publish, publish_batch
from .repo import check_repo_id, resolve_token
from .staging import StagedFolder, default_staging_dir, model_files, stage_folder
from .upload import PublishError, UploadResult, upload_staged_folder

__all__ = [
    "BLOCK_LITEASR_HF",
    "PublishError",
    "PublishResult",
    "StagedFolder",
    "UploadResult",
    "build_model_card",
    "check_repo_id",
    "check_staged_folder",
    "default_staging_dir",
    "load_batch",
    "model_files",
    "publish",
    "publish_batch",
    "resolve_token",
    "stage_folder",
    "upload_staged_folder",
]

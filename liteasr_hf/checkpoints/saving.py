"""Write a complete, loadable model folder in one atomic step."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import PreTrainedModel, ProcessorMixin

from ..atomic import atomic_directory


def save_model_folder(
    model: PreTrainedModel,
    output: str | os.PathLike,
    processor: ProcessorMixin | None = None,
    extra_files: dict[str, str | dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``model`` (safetensors, config, generation config, code files for LiteWhisper), ``processor``
    (tokenizer and feature extractor) and ``extra_files`` (name -> text or JSON-able dict) to ``output``.

    The folder is written beside ``output`` under a temporary name and renamed into place at the end, so an
    interrupted save never leaves half a model. Returns the final path.
    """
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.max_length in (None, 20):
        # transformers' default of 20 tokens truncates transcripts; Whisper's real limit is its decoder length.
        generation_config.max_length = model.config.max_target_positions
    with atomic_directory(output, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if processor is not None:
            save_processor(processor, tmp)
        for name, content in (extra_files or {}).items():
            text = content if isinstance(content, str) else json.dumps(content, indent=2) + "\n"
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(output).resolve()


def save_processor(processor: ProcessorMixin, folder: str | os.PathLike) -> None:
    """Save a Whisper processor into ``folder`` so that transformers 4.x and 5.x both read it back.

    Besides ``processor.save_pretrained``: the feature extractor's own ``preprocessor_config.json`` (transformers 5
    folds it into ``processor_config.json``; 4.x, other runtimes and openai/whisper-* folders use this file), the
    English spelling list as ``normalizer.json`` (the tokenizer reads it from there but does not save it), and the
    special tokens under the key 4.x reads (5.x writes them as an ``extra_special_tokens`` list, which 4.57 takes
    for a mapping and fails on; 5.x reads ``additional_special_tokens`` too).
    """
    folder = Path(folder)
    processor.save_pretrained(folder)
    feature_extractor = getattr(processor, "feature_extractor", None)
    if feature_extractor is not None and not (folder / "preprocessor_config.json").exists():
        feature_extractor.save_pretrained(folder)
    tokenizer = getattr(processor, "tokenizer", None)
    spelling = getattr(tokenizer, "english_spelling_normalizer", None)
    if spelling and not (folder / "normalizer.json").exists():
        (folder / "normalizer.json").write_text(json.dumps(spelling, indent=2) + "\n", encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if isinstance(config.get("extra_special_tokens"), list):
            config["additional_special_tokens"] = config.pop("extra_special_tokens")
            config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

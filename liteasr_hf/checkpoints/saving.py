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
            processor.save_pretrained(tmp)
            # WhisperTokenizer loads its English spelling list from normalizer.json but does not save it.
            spelling = getattr(getattr(processor, "tokenizer", None), "english_spelling_normalizer", None)
            if spelling and not (tmp / "normalizer.json").exists():
                (tmp / "normalizer.json").write_text(json.dumps(spelling, indent=2) + "\n", encoding="utf-8")
        for name, content in (extra_files or {}).items():
            text = content if isinstance(content, str) else json.dumps(content, indent=2) + "\n"
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(output).resolve()

"""The layout of the published ``efficient-speech/lite-whisper-*`` repos, and upgrading such a folder to ours.

Those repos hold ``config.json`` (model_type ``lite-whisper``, ``low_rank_config``, an ``auto_map`` for
``AutoConfig`` and ``AutoModel`` only), the paper's two code files, the weights and ``generation_config.json``,
but no tokenizer or feature extractor: their model cards load the processor from ``openai/whisper-<size>``. Our
classes read their weights unchanged; :func:`upgrade_published` writes our complete folder from one.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoProcessor, GenerationConfig, PretrainedConfig

from ..models.lite_whisper.configuration_lite_whisper import LiteWhisperConfig
from ..models.lite_whisper.modeling_lite_whisper import LiteWhisperForConditionalGeneration
from .saving import save_model_folder

#: Files of a processor (tokenizer and feature extractor), in the layouts transformers 4 and 5 write.
PROCESSOR_MARKERS = ("preprocessor_config.json", "processor_config.json")


def whisper_size(config: PretrainedConfig) -> str:
    """The OpenAI Whisper checkpoint a configuration has the dimensions of: ``tiny.en``, ``base``, ...,
    ``large-v2``, ``large-v3``, ``large-v3-turbo``. Raises ``ValueError`` for dimensions no Whisper has."""
    sizes = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}
    size = sizes.get(config.d_model)
    if size is None:
        raise ValueError(f"d_model = {config.d_model} matches no OpenAI Whisper checkpoint ({sorted(sizes)}).")
    if size == "large":
        if config.num_mel_bins == 80:
            return "large-v2"
        return "large-v3-turbo" if config.decoder_layers == 4 else "large-v3"
    # English-only checkpoints have a vocabulary one token smaller (51864) than the multilingual ones (51865).
    return f"{size}.en" if config.vocab_size == 51864 else size


def processor_source(config: PretrainedConfig) -> str:
    """The Hub id to take a folder's missing tokenizer and feature extractor from: ``openai/whisper-<size>``."""
    return f"openai/whisper-{whisper_size(config)}"


def has_processor(folder: str | os.PathLike) -> bool:
    """Whether a local model folder carries a feature extractor (and so, in Whisper's layouts, a processor)."""
    return any((Path(folder) / name).is_file() for name in PROCESSOR_MARKERS)


def missing_processor_message(source: str | os.PathLike, config: PretrainedConfig) -> str:
    """What to do about a model folder without processor files."""
    stock = processor_source(config)
    return (
        f"{source} has no tokenizer or feature extractor (the published lite-whisper repos carry none). Take them "
        f"from the Whisper checkpoint it was compressed from, {stock}: pass "
        f"tokenizer={stock!r}, feature_extractor={stock!r} to pipeline(), or write a complete folder once with "
        f"liteasr upgrade-published --model {source} --output OUT (--processor DIR for a local copy)."
    )


def upgrade_published(
    source: str | os.PathLike,
    output: str | os.PathLike,
    processor: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Read a published-layout LiteWhisper folder or Hub id with our classes and write our complete folder.

    The output holds the same weights, bit for bit (loaded in their stored dtype), our code files with the full
    ``auto_map`` and ``custom_pipelines``, the processor (from ``processor``; by default the folder's own or
    ``openai/whisper-<size>``), and ``generation_config.json`` with ``max_length`` set. No code from ``source``
    runs. Written atomically; an existing ``output`` is refused unless ``overwrite``.
    """
    config = LiteWhisperConfig.from_pretrained(source)
    if processor is None:
        processor = source if Path(source).is_dir() and has_processor(source) else processor_source(config)
    model = LiteWhisperForConditionalGeneration.from_pretrained(source, dtype="auto")
    try:
        model.generation_config = GenerationConfig.from_pretrained(source)
    except OSError:  # a folder without generation_config.json takes the stock checkpoint's
        model.generation_config = GenerationConfig.from_pretrained(processor)
    try:
        loaded_processor = AutoProcessor.from_pretrained(processor)
    except (OSError, ValueError) as err:
        raise OSError(f"Could not load the processor from {processor}: {err}\n"
                      + missing_processor_message(source, config)) from err
    return save_model_folder(model, output, processor=loaded_processor, overwrite=overwrite)

"""Import CTranslate2 (faster-whisper) Whisper checkpoints as Transformers Whisper folders.

A CTranslate2 Whisper model is a folder with ``model.bin`` (the weights), ``config.json`` (suppressed tokens,
alignment heads), ``tokenizer.json`` and a vocabulary list. :func:`convert_ctranslate2` reads it back into
``WhisperForConditionalGeneration`` and writes a folder that stock ``from_pretrained`` and
``pipeline("automatic-speech-recognition")`` load: safetensors weights, ``config.json``,
``generation_config.json``, tokenizer and feature extractor.

Locating the files and parsing ``model.bin`` live in :mod:`.ctranslate2_format`, the weight-name mapping in
:mod:`.ctranslate2_weights`; this module rebuilds the tokenizer, generation config and model around them.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AddedToken,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from ..atomic import atomic_directory, check_distinct
from .ctranslate2_format import read_model_bin, resolve_ctranslate2_source
from .ctranslate2_weights import WhisperShape, whisper_state_dict
from .saving import save_processor

# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and generation settings
# ---------------------------------------------------------------------------------------------------------------


def _timestamp_token(i: int) -> str:
    # The same formatting CTranslate2 uses to list timestamp tokens in its vocabulary: <|0.00|> ... <|30.00|>.
    return "<|%.2f|>" % (i * 0.02)


def _ct2_vocabulary(files_dir: Path) -> list[str] | None:
    """The id -> token list CTranslate2 saved (``vocabulary.json`` or ``vocabulary.txt``), if present."""
    if (files_dir / "vocabulary.json").is_file():
        return json.loads((files_dir / "vocabulary.json").read_text(encoding="utf-8"))
    if (files_dir / "vocabulary.txt").is_file():
        return (files_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    return None


def default_english_spelling() -> Path | None:
    """openai-whisper's British -> American spelling list, when a package that ships it is installed.

    Transformers' ``WhisperTokenizer.normalize`` needs it (saved as ``normalizer.json``); CTranslate2 folders
    do not carry it.
    """
    for module, relative in (("liteasr_hf", "assets/english.json"), ("whisper", "normalizers/english.json")):
        spec = importlib.util.find_spec(module)
        for location in (spec.submodule_search_locations or []) if spec else []:
            if (candidate := Path(location) / relative).is_file():
                return candidate
    return None


def build_tokenizer(files_dir: Path, vocab_size: int, english_spelling: Path | None = None) -> WhisperTokenizerFast:
    """The fast Whisper tokenizer from the checkpoint's ``tokenizer.json``, completed to ``vocab_size`` tokens.

    Every special added token becomes an extra special token in id order, so ``all_special_ids[-1]`` is
    ``<|notimestamps|>`` (Transformers puts the first timestamp right after it). Older Hub tokenizers that
    faster-whisper copied (tiny.en) stop before the timestamp tokens; they are added back as openai's
    ``tokenizer.json`` for multilingual models has them (not special, so ``decode`` can filter them).
    """
    tokenizer_file = files_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{files_dir} has no tokenizer.json; the tokenizer cannot be rebuilt without it.")
    added = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens", [])
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t.get("special")]
    # The fast class and `additional_special_tokens`: what transformers 4.57 (whose WhisperTokenizer is the slow,
    # vocab.json-based one) and 5.x (which takes the argument as extra special tokens) both build from tokenizer.json.
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        additional_special_tokens=specials,
        pad_token="<|endoftext|>",
        model_max_length=1024,  # as openai/whisper-* tokenizer_config.json
        normalizer_file=str(english_spelling) if english_spelling else None,
    )
    if "<|notimestamps|>" not in specials:
        raise ValueError(f"{tokenizer_file}: no <|notimestamps|> special token; is this a Whisper tokenizer?")
    missing = vocab_size - len(tokenizer)
    if missing > 0:
        if tokenizer.convert_tokens_to_ids("<|notimestamps|>") != len(tokenizer) - 1:
            raise ValueError(f"{tokenizer_file}: cannot place timestamp tokens right after <|notimestamps|>.")
        tokenizer.add_tokens(
            [
                AddedToken(_timestamp_token(i), lstrip=False, rstrip=False, normalized=True, special=False)
                for i in range(missing)
            ]
        )
    if len(tokenizer) != vocab_size:
        raise ValueError(f"{tokenizer_file}: {len(tokenizer)} tokens, but the embeddings have {vocab_size} rows.")

    # The vocabulary list CTranslate2 wrote from the original tokenizer must agree id by id.
    vocabulary = _ct2_vocabulary(files_dir)
    if vocabulary is not None:
        ours = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        if len(vocabulary) != vocab_size or ours != vocabulary:
            first = next((i for i, (a, b) in enumerate(zip(ours, vocabulary)) if a != b), len(vocabulary))
            raise ValueError(
                f"{files_dir}: tokenizer.json and the CTranslate2 vocabulary disagree "
                f"(sizes {vocab_size} and {len(vocabulary)}; first difference at id {first})."
            )
    return tokenizer


def _read_ct2_config(files_dir: Path) -> dict:
    path = files_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{files_dir} has no config.json (suppressed tokens come from it).")
    config = json.loads(path.read_text(encoding="utf-8"))
    if absent := [k for k in ("suppress_ids", "suppress_ids_begin") if k not in config]:
        raise ValueError(f"{path}: missing {', '.join(absent)}.")
    return config


def whisper_generation_config(
    tokenizer: WhisperTokenizerFast, shape: WhisperShape, ct2_config: dict, where: str = "config.json"
) -> GenerationConfig:
    """The ``generation_config.json`` openai/whisper-* ship on the Hub, with ids read from the tokenizer.

    ``forced_decoder_ids`` is left out: Transformers >= 4.38 builds the prompt from ``lang_to_id``,
    ``task_to_id``, ``task`` and ``no_timestamps_token_id`` and deprecates it.
    """
    ids = tokenizer.convert_tokens_to_ids
    end = ids("<|endoftext|>")
    # openai-whisper's rule (model.py, ``is_multilingual``): English-only models have the 51864-token vocabulary.
    multilingual = shape.vocab_size >= 51865
    # CTranslate2's fallback when the Hub gave none: every head of the last half of the decoder layers.
    layers, heads_per_layer = shape.decoder_layers, shape.decoder_attention_heads
    heads = ct2_config.get("alignment_heads") or itertools.product(range(layers // 2, layers), range(heads_per_layer))
    settings = dict(
        alignment_heads=[list(h) for h in heads],
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        bos_token_id=end,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        eos_token_id=end,
        pad_token_id=end,
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        max_length=shape.max_target_positions,
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        return_timestamps=False,
        suppress_tokens=list(ct2_config["suppress_ids"]),
    )
    if multilingual:
        vocab = tokenizer.get_vocab()
        lang_to_id = {f"<|{code}|>": vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab}
        # tiny.en's config.json lists bogus lang_ids; only a multilingual model's list is a cross-check.
        if "lang_ids" in ct2_config and sorted(lang_to_id.values()) != sorted(ct2_config["lang_ids"]):
            raise ValueError(f"{where}: lang_ids do not match the tokenizer's language tokens.")
        settings["lang_to_id"] = dict(sorted(lang_to_id.items()))
        settings["task_to_id"] = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
        # With no task, Transformers puts no task token after a detected language and the model drifts; openai's
        # Hub files get <|transcribe|> there through the deprecated forced_decoder_ids [[1, None], [2, transcribe]].
        settings["task"] = "transcribe"
    return GenerationConfig(**settings)


# ---------------------------------------------------------------------------------------------------------------
# The whole conversion
# ---------------------------------------------------------------------------------------------------------------

_DTYPES_OUT = (torch.float32, torch.float16, torch.bfloat16)


def build_whisper_model(
    shape: WhisperShape, state_dict: dict[str, np.ndarray], generation: GenerationConfig, dtype: torch.dtype
) -> WhisperForConditionalGeneration:
    """Instantiate ``WhisperForConditionalGeneration`` directly from the converted weights (no random init)."""
    config = WhisperConfig(
        vocab_size=shape.vocab_size,
        num_mel_bins=shape.num_mel_bins,
        d_model=shape.d_model,
        encoder_layers=shape.encoder_layers,
        decoder_layers=shape.decoder_layers,
        encoder_attention_heads=shape.encoder_attention_heads,
        decoder_attention_heads=shape.decoder_attention_heads,
        encoder_ffn_dim=shape.encoder_ffn_dim,
        decoder_ffn_dim=shape.decoder_ffn_dim,
        max_source_positions=shape.max_source_positions,
        max_target_positions=shape.max_target_positions,
        decoder_start_token_id=generation.decoder_start_token_id,
        bos_token_id=generation.bos_token_id,
        eos_token_id=generation.eos_token_id,
        pad_token_id=generation.pad_token_id,
        suppress_tokens=generation.suppress_tokens,
        begin_suppress_tokens=generation.begin_suppress_tokens,
        tie_word_embeddings=shape.tied_projection,
        dtype=dtype,
    )
    with torch.device("meta"):  # parameters come from the checkpoint: skip allocating and initializing them
        model = WhisperForConditionalGeneration(config)
    wanted = model.state_dict()
    if wrong := [f"{n} {tuple(a.shape)} (expected {tuple(wanted[n].shape)})" for n, a in state_dict.items()
                 if n in wanted and tuple(a.shape) != tuple(wanted[n].shape)]:
        raise ValueError(f"weights with the wrong shape: {', '.join(wrong)}")
    # Copy out of the read-only memory map, then cast.
    tensors = {name: torch.from_numpy(np.array(a, copy=True)).to(dtype) for name, a in state_dict.items()}
    result = model.load_state_dict(tensors, strict=False, assign=True)
    expected_missing = ["proj_out.weight"] if shape.tied_projection else []
    if sorted(result.missing_keys) != expected_missing or result.unexpected_keys:
        raise ValueError(f"weights do not fit: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    if meta := [n for n, p in itertools.chain(model.named_parameters(), model.named_buffers()) if p.is_meta]:
        raise ValueError(f"parameters left without weights: {meta}")
    model.generation_config = generation
    return model.eval()


def convert_ctranslate2(
    source: str | os.PathLike,
    output: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    english_spelling: str | os.PathLike | None = None,
) -> Path:
    """Convert a CTranslate2 Whisper checkpoint (folder or packaged alias) into a Transformers folder.

    The folder holds safetensors weights, ``config.json``, ``generation_config.json``, the tokenizer and the
    feature extractor (a saved ``WhisperProcessor``). It is written to a temporary folder beside ``output``
    and renamed into place, so a failure leaves nothing behind. ``english_spelling`` is openai-whisper's
    ``english.json`` (saved as ``normalizer.json``); by default it is looked up with
    :func:`default_english_spelling`. Returns the output path.
    """
    if dtype not in _DTYPES_OUT:
        raise ValueError(f"dtype must be one of {', '.join(map(str, _DTYPES_OUT))}, got {dtype}.")
    target = Path(output)
    src = resolve_ctranslate2_source(source)
    for part in src.parts:
        check_distinct(target, part.parent, "the CTranslate2 checkpoint")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target.resolve()} already exists; pass overwrite=True (--overwrite) or another path.")
    where = str(src.parts[0].parent)
    ckpt = read_model_bin(src.parts)
    shape, state_dict = whisper_state_dict(ckpt, where)

    spelling = Path(english_spelling) if english_spelling else default_english_spelling()
    if spelling is None:
        warnings.warn(
            "openai-whisper's english.json spelling list was not found: the output has no normalizer.json and "
            "tokenizer.normalize() will not work (pass english_spelling=...).",
            stacklevel=2,
        )
    tokenizer = build_tokenizer(src.files_dir, shape.vocab_size, spelling)
    ct2_config = _read_ct2_config(src.files_dir)
    generation = whisper_generation_config(tokenizer, shape, ct2_config, str(src.files_dir / "config.json"))
    model = build_whisper_model(shape, state_dict, generation, dtype)
    feature_extractor = WhisperFeatureExtractor(feature_size=shape.num_mel_bins)  # 80 mel bins, 128 for large-v3
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    with atomic_directory(target, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        save_processor(processor, tmp)
        # The tokenizer was built from this file; copied as is (save_processor writes the same list otherwise).
        if spelling is not None:
            shutil.copyfile(spelling, Path(tmp) / "normalizer.json")
    return target.resolve()

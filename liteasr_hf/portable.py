"""What gets published says nothing about the user's machine: paths in reports and on model cards, made portable.

A compression report and a model card are public; a user's directory layout is neither portable nor theirs to
publish. Hub ids (``openai/whisper-base``), packaged aliases, preset names, flags and numbers stay as they are.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path, PurePosixPath, PureWindowsPath

from .shipped import shipped_data_path

#: ``namespace/name``: what a Hub repo id looks like (a relative ``a/b`` path looks the same).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
#: Options of our scripts that only ever take local paths.
_PATH_OPTIONS = {"--output", "--config", "--plan", "--offload-folder"}


def portable_path(source: str | os.PathLike) -> str:
    """A Hub id as it is; a local path relative to the working directory when inside it, else its last part:
    the report is published with the model, and absolute paths would say nothing useful about another machine."""
    path = Path(source)
    if not path.exists():
        return str(source)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return path.resolve().name


def portable_data(data: str | os.PathLike) -> str:
    """Speech data as a report records it: the speech liteasr-hf ships relative to its root (``data/evaluation.jsonl``,
    which :func:`~liteasr_hf.shipped.shipped_root` finds in a checkout and in an installed package alike), anything
    else as :func:`portable_path` does. A report read on another machine then still knows the shipped speech."""
    shipped = shipped_data_path(data)
    return str(shipped) if shipped is not None else portable_path(data)


def portable_command(command: str) -> str:
    """``command`` with every local path reduced to its last component (``/home/me/models/base`` -> ``base``,
    ``--config=~/my.yaml`` -> ``--config=my.yaml``): a card is public, and a user's directory layout is neither
    portable nor theirs to publish. Hub ids (``openai/whisper-base``), packaged aliases, preset names, flags and
    numbers stay; so do relative ``a/b`` values outside the options that only take paths, which look like Hub ids."""
    try:
        tokens = shlex.split(command)
    except ValueError:  # unbalanced quotes: still reduce what can be reduced
        tokens = command.split()
    out, path_only = [], False
    for token in tokens:
        if token.startswith("--"):
            option, eq, value = token.partition("=")
            out.append(f"{option}={portable_value(value, option in _PATH_OPTIONS)}" if eq else token)
            path_only = not eq and option in _PATH_OPTIONS
        else:
            out.append(portable_value(token, path_only))
            path_only = False
    return shlex.join(out)


#: A model named with a label or a variant, as the benchmarks take them: ``LABEL=PATH`` (``benchmark-vllm``) and
#: ``PATH:TYPE@PADDING`` (``benchmark --runtime onnxruntime``): the path is reduced, the label and variant kept.
_MODEL_SPEC = re.compile(r"(?P<label>[\w.-]+=)?(?P<path>[^=]+?)(?P<variant>(?::[\w-]+)?(?:@[\w-]+)?)")


def portable_value(value: str, path_only: bool = False) -> str:
    """One command-line value: a path as its last component, anything else unchanged (``path_only``: the value
    is known to be a path, even where it looks like a Hub id)."""
    if re.match(r"^[A-Za-z]:[\\/]", value) or "\\" in value:  # a Windows path
        return PureWindowsPath(value.rstrip("\\/")).name or value
    spec = _MODEL_SPEC.fullmatch(value)
    if spec and (spec["label"] or spec["variant"]):
        return (spec["label"] or "") + portable_value(spec["path"], path_only) + spec["variant"]
    local = value.startswith(("/", "~", "./", "../")) or ("/" in value and (path_only or not HUB_ID.fullmatch(value)))
    return PurePosixPath(value.rstrip("/")).name or value if local else value

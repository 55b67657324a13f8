"""Compression presets: readable YAML files in ``configs/`` (shipped with the package, :mod:`liteasr_hf.shipped`)
that hold :class:`CompressionSettings`."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..shipped import PRESET_DIR
from .settings import CompressionSettings


def preset_path(name: str) -> Path:
    """The file of preset ``name`` (e.g. ``base``, ``base-fast``, ``paper``), or ``name`` itself if it is a path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"Preset file {path} does not exist.")
        return path
    candidate = PRESET_DIR / f"{name}.yaml"
    if not candidate.is_file():
        available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
        raise FileNotFoundError(
            f"Unknown preset {name!r}. Available in {PRESET_DIR}: {', '.join(available) or 'none'}; "
            "or pass a YAML file with --config."
        )
    return candidate


def load_settings(name_or_path: str | os.PathLike, **overrides) -> CompressionSettings:
    """Read a preset (by name or path) and apply ``overrides`` (keys of :class:`CompressionSettings`,
    ``None`` values ignored). Errors name the bad key and where its value came from: the file, or the overrides."""
    path = preset_path(str(name_or_path))
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        # On their own, over the defaults: a bad one is not the file's fault. A floor is checked against the budget
        # once merged with the file, which may hold the budget.
        CompressionSettings.from_dict({"budget": 1.0, **given} if "layer_floor" in given else given)
    except (ValueError, TypeError) as err:
        raise ValueError(f"override {err}") from err
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(values).__name__}.")
    try:
        return CompressionSettings.from_dict({**values, **given})
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from err


_SIZES = {384: "tiny", 512: "base", 768: "small", 1024: "medium"}


def default_preset(config) -> str:
    """The default-flavour preset for a Whisper ``config``, recognised by its width and decoder depth."""
    if config.d_model == 1280:
        return "large-v3-turbo" if config.decoder_layers <= 4 else "large-v3"
    if config.d_model not in _SIZES:
        raise ValueError(f"No preset for a Whisper with d_model={config.d_model}; pass --preset or --config.")
    return _SIZES[config.d_model]

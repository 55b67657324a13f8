"""Open an export with onnx-asr, English-only models included.

onnx-asr 0.12 (``load_model("whisper", folder)``, its ``WhisperHf`` loader) always prompts
``<|startoftranscript|><|lang|><|task|><|notimestamps|>``. English-only Whisper models (``*.en``) were trained
with ``<|startoftranscript|><|notimestamps|>`` and mostly answer end-of-text to the longer prompt. For them the
loaded model's prompt is set to theirs; ``recognize`` must then be called with ``language="notimestamps"``, the
token onnx-asr writes in the language slot, which is dropped from the prompt here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ENGLISH_ONLY_LANGUAGE = "notimestamps"


def load_onnx_asr(folder: str | os.PathLike, quantization: str | None = None, **kwargs):
    """``onnx_asr.load_model("whisper", folder, quantization=..., **kwargs)``, with an English-only model's prompt.

    Returns ``(model, language)``: pass ``language`` to ``model.recognize`` (``"en"`` for multilingual models).
    """
    import onnx_asr

    model = onnx_asr.load_model("whisper", folder, quantization=quantization, **kwargs)
    generation = json.loads((Path(folder) / "generation_config.json").read_text(encoding="utf-8"))
    if generation.get("is_multilingual", True):
        return model, "en"
    asr = getattr(model, "asr", None)
    tokens = getattr(asr, "_tokens", None)
    if tokens is None or not hasattr(asr, "_transcribe_input"):
        raise RuntimeError(f"This onnx-asr ({getattr(onnx_asr, '__version__', '?')}) is not laid out as 0.12 is; "
                           "the English-only prompt cannot be set. Use onnx-asr 0.12.")
    asr._transcribe_input = np.array([[tokens["<|startoftranscript|>"], tokens["<|notimestamps|>"]]], np.int64)
    return model, ENGLISH_ONLY_LANGUAGE

"""liteasr-hf: LiteASR low-rank compression of Whisper's encoder as a Hugging Face Transformers plugin.

Importing the package registers the LiteWhisper classes with transformers' Auto classes, so that
``AutoModelForSpeechSeq2Seq.from_pretrained(path)`` loads a LiteWhisper folder without remote code.

Layout: ``models/lite_whisper`` the model code that travels to the Hub; ``compression`` the method;
``checkpoints`` model folders and formats; ``data`` speech; ``evaluation`` WER, speed and plots; ``hub``
publishing. The tools below are importable from here too; they load on first use, so that importing the
package for its model classes stays as light as importing transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel, AutoModelForSpeechSeq2Seq
from transformers.pipelines import SUPPORTED_TASKS

from .models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES, LiteWhisperConfig
from .models.lite_whisper.modeling_lite_whisper import (
    LiteWhisperForConditionalGeneration,
    LiteWhisperModel,
    LowRankLinear,
)
from .models.lite_whisper.pipeline_lite_whisper import LiteWhisperSpeechRecognitionPipeline

__version__ = "0.1.0"

AutoConfig.register(LiteWhisperConfig.model_type, LiteWhisperConfig, exist_ok=True)
# AutoModel gives the model that generates, as the published lite-whisper repos' auto_map does (see AUTO_MAP).
AutoModel.register(LiteWhisperConfig, LiteWhisperForConditionalGeneration, exist_ok=True)
AutoModelForSpeechSeq2Seq.register(LiteWhisperConfig, LiteWhisperForConditionalGeneration, exist_ok=True)
# transformers' ASR pipeline recognises Whisper by model_type; ours is that pipeline with lite-whisper treated as
# Whisper and every other model as before. With it, pipeline("automatic-speech-recognition", model=...) serves any
# lite-whisper folder (ours, or a published one without our pipeline file) with no remote code.
SUPPORTED_TASKS["automatic-speech-recognition"]["impl"] = LiteWhisperSpeechRecognitionPipeline
LiteWhisperConfig.builtin_asr_pipeline = True

#: name -> sub-package that defines it (imported on first access).
_TOOLS = {
    "CompressionSettings": "compression",
    "RankPlan": "compression",
    "compress": "compression",
    "compress_checkpoint": "compression",
    "load_settings": "compression",
    "Placement": "checkpoints",
    "convert_ctranslate2": "checkpoints",
    "load_model_and_processor": "checkpoints",
    "save_model_folder": "checkpoints",
    "SpeechSource": "data",
    "load_audio": "data",
    "load_speech": "data",
    "compare_models": "evaluation",
    "evaluate_model": "evaluation",
    "run_benchmark": "evaluation",
    "build_model_card": "hub",
    "publish": "hub",
    "publish_batch": "hub",
    "export_onnx": "integrations.onnx",
}

if TYPE_CHECKING:
    from .checkpoints import Placement, convert_ctranslate2, load_model_and_processor, save_model_folder
    from .compression import CompressionSettings, RankPlan, compress, compress_checkpoint, load_settings
    from .data import SpeechSource, load_audio, load_speech
    from .evaluation import compare_models, evaluate_model, run_benchmark
    from .hub import build_model_card, publish, publish_batch
    from .integrations.onnx import export_onnx


def __getattr__(name: str):
    if name in _TOOLS:
        return getattr(importlib.import_module(f".{_TOOLS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TOOLS))


__all__ = [
    "LOW_RANK_MODULES",
    "LiteWhisperConfig",
    "LiteWhisperModel",
    "LiteWhisperForConditionalGeneration",
    "LiteWhisperSpeechRecognitionPipeline",
    "LowRankLinear",
    "__version__",
    *_TOOLS,
]

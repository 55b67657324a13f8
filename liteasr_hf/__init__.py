"""liteasr-hf: LiteASR low-rank compression of Whisper's encoder as a Hugging Face Transformers plugin.

Importing the package registers the LiteWhisper classes with transformers' Auto classes, so that
``AutoModelForSpeechSeq2Seq.from_pretrained(path)`` loads a LiteWhisper folder without remote code.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSpeechSeq2Seq

from .configuration_lite_whisper import LOW_RANK_MODULES, LiteWhisperConfig
from .modeling_lite_whisper import (
    LiteWhisperForConditionalGeneration,
    LiteWhisperModel,
    LowRankLinear,
)
from .pipeline_lite_whisper import LiteWhisperSpeechRecognitionPipeline

__version__ = "0.1.0"

AutoConfig.register(LiteWhisperConfig.model_type, LiteWhisperConfig, exist_ok=True)
AutoModel.register(LiteWhisperConfig, LiteWhisperModel, exist_ok=True)
AutoModelForSpeechSeq2Seq.register(LiteWhisperConfig, LiteWhisperForConditionalGeneration, exist_ok=True)

__all__ = [
    "LOW_RANK_MODULES",
    "LiteWhisperConfig",
    "LiteWhisperModel",
    "LiteWhisperForConditionalGeneration",
    "LiteWhisperSpeechRecognitionPipeline",
    "LowRankLinear",
    "__version__",
]

"""Speech recognition pipeline for LiteWhisper models.

transformers' ASR pipeline chooses Whisper's pre- and post-processing (30 s chunking, sequential long-form,
timestamps, language and task) by ``model.config.model_type == "whisper"``; a ``lite-whisper`` model would
otherwise fall into the CTC branch. ``config.custom_pipelines`` names this class, so that
``pipeline("automatic-speech-recognition", model=path, trust_remote_code=True)`` uses it.

This file travels to the Hugging Face Hub next to the weights: it imports only transformers.
"""

from __future__ import annotations

from transformers import AutomaticSpeechRecognitionPipeline


class LiteWhisperSpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """`AutomaticSpeechRecognitionPipeline` that treats the model as Whisper."""

    def __init__(self, model, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        # Set after the parent's __init__, which assigns `type` from model_type; everything that reads it
        # (preprocess, _forward, postprocess, parameter checks) runs later.
        self.type = "seq2seq_whisper"

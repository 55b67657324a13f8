"""Speech recognition pipeline for LiteWhisper models.

transformers' ASR pipeline chooses Whisper's pre- and post-processing (30 s chunking, sequential long-form,
timestamps, language and task) by ``model.config.model_type == "whisper"``; a ``lite-whisper`` model would
otherwise fall into the generic sequence-to-sequence branch. This class is that pipeline, with ``lite-whisper``
treated as Whisper and every other model as before. It reaches users two ways:

- with remote code: ``config.custom_pipelines`` of a saved folder names this file, so
  ``pipeline("automatic-speech-recognition", model=path, trust_remote_code=True)`` uses it;
- in a process that imported ``liteasr_hf``: the package makes it the implementation of the
  ``automatic-speech-recognition`` task, so ``pipeline(...)`` needs no remote code, for the published
  lite-whisper repos' folders too.

This file travels to the Hugging Face Hub next to the weights: it imports only transformers.
"""

from __future__ import annotations

from transformers import AutomaticSpeechRecognitionPipeline


class LiteWhisperSpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """`AutomaticSpeechRecognitionPipeline` that treats a ``lite-whisper`` model as Whisper."""

    # The parent's `__init__` assigns `type` from model_type and, in transformers 4.57, already checks the call
    # parameters against it (a lite-whisper model is "ctc" there, which rejects `return_timestamps=False`): so
    # `type` reads as Whisper's for a lite-whisper model from the start, and as the parent set it otherwise.
    @property
    def type(self) -> str:
        return "seq2seq_whisper" if self.model.config.model_type == "lite-whisper" else self._type

    @type.setter
    def type(self, value: str) -> None:
        self._type = value

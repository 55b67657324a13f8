"""Offline batch transcription with vLLM's ``LLM.generate``: the prompts the server would build, greedy."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .benchmark import SAMPLE_RATE


def transcribe_offline(
    model: str | os.PathLike,
    audios: Sequence[np.ndarray],
    *,
    language: str | None = "en",
    task: str = "transcribe",
    max_new_tokens: int = 440,
    **llm_kwargs,
) -> list[str]:
    """Transcribe 16 kHz mono ``audios`` (each at most 30 s) in one ``LLM.generate`` batch; returns the texts.

    ``llm_kwargs`` go to ``vllm.LLM`` (``tokenizer``, ``dtype``, ``max_model_len``, ``enforce_eager``, ...). Call
    it under ``if __name__ == "__main__":`` in a script: vLLM starts its engine in a spawned process.
    """
    import liteasr_hf  # noqa: F401  the lite-whisper config, for the prompt below
    from transformers import AutoConfig
    from vllm import LLM, SamplingParams

    from .model import decoder_prompt

    config = AutoConfig.from_pretrained(model, revision=llm_kwargs.get("revision"))
    prompt = decoder_prompt(config, language, task)
    llm_kwargs.setdefault("max_model_len", config.max_target_positions)
    llm_kwargs.setdefault("limit_mm_per_prompt", {"audio": 1})
    llm = LLM(model=str(model), **llm_kwargs)
    requests = [{"encoder_prompt": {"prompt": "", "multi_modal_data": {"audio": (audio, SAMPLE_RATE)}},
                 "decoder_prompt": prompt} for audio in audios]
    outputs = llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
    return [output.outputs[0].text for output in outputs]

"""Healing through the decoder: how far a compressed encoder moves what Whisper's (frozen) decoder would say.

The encoder-output losses of healing weigh every direction of the output alike; the decoder reads it only through its
cross-attention. This loss distils what matters for the text: the dense model transcribes each healing window once
(greedy, its own words, so no labels are needed), and the decoder, teacher-forced on that transcript, should predict
the same next-token distribution from the compressed encoder's output as from the dense one's (the KL divergence
from the dense model's distribution, averaged over the transcript's tokens and its end-of-text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

#: Tokens the dense model may say per window: healing windows are pieces of 2-8 s, so this cap only stops loops.
MAX_TRANSCRIPT_TOKENS = 96


@dataclass
class Transcripts:
    """The dense model's transcripts of the healing windows as decoder inputs.

    ``tokens`` ``(windows, length)``: the decoder prompt, the transcript and end-of-text, padded with end-of-text;
    ``targets`` ``(windows, length - 1)``: True where the next token is one the loss scores (a transcript token or the
    end-of-text; not the prompt, which generation forces, nor padding).
    """

    tokens: torch.Tensor
    targets: torch.Tensor

    @property
    def scored_tokens(self) -> int:
        return int(self.targets.sum())


def decoder_prompt(generation_config, language: str | None = "en") -> list[int]:
    """The token ids Whisper's generation starts a transcription with: start of transcript, then (multilingual
    models) language and task, then no-timestamps."""
    prompt = [generation_config.decoder_start_token_id]
    if getattr(generation_config, "is_multilingual", False) and language is not None:
        prompt += [generation_config.lang_to_id[f"<|{language}|>"], generation_config.task_to_id["transcribe"]]
    prompt.append(generation_config.no_timestamps_token_id)
    return prompt


def teacher_transcripts(teacher: PreTrainedModel, features: torch.Tensor, batch_size: int,
                        language: str | None = "en", max_new_tokens: int = MAX_TRANSCRIPT_TOKENS,
                        encoder_hidden: torch.Tensor | None = None) -> Transcripts:
    """Transcribe ``features`` ``(windows, mels, frames)`` greedily with ``teacher`` and lay the transcripts out as
    :class:`Transcripts`. Every window gets its own transcript; a silent one is the prompt and end-of-text alone.
    ``encoder_hidden``: the teacher's encoder output for ``features``, when the caller has it (healing does), so
    that the encoder does not run again."""
    # Imported on use: the evaluation package imports the compression package, which imports this module.
    from transformers.modeling_outputs import BaseModelOutput

    from ..evaluation.transcription import generation_kwargs, quiet_whisper_generate

    config = teacher.generation_config
    eos = config.eos_token_id if isinstance(config.eos_token_id, int) else config.eos_token_id[0]
    prompt = decoder_prompt(config, language)
    kwargs = generation_kwargs(config, language, max_new_tokens)
    rows: list[list[int]] = []
    with torch.no_grad(), quiet_whisper_generate():
        for start in range(0, len(features), batch_size):
            window = slice(start, start + batch_size)
            if encoder_hidden is None:
                ids = teacher.generate(features[window], **kwargs)
            else:
                ids = teacher.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden[window]),
                                       **kwargs)
            # Whisper's special tokens (prompt, timestamps, end-of-text) all come after the text vocabulary, whose
            # ids are below end-of-text; transformers versions differ in whether the prompt is returned.
            rows += [[t for t in row.tolist() if t < eos] for row in ids]
    return _layout(rows, prompt, eos)


def _layout(texts: Sequence[Sequence[int]], prompt: list[int], eos: int) -> Transcripts:
    length = len(prompt) + max(len(t) for t in texts) + 1
    tokens = torch.full((len(texts), length), eos, dtype=torch.long)
    targets = torch.zeros((len(texts), length - 1), dtype=torch.bool)
    for i, text in enumerate(texts):
        row = [*prompt, *text, eos]
        tokens[i, :len(row)] = torch.tensor(row)
        # position p predicts token p + 1: score from the first transcript token through end-of-text
        targets[i, len(prompt) - 1:len(row) - 1] = True
    return Transcripts(tokens, targets)


def decoder_kl(model: PreTrainedModel, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean over scored tokens of KL(teacher || student) between the next-token distributions ``model``'s
    decoder gives, teacher-forced on ``tokens``, from the teacher's and the student's encoder outputs."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    device = student_hidden.device
    tokens, targets = tokens.to(device), targets.to(device)
    inputs = tokens[:, :-1]
    with torch.no_grad():
        t_logits = head(decoder(input_ids=inputs, encoder_hidden_states=teacher_hidden.to(device)).last_hidden_state)
    s_logits = head(decoder(input_ids=inputs, encoder_hidden_states=student_hidden).last_hidden_state)
    t_log = nn.functional.log_softmax(t_logits.float(), dim=-1)
    s_log = nn.functional.log_softmax(s_logits.float(), dim=-1)
    kl = (t_log.exp() * (t_log - s_log)).sum(-1)
    return kl[targets].mean()

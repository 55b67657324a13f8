"""Transcribe with an exported folder in ONNX Runtime: greedy decoding as ``WhisperForConditionalGeneration.generate``
does it (the same prompt, suppressed tokens and stopping), over the encoder and merged decoder files.

It is what the parity tests and ``liteasr benchmark --runtime onnxruntime`` run; deployments use their own
client (transformers.js, onnx-asr, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .layout import DECODER, DTYPE_SUFFIXES, ENCODER, SUBFOLDER, OnnxLayout


def session_options(threads: int | None = None):
    """ONNX Runtime session options with ``threads`` intra-op threads (None: ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


#: How a clip shorter than 30 s is padded: ``audio`` (transformers, and so ``generate``, the pipeline and
#: transformers.js: the audio with silence, then the log-mel of the whole window) or ``log-mel`` (openai/whisper and
#: faster-whisper: the log-mel frames after the clip set to zero).
PADDINGS = ("audio", "log-mel")


class OnnxWhisper:
    """An exported Whisper folder in ONNX Runtime, with the weights ``dtype`` (``fp32``, ``q8``, ``int8``, ...);
    ``padding`` (one of :data:`PADDINGS`) fills a short clip's 30 s window."""

    def __init__(self, folder: str | os.PathLike, dtype: str = "fp32", threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",), padding: str = "audio"):
        import onnxruntime as ort
        from transformers import AutoConfig, GenerationConfig, WhisperProcessor

        if dtype not in DTYPE_SUFFIXES:
            raise ValueError(f"Unknown dtype {dtype!r}: choose from {', '.join(DTYPE_SUFFIXES)}.")
        if padding not in PADDINGS:
            raise ValueError(f"Unknown padding {padding!r}: choose from {', '.join(PADDINGS)}.")
        self.padding = padding
        self.folder = Path(folder)
        config = AutoConfig.from_pretrained(self.folder)  # whisper or lite-whisper (registered by liteasr_hf)
        self.layout = OnnxLayout.from_config(config)
        files = [self.folder / SUBFOLDER / self.layout.file_name(g, dtype) for g in (ENCODER, DECODER)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} missing: export with "
                                    f"`liteasr export-onnx --model ... --output {self.folder}"
                                    f"{' --quantize ' + dtype if dtype not in ('fp32', 'fp16') else ''}`.")
        options = session_options(threads)
        self.encoder = ort.InferenceSession(str(files[0]), options, providers=list(providers))
        self.decoder = ort.InferenceSession(str(files[1]), options, providers=list(providers))
        self.processor = WhisperProcessor.from_pretrained(self.folder)
        self.generation_config = GenerationConfig.from_pretrained(self.folder)
        self.max_length = config.max_target_positions
        self.dtype = dtype

    def features(self, audios: list[np.ndarray]) -> np.ndarray:
        """Log-mel features ``(B, mels, 3000)`` of 16 kHz mono clips, as the processor computes them; with
        ``padding="log-mel"`` every frame after a clip's end is zero, as openai/whisper pads a segment."""
        extractor = self.processor.feature_extractor
        features = extractor(audios, sampling_rate=16000, return_tensors="np").input_features
        if self.padding == "log-mel":
            # The window's normalization (its maximum) is the clip's either way: silence adds only the floor.
            for row, audio in zip(features, audios):
                row[:, len(audio) // extractor.hop_length:] = 0.0
        return features

    def encode(self, features: np.ndarray) -> np.ndarray:
        """``last_hidden_state`` ``(B, 1500, d)`` of the encoder."""
        return self.encoder.run(None, {"input_features": features.astype(np.float32)})[0]

    def _step(self, ids: np.ndarray, hidden: np.ndarray, past: list[np.ndarray] | None):
        feed = {"input_ids": ids.astype(np.int64), "encoder_hidden_states": hidden,
                "use_cache_branch": np.array([past is not None])}
        if past is None:
            empty = np.zeros((ids.shape[0], self.layout.num_heads, 0, self.layout.head_dim), np.float32)
            past = [empty] * len(self.layout.past_names())
        feed.update(zip(self.layout.past_names(), past))
        logits, *presents = self.decoder.run(None, feed)
        return logits[:, -1].astype(np.float32), presents

    def prompt(self, language: str | None, task: str, hidden: np.ndarray) -> np.ndarray:
        """The forced start of every sequence: ``<|startoftranscript|>[<|lang|><|task|>]<|notimestamps|>``; a
        multilingual model without ``language`` detects it per clip, as ``generate`` does."""
        config = self.generation_config
        batch = hidden.shape[0]
        start = np.full((batch, 1), config.decoder_start_token_id, np.int64)
        if not getattr(config, "is_multilingual", False):
            return np.concatenate([start, np.full((batch, 1), config.no_timestamps_token_id)], axis=1)
        if language is None:
            logits, _ = self._step(start, hidden, None)
            language_ids = np.array(sorted(config.lang_to_id.values()))
            languages = language_ids[logits[:, language_ids].argmax(axis=1)][:, None]
        else:
            key = language if language.startswith("<|") else f"<|{language}|>"
            if key not in config.lang_to_id:
                raise ValueError(f"Unknown language {language!r} for this model.")
            languages = np.full((batch, 1), config.lang_to_id[key])
        task_id = np.full((batch, 1), config.task_to_id[task])
        return np.concatenate([start, languages, task_id, np.full((batch, 1), config.no_timestamps_token_id)], 1)

    def generate(self, features: np.ndarray, language: str | None = None, task: str = "transcribe",
                 max_new_tokens: int | None = None) -> list[list[int]]:
        """Greedy token ids after the prompt, per clip, up to and without end-of-text."""
        config = self.generation_config
        hidden = self.encode(features)
        ids = self.prompt(language, task, hidden)
        limit = self.max_length - ids.shape[1] if max_new_tokens is None else max_new_tokens
        suppress = np.array(config.suppress_tokens or [], np.int64)
        begin_suppress = np.array(config.begin_suppress_tokens or [], np.int64)
        eos = config.eos_token_id
        done = np.zeros(len(ids), bool)
        generated: list[np.ndarray] = []
        step_ids, past = ids, None
        for step in range(limit):
            logits, past = self._step(step_ids, hidden, past)
            logits[:, suppress] = -np.inf
            if step == 0:
                logits[:, begin_suppress] = -np.inf
            token = np.where(done, eos, logits.argmax(axis=1))
            generated.append(token)
            done |= token == eos
            if done.all():
                break
            step_ids = token[:, None]
        tokens = np.stack(generated, axis=1) if generated else np.zeros((len(ids), 0), np.int64)
        sequences = []
        for row in tokens:
            end = np.flatnonzero(row == eos)
            sequences.append(row[: end[0]].tolist() if len(end) else row.tolist())
        return sequences

    def transcribe(self, audios: list[np.ndarray], batch_size: int = 8, **generate_kwargs) -> list[str]:
        """Texts of 16 kHz mono clips up to 30 s each."""
        texts: list[str] = []
        for start in range(0, len(audios), batch_size):
            ids = self.generate(self.features(audios[start:start + batch_size]), **generate_kwargs)
            texts += self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts]

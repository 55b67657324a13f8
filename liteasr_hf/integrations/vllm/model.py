"""LiteWhisper in vLLM: vLLM's Whisper with the encoder projections built from ``low_rank_config``.

Subclasses vLLM's Whisper classes (0.32; 0.33 has the same source for them); the decoder, the audio processing and the transcription interface are
vLLM's own. Only the encoder's attention and MLP differ: each of q, k, v, out_proj, fc1 and fc2 is either vLLM's
dense tensor-parallel layer or a pair of factors (``layers.py``), chosen per layer from the config. Weights load
from our folders and from the published efficient-speech layout (the same tensor names); a folder whose weights
disagree with ``low_rank_config`` fails at load with the layer and module named.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from transformers.models.whisper.modeling_whisper import sinusoids
from vllm.config import ModelConfig, SpeechToTextConfig, VllmConfig
from vllm.config.speech_to_text import SpeechToTextParams
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.inputs import ExplicitEncoderDecoderPrompt, PromptType, TextPrompt
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
from vllm.model_executor.models.utils import extract_layer_index, make_layers, maybe_prefix
from vllm.model_executor.models.whisper import (
    WhisperDecoder,
    WhisperDummyInputsBuilder,
    WhisperEncoder,
    WhisperEncoderAttention,
    WhisperEncoderLayer,
    WhisperForConditionalGeneration,
    WhisperModel,
    WhisperMultiModalProcessor,
    WhisperPosEmbedType,
    WhisperProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.tokenizers import TokenizerLike
from vllm.transformers_utils.processor import cached_processor_from_config
from vllm.transformers_utils.repo_utils import file_or_path_exists

from ...checkpoints.published import PROCESSOR_MARKERS
from ...models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES, module_shapes
from .layers import column_projection, load_parameter, row_projection

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")
#: ``model.encoder.layers.3.self_attn.q_proj.weight1`` -> (3, q_proj, weight1); fc1/fc2 sit on the layer itself.
_ENCODER_PROJECTION = re.compile(
    r"^model\.encoder\.layers\.(\d+)\.(?:self_attn\.)?(" + "|".join(LOW_RANK_MODULES)
    + r")\.(weight1|weight2|weight|bias)$")


#: Entries in an English-only Whisper vocabulary (``*.en``): one fewer than the multilingual checkpoints'.
ENGLISH_ONLY_VOCABULARY = 51864


def english_only(config) -> bool:
    """Whether a Whisper config is an English-only checkpoint."""
    return config.vocab_size == ENGLISH_ONLY_VOCABULARY


def decoder_prompt(config, language: str | None = "en", task: str = "transcribe", previous: str = "") -> str:
    """The decoder prompt transformers' ``generate`` gives Whisper (without timestamps): ``<|startoftranscript|>``,
    language and task, ``<|notimestamps|>``; English-only models were trained without language and task tokens."""
    start = f"<|prev|>{previous}<|startoftranscript|>" if previous else "<|startoftranscript|>"
    if english_only(config):
        if task != "transcribe":
            raise ValueError("An English-only Whisper model (*.en) only transcribes English; it cannot translate.")
        return start + "<|notimestamps|>"
    if not language:
        raise ValueError("A multilingual Whisper prompt needs a language (vLLM detects it when a request has none).")
    return start + f"<|{language}|><|{task}|><|notimestamps|>"


def _ranks(config, layer: int) -> dict[str, int]:
    return dict(config.low_rank_config[layer]) if config.low_rank_config else {}


class LiteWhisperEncoderSelfAttention(nn.Module):
    """Encoder self-attention with q, k, v and out_proj each dense or factorized (forward as vLLM's, per module)."""

    def __init__(self, config, layer: int, quant_config=None, prefix: str = ""):
        super().__init__()
        tp_size = get_tensor_model_parallel_world_size()
        heads, d_model = config.encoder_attention_heads, config.d_model
        if heads % tp_size:
            raise ValueError(f"{heads} encoder attention heads do not split across {tp_size} tensor-parallel ranks.")
        self.num_heads = heads // tp_size
        self.head_dim = d_model // heads
        ranks = _ranks(config, layer)
        # Whisper's k projection has no bias; its factorized form has one (the PCA mean term).
        self.q_proj = column_projection(d_model, d_model, ranks.get("q_proj"), True, quant_config, f"{prefix}.q_proj")
        self.k_proj = column_projection(d_model, d_model, ranks.get("k_proj"), False, quant_config, f"{prefix}.k_proj")
        self.v_proj = column_projection(d_model, d_model, ranks.get("v_proj"), True, quant_config, f"{prefix}.v_proj")
        self.out_proj = row_projection(d_model, d_model, ranks.get("out_proj"), quant_config, f"{prefix}.out_proj")
        self.attn = WhisperEncoderAttention(self.num_heads, self.head_dim, self.head_dim**-0.5,
                                            num_kv_heads=self.num_heads)

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: torch.Tensor | None = None, sequence_lengths: torch.Tensor | None = None) -> torch.Tensor:
        q, _ = self.q_proj(hidden_states)  # (..., heads / tp * head_dim)
        k, _ = self.k_proj(hidden_states)
        v, _ = self.v_proj(hidden_states)
        if cu_seqlens is None:
            attn_output = self.attn(q, k, v)
        else:
            attn_output = self.attn(q, k, v, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                                    sequence_lengths=sequence_lengths)
        output, _ = self.out_proj(attn_output)
        return output


class LiteWhisperMLP(nn.Module):
    """fc1, activation, fc2, each projection dense or factorized."""

    def __init__(self, config, layer: int, quant_config=None, prefix: str = ""):
        super().__init__()
        ranks = _ranks(config, layer)
        self.activation_fn = get_act_fn(config.activation_function)
        self.fc1 = column_projection(config.d_model, config.encoder_ffn_dim, ranks.get("fc1"), True, quant_config,
                                     f"{prefix}.fc1")
        self.fc2 = row_projection(config.encoder_ffn_dim, config.d_model, ranks.get("fc2"), quant_config,
                                  f"{prefix}.fc2")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states, _ = self.fc1(hidden_states)
        hidden_states = self.activation_fn(hidden_states)
        hidden_states, _ = self.fc2(hidden_states)
        return hidden_states


class LiteWhisperEncoderLayer(WhisperEncoderLayer):
    """vLLM's encoder layer (its forward) with our attention and MLP."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        nn.Module.__init__(self)  # vLLM's constructor would build the dense projections first
        config = vllm_config.model_config.hf_config
        layer = extract_layer_index(prefix)
        self.embed_dim = config.d_model
        self.self_attn = LiteWhisperEncoderSelfAttention(config, layer, vllm_config.quant_config,
                                                         prefix=f"{prefix}.self_attn")
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.mlp = LiteWhisperMLP(config, layer, vllm_config.quant_config, prefix=f"{prefix}.mlp")
        self.final_layer_norm = nn.LayerNorm(self.embed_dim)


class LiteWhisperEncoder(WhisperEncoder):
    """vLLM's Whisper encoder (its forward) over LiteWhisper layers."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        # Adapted from vLLM 0.32's WhisperEncoder.__init__, which hard-codes its dense layer class.
        nn.Module.__init__(self)
        config = vllm_config.model_config.hf_config
        embed_dim = config.d_model
        self.pos_embed_type = WhisperPosEmbedType(getattr(config, "pos_embed", "sinusoidal"))
        self.num_mel_bins = config.num_mel_bins
        self.max_source_positions = config.max_source_positions
        self.embed_scale = math.sqrt(embed_dim) if config.scale_embedding else 1.0
        self.conv1 = nn.Conv1d(self.num_mel_bins, embed_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(embed_dim, embed_dim, stride=2, kernel_size=3, padding=1)
        self.total_stride = self.conv1.stride[0] * self.conv2.stride[0]
        self.start_layer, self.end_layer, self.layers = make_layers(
            config.encoder_layers,
            lambda prefix: LiteWhisperEncoderLayer(vllm_config=vllm_config, prefix=prefix),
            prefix=f"{prefix}.layers",
        )
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.embed_positions = nn.Embedding(self.max_source_positions, embed_dim)
        with torch.no_grad():  # Whisper's table; checkpoints hold it too and load over it
            self.embed_positions.weight.copy_(sinusoids(*self.embed_positions.weight.shape))


class LiteWhisperModel(WhisperModel):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        nn.Module.__init__(self)
        self.encoder = LiteWhisperEncoder(vllm_config=vllm_config, prefix=f"{prefix}.encoder")
        self.decoder = WhisperDecoder(vllm_config=vllm_config, prefix=f"{prefix}.decoder")


class _ProcessorSource:
    """A model config seen with another folder or Hub id as its model: where vLLM takes the processor from."""

    def __init__(self, model_config: ModelConfig, name: str, revision: str | None):
        self._model_config, self.model, self.revision = model_config, name, revision

    def __getattr__(self, name: str):
        return getattr(self._model_config, name)


def processor_config(model_config: ModelConfig) -> ModelConfig:
    """The model config to load the processor with: the model's own, or, for a folder without processor files (the
    published lite-whisper repos carry none), the tokenizer's (``--tokenizer openai/whisper-<size>``)."""
    model, tokenizer = model_config.model, model_config.tokenizer
    if any(file_or_path_exists(model, name, model_config.revision) for name in PROCESSOR_MARKERS):
        return model_config
    if tokenizer and tokenizer != model and file_or_path_exists(tokenizer, "preprocessor_config.json",
                                                               model_config.tokenizer_revision):
        return _ProcessorSource(model_config, tokenizer, model_config.tokenizer_revision)  # type: ignore[return-value]
    raise ValueError(
        f"{model} has no feature extractor (preprocessor_config.json); the published lite-whisper repos carry none. "
        "Pass the Whisper checkpoint it was compressed from as the tokenizer, which the feature extractor is then "
        "taken from too: --tokenizer openai/whisper-<size> (LLM(..., tokenizer=...)), or write a complete folder "
        "with liteasr upgrade-published.")


class LiteWhisperProcessingInfo(WhisperProcessingInfo):
    """Whisper's processing, with the processor taken from the tokenizer when the model folder has none."""

    def get_hf_processor(self, **kwargs: object):
        source = processor_config(self.ctx.model_config)
        if source is self.ctx.model_config:
            return super().get_hf_processor(**kwargs)
        merged = self.ctx.get_merged_mm_kwargs(kwargs)
        merged.pop("tokenizer", None)
        return cached_processor_from_config(source, tokenizer=self.ctx.tokenizer, **merged)


@MULTIMODAL_REGISTRY.register_processor(
    WhisperMultiModalProcessor, info=LiteWhisperProcessingInfo, dummy_inputs=WhisperDummyInputsBuilder)
class LiteWhisperForConditionalGeneration(WhisperForConditionalGeneration):
    """vLLM's Whisper with LiteWhisper's factorized encoder; registered for ``LiteWhisperForConditionalGeneration``."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        # Adapted from vLLM 0.32's WhisperForConditionalGeneration.__init__: the same model with our encoder.
        nn.Module.__init__(self)
        config = vllm_config.model_config.hf_config
        self.config = config
        self.dtype = vllm_config.model_config.dtype
        with self._mark_composite_model(vllm_config, language_targets=WhisperDecoder,
                                        tower_targets={"audio": WhisperEncoder}):
            self.model = LiteWhisperModel(vllm_config=vllm_config, prefix=prefix)
        self.proj_out = ParallelLMHead(config.vocab_size, config.d_model, quant_config=vllm_config.quant_config,
                                       prefix=maybe_prefix(prefix, "proj_out"))
        self.proj_out = self.proj_out.tie_weights(self.model.decoder.embed_tokens)
        self.logits_processor = LogitsProcessor(config.vocab_size, scale=getattr(config, "logit_scale", 1.0))

    @classmethod
    def get_generation_prompt(cls, stt_params: SpeechToTextParams) -> PromptType:
        """vLLM's Whisper prompt, except for English-only models, which were trained without language and task
        tokens: given ``<|en|><|transcribe|>`` they answer end-of-text at once. Their prompt is
        ``<|startoftranscript|><|notimestamps|>``, as transformers' ``generate`` writes it."""
        if not english_only(stt_params.model_config.hf_config):
            return super().get_generation_prompt(stt_params)
        return ExplicitEncoderDecoderPrompt(
            encoder_prompt=TextPrompt(prompt="", multi_modal_data={
                "audio": (stt_params.audio, stt_params.stt_config.sample_rate)}),
            decoder_prompt=TextPrompt(prompt=decoder_prompt(stt_params.model_config.hf_config, None,
                                                            stt_params.task_type, stt_params.request_prompt)),
        )

    @classmethod
    def get_language_token_ids(cls, tokenizer: TokenizerLike) -> list[int]:
        """vLLM detects the language of a request without one. An English-only vocabulary maps most language tokens
        to end-of-text, which the detection would then pick: only ``<|en|>`` is allowed there. (Requests that give
        ``language=en`` skip the detection step.)"""
        if len(tokenizer) == ENGLISH_ONLY_VOCABULARY:
            return [tokenizer.convert_tokens_to_ids("<|en|>")]
        return super().get_language_token_ids(tokenizer)

    @classmethod
    def get_speech_to_text_config(cls, model_config: ModelConfig, task_type: str) -> SpeechToTextConfig:
        processor = cached_processor_from_config(processor_config(model_config))
        return SpeechToTextConfig(max_audio_clip_s=processor.feature_extractor.chunk_length,
                                  sample_rate=processor.feature_extractor.sampling_rate)

    @classmethod
    def get_num_audio_tokens(cls, audio_duration_s: float, stt_config: SpeechToTextConfig,
                             model_config: ModelConfig) -> int | None:
        hop_length = cached_processor_from_config(processor_config(model_config)).feature_extractor.hop_length
        return math.ceil(audio_duration_s * stt_config.sample_rate / hop_length)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load a LiteWhisper checkpoint: the encoder projections here, checked against ``low_rank_config``, and
        everything else through vLLM's Whisper loader."""
        loader = _EncoderProjectionLoader(self)
        loaded = super().load_weights(loader.take(weights))
        return loaded | loader.finish()


class _EncoderProjectionLoader:
    """Takes the encoder projections out of the checkpoint stream, checks each against ``low_rank_config`` and
    loads it into its dense or factorized module."""

    def __init__(self, model: LiteWhisperForConditionalGeneration):
        self.config = model.config
        self.layers = model.model.encoder.layers
        self.start, self.end = model.model.encoder.start_layer, model.model.encoder.end_layer
        self.pending: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        self.loaded: set[str] = set()

    def take(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in weights:
            match = _ENCODER_PROJECTION.match(name)
            if match is None:
                yield name, tensor
                continue
            layer, module, part = int(match[1]), match[2], match[3]
            self._check_part(layer, module, part, tensor)
            parts = self.pending.setdefault((layer, module), {})
            parts[part] = tensor
            if set(parts) == self._expected_parts(layer, module):
                self._load(layer, module, self.pending.pop((layer, module)))

    def finish(self) -> set[str]:
        """Raise for any projection the checkpoint left incomplete; return the loaded parameter names."""
        missing = [(layer, module) for layer in range(self.start, self.end) for module in LOW_RANK_MODULES
                   if not any(name.startswith(self._module_name(layer, module) + ".") for name in self.loaded)]
        if missing:
            layer, module = missing[0]
            present = sorted(self.pending.get((layer, module), {}))
            raise ValueError(
                f"The checkpoint lacks encoder layer {layer}, module {module}: low_rank_config expects "
                f"{sorted(self._expected_parts(layer, module))}, found {present or 'nothing'}"
                + (f" ({len(missing) - 1} more projections incomplete)." if len(missing) > 1 else "."))
        return self.loaded

    def _rank(self, layer: int, module: str) -> int | None:
        return _ranks(self.config, layer).get(module)

    def _expected_parts(self, layer: int, module: str) -> set[str]:
        if self._rank(layer, module) is not None:
            return {"weight1", "weight2", "bias"}
        return {"weight"} if module == "k_proj" else {"weight", "bias"}

    def _check_part(self, layer: int, module: str, part: str, tensor: torch.Tensor) -> None:
        rank = self._rank(layer, module)
        # Checkpoint tensors have the full shapes; each tensor-parallel rank takes its shard later (load_parameter).
        in_features, out_features = module_shapes(self.config.d_model, self.config.encoder_ffn_dim)[module]
        where = f"encoder layer {layer}, module {module}"
        if part not in self._expected_parts(layer, module):
            said = f"rank {rank}" if rank is not None else "no rank (a dense layer)"
            raise ValueError(f"The checkpoint's {where} has '{part}' but low_rank_config gives it {said}: the weights "
                             "and config.json disagree (was config.json edited or taken from another model?).")
        expected = {"weight1": (in_features, rank), "weight2": (rank, out_features),
                    "weight": (out_features, in_features), "bias": (out_features,)}[part]
        if tuple(tensor.shape) != expected:
            raise ValueError(f"The checkpoint's {where} has '{part}' of shape {tuple(tensor.shape)}, but "
                             f"low_rank_config (rank {rank}) implies {expected}: the weights and config.json disagree.")

    @staticmethod
    def _module_name(layer: int, module: str) -> str:
        owner = "self_attn" if module in ATTENTION_MODULES else "mlp"
        return f"model.encoder.layers.{layer}.{owner}.{module}"

    def _load(self, layer: int, module: str, parts: dict[str, torch.Tensor]) -> None:
        if not self.start <= layer < self.end:
            return  # another pipeline-parallel stage holds this layer
        owner = self.layers[layer].self_attn if module in ATTENTION_MODULES else self.layers[layer].mlp
        target = getattr(owner, module)
        name = self._module_name(layer, module)
        if "weight1" in parts:
            target.load_factors(parts["weight1"], parts["weight2"], parts["bias"])
        else:
            for part, tensor in parts.items():
                load_parameter(getattr(target, part), tensor)
        self.loaded.update(f"{name}.{param}" for param, _ in target.named_parameters())

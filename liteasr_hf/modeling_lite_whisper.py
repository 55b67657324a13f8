"""LiteWhisper: Whisper whose encoder linear layers are low-rank factorized (LiteASR, arXiv 2502.20583).

This file travels to the Hugging Face Hub next to the weights and is read there: it imports only torch,
transformers and the files beside it. The classes subclass transformers' Whisper classes; only the
constructors that build encoder layers are adapted (from transformers 5.x `modeling_whisper.py`), so that
factorized layers are built from the config directly and no dense weight is made and thrown away.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.models.whisper.modeling_whisper import (
    WhisperAttention,
    WhisperDecoder,
    WhisperEncoder,
    WhisperEncoderLayer,
    WhisperForConditionalGeneration,
    WhisperModel,
    WhisperPreTrainedModel,
)

from .configuration_lite_whisper import LiteWhisperConfig

# Imported so that `save_pretrained` (which copies this file and its relative imports) ships the pipeline
# that `config.custom_pipelines` names.
from .pipeline_lite_whisper import LiteWhisperSpeechRecognitionPipeline  # noqa: F401


class LowRankLinear(nn.Module):
    """A linear layer stored as two factors: ``y = (x @ weight1) @ weight2 + bias``.

    Parameter names and shapes are those of the published lite-whisper checkpoints:
    ``weight1`` ``[in_features, rank]``, ``weight2`` ``[rank, out_features]``, ``bias`` ``[out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.weight1 = nn.Parameter(torch.empty(in_features, rank))
        self.weight2 = nn.Parameter(torch.empty(rank, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same output scale as nn.Linear's default init of the product weight1 @ weight2.
        nn.init.normal_(self.weight1, std=1.0 / math.sqrt(self.in_features))
        nn.init.normal_(self.weight2, std=1.0 / math.sqrt(3.0 * self.rank))
        nn.init.zeros_(self.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., rank) -> (..., out); F.linear fuses the bias add into the second matmul.
        return nn.functional.linear(hidden_states @ self.weight1, self.weight2.t(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, rank={self.rank}, out_features={self.out_features}"


def make_linear(in_features: int, out_features: int, rank: int | None, bias: bool = True) -> nn.Module:
    """A dense ``nn.Linear`` where ``rank`` is None, else a :class:`LowRankLinear` (which always has a bias)."""
    if rank is None:
        return nn.Linear(in_features, out_features, bias=bias)
    return LowRankLinear(in_features, out_features, rank)


class LiteWhisperAttention(WhisperAttention):
    """Encoder self-attention whose projections may be low-rank; forward is Whisper's."""

    def __init__(self, config: LiteWhisperConfig, layer_idx: int):
        nn.Module.__init__(self)  # WhisperAttention.__init__ would build four dense projections
        self.config = config
        self.embed_dim = config.d_model
        self.num_heads = config.encoder_attention_heads
        self.dropout = config.attention_dropout
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"d_model ({self.embed_dim}) must be divisible by encoder_attention_heads ({self.num_heads}).")
        self.scaling = self.head_dim**-0.5
        self.is_decoder = False
        self.is_causal = False
        self.layer_idx = layer_idx

        d = self.embed_dim
        self.k_proj = make_linear(d, d, config.rank(layer_idx, "k_proj"), bias=False)
        self.v_proj = make_linear(d, d, config.rank(layer_idx, "v_proj"))
        self.q_proj = make_linear(d, d, config.rank(layer_idx, "q_proj"))
        self.out_proj = make_linear(d, d, config.rank(layer_idx, "out_proj"))


class LiteWhisperEncoderLayer(WhisperEncoderLayer):
    """Whisper encoder layer built with the ranks of ``config.low_rank_config[layer_idx]``; forward is Whisper's."""

    def __init__(self, config: LiteWhisperConfig, layer_idx: int):
        nn.Module.__init__(self)  # WhisperEncoderLayer.__init__ would build dense fc1/fc2 and attention
        self.embed_dim = config.d_model
        self.self_attn = LiteWhisperAttention(config, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.dropout = config.dropout
        self.activation_fn = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout
        self.fc1 = make_linear(self.embed_dim, config.encoder_ffn_dim, config.rank(layer_idx, "fc1"))
        self.fc2 = make_linear(config.encoder_ffn_dim, self.embed_dim, config.rank(layer_idx, "fc2"))
        self.final_layer_norm = nn.LayerNorm(self.embed_dim)


class LiteWhisperPreTrainedModel(WhisperPreTrainedModel):
    config_class = LiteWhisperConfig
    config: LiteWhisperConfig
    _no_split_modules = ["LiteWhisperEncoderLayer", "WhisperDecoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LowRankLinear):
            # transformers' `init` helpers skip parameters already loaded from a checkpoint.
            std = self.config.init_std
            init.normal_(module.weight1, mean=0.0, std=std)
            init.normal_(module.weight2, mean=0.0, std=std)
            init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a checkpoint whose encoder weights disagree with its
        ``low_rank_config`` (missing, unexpected or mis-shaped factors) is an error, never a random init.

        Pass ``ignore_mismatched_sizes=True`` to get transformers' lenient behaviour back.
        """
        lenient = kwargs.get("ignore_mismatched_sizes", False)
        return_info = kwargs.pop("output_loading_info", False)
        if not lenient:
            # Let loading finish so that every disagreement is collected and reported together below.
            kwargs["ignore_mismatched_sizes"] = True
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        if not lenient:
            _raise_on_bad_checkpoint(info, pretrained_model_name_or_path)
        return (model, info) if return_info else model


def _describe_key(key: str) -> str:
    """``model.encoder.layers.3.self_attn.q_proj.weight1`` -> ``encoder layer 3, module q_proj (weight1)``."""
    parts = key.split(".")
    if "layers" in parts and "encoder" in parts:
        i = parts.index("layers")
        return f"encoder layer {parts[i + 1]}, module {parts[-2]} ({parts[-1]})"
    return key


def _raise_on_bad_checkpoint(info: dict, source) -> None:
    problems = []
    for key, *shapes in sorted(info.get("mismatched_keys", [])):
        found = f": checkpoint {tuple(shapes[0])} vs config {tuple(shapes[1])}" if len(shapes) == 2 else ""
        problems.append(f"shape mismatch at {_describe_key(key)}{found}")
    problems += [f"missing from the checkpoint: {_describe_key(k)}" for k in sorted(info.get("missing_keys", []))]
    # Unexpected keys outside the encoder layers are normal (e.g. proj_out when loading the bare model).
    problems += [
        f"in the checkpoint but not in the model: {_describe_key(k)}"
        for k in sorted(info.get("unexpected_keys", []))
        if ".encoder.layers." in k or k.startswith("encoder.layers.")
    ]
    if problems:
        listing = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise ValueError(
            f"The weights in {source} do not match its config.json (low_rank_config):\n  {listing}\n"
            "The config and the weights must come from the same save; fix low_rank_config or re-save the model."
        )


class LiteWhisperEncoder(LiteWhisperPreTrainedModel, WhisperEncoder):
    """Whisper's encoder with LiteWhisper layers; forward is Whisper's."""

    def __init__(self, config: LiteWhisperConfig):
        WhisperPreTrainedModel.__init__(self, config)  # WhisperEncoder.__init__ would build dense layers
        self.dropout = config.dropout
        self.layerdrop = config.encoder_layerdrop

        embed_dim = config.d_model
        self.num_mel_bins = config.num_mel_bins
        self.padding_idx = config.pad_token_id
        self.max_source_positions = config.max_source_positions
        self.embed_scale = math.sqrt(embed_dim) if config.scale_embedding else 1.0

        self.conv1 = nn.Conv1d(self.num_mel_bins, embed_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(embed_dim, embed_dim, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(self.max_source_positions, embed_dim)
        self.embed_positions.requires_grad_(False)

        self.layers = nn.ModuleList([LiteWhisperEncoderLayer(config, i) for i in range(config.encoder_layers)])
        self.layer_norm = nn.LayerNorm(config.d_model)

        self.gradient_checkpointing = False
        self.post_init()


class LiteWhisperModel(LiteWhisperPreTrainedModel, WhisperModel):
    """Bare LiteWhisper encoder-decoder (no language-model head)."""

    def __init__(self, config: LiteWhisperConfig):
        WhisperPreTrainedModel.__init__(self, config)
        self.encoder = LiteWhisperEncoder(config)
        self.decoder = WhisperDecoder(config)
        self.post_init()


class LiteWhisperForConditionalGeneration(LiteWhisperPreTrainedModel, WhisperForConditionalGeneration):
    """LiteWhisper for speech recognition: everything `WhisperForConditionalGeneration` does, `generate` included."""

    def __init__(self, config: LiteWhisperConfig):
        WhisperPreTrainedModel.__init__(self, config)
        self.model = LiteWhisperModel(config)
        self.proj_out = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.max_target_positions = config.max_target_positions
        self.post_init()


# `save_pretrained` copies this file and its relative imports next to the weights when a class has an auto class.
LiteWhisperConfig.register_for_auto_class("AutoConfig")
LiteWhisperModel.register_for_auto_class("AutoModel")
LiteWhisperForConditionalGeneration.register_for_auto_class("AutoModelForSpeechSeq2Seq")

__all__ = [
    "LowRankLinear",
    "LiteWhisperAttention",
    "LiteWhisperEncoderLayer",
    "LiteWhisperPreTrainedModel",
    "LiteWhisperEncoder",
    "LiteWhisperModel",
    "LiteWhisperForConditionalGeneration",
]

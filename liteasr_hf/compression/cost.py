"""Parameter and FLOP counts of a Whisper / LiteWhisper encoder, computed from its configuration."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import WhisperConfig

from ..models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES, LiteWhisperConfig, module_shapes
from ..models.lite_whisper.modeling_lite_whisper import attention_flops, select_attention_path


def linear_params(in_features: int, out_features: int, rank: int | None, bias: bool = True) -> int:
    """Parameters of a dense (``rank=None``) or factorized linear layer (a factorized one always has a bias)."""
    if rank is None:
        return in_features * out_features + (out_features if bias else 0)
    return rank * (in_features + out_features) + out_features


def linear_flops(in_features: int, out_features: int, rank: int | None, tokens: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one linear layer over ``tokens`` rows."""
    macs = in_features * out_features if rank is None else rank * (in_features + out_features)
    return 2 * tokens * macs


@dataclass(frozen=True)
class EncoderCost:
    params: int  # every parameter, Whisper's fixed sinusoidal position table included
    flops: int  # for one 30-second input (batch 1)
    position_params: int = 0  # of which the position table (max_source_positions x d_model)

    @property
    def params_excluding_positions(self) -> int:
        """Parameters without the position table, as the published lite-whisper tables count encoder size."""
        return self.params - self.position_params

    def fraction_of(self, other: "EncoderCost") -> dict[str, float]:
        return {"params": self.params / other.params, "flops": self.flops / other.flops}


def _ranks(config: WhisperConfig, low_rank_config: list[dict[str, int]] | None, layer: int) -> dict[str, int]:
    table = low_rank_config if low_rank_config is not None else getattr(config, "low_rank_config", None)
    return table[layer] if table else {}


def module_cost(config: WhisperConfig, module: str, rank: int | None) -> EncoderCost:
    """Cost of one encoder module at ``rank`` (``None``: dense)."""
    in_f, out_f = module_shapes(config.d_model, config.encoder_ffn_dim)[module]
    tokens = config.max_source_positions
    return EncoderCost(
        linear_params(in_f, out_f, rank, bias=module != "k_proj"), linear_flops(in_f, out_f, rank, tokens)
    )


def encoder_cost(
    config: WhisperConfig, low_rank_config: list[dict[str, int]] | None = None, fused_attention: bool = False
) -> EncoderCost:
    """Parameters and FLOPs of the encoder described by ``config`` with the given (or its own) ranks.

    FLOPs count the convolutions, the linear layers and the two attention matrix products per layer, at
    Whisper's fixed input of ``2 * max_source_positions`` mel frames, on the attention path each layer takes
    (``fused_attention``: as on CUDA with the Triton kernel); norms, softmax and GELU are left out.
    """
    d, tokens, mels = config.d_model, config.max_source_positions, config.num_mel_bins
    params = (mels * 3 * d + d) + (d * 3 * d + d) + tokens * d + 2 * d  # convs, positions, final norm
    flops = 2 * (2 * tokens) * mels * 3 * d + 2 * tokens * d * 3 * d
    # The config's own attention paths hold for its own ranks; other ranks get the cost model's choice.
    own = low_rank_config is None
    lite = LiteWhisperConfig.from_whisper_config(
        config, getattr(config, "low_rank_config", None) if own else low_rank_config
    )
    lite.attention_path = getattr(config, "attention_path", "auto") if own else "auto"
    for layer in range(config.encoder_layers):
        ranks = _ranks(config, low_rank_config, layer)
        params += 2 * 2 * d  # two layer norms
        path = select_attention_path(lite, layer, tokens, fused=fused_attention)
        attention = attention_flops(
            d, config.encoder_attention_heads, tokens, *(ranks.get(m) for m in ("q_proj", "k_proj", "v_proj")),
            one_head_size=not fused_attention,
        )[path]
        flops += attention
        for module in LOW_RANK_MODULES:
            cost = module_cost(config, module, ranks.get(module))
            params += cost.params
            if module == "out_proj" or module.startswith("fc"):
                flops += cost.flops  # q, k, v and the attention products are in `attention`
    return EncoderCost(params, flops, position_params=tokens * d)


def encoder_flops_by_part(config: WhisperConfig) -> dict[str, int] | None:
    """FLOPs of one 30-second input per part of the encoder described by ``config`` (its own ranks): the
    ``convolutions``, each linear module kind summed over the layers (``q_proj`` ... ``fc2``) and ``attention``'s
    two products of activations; they add up to :func:`encoder_cost`'s FLOPs. None where a layer attends in the
    rank space, whose projections and products are not separate parts."""
    d, tokens, mels = config.d_model, config.max_source_positions, config.num_mel_bins
    lite = LiteWhisperConfig.from_whisper_config(config, getattr(config, "low_rank_config", None))
    lite.attention_path = getattr(config, "attention_path", "auto")
    if any(select_attention_path(lite, layer, tokens) != "full" for layer in range(config.encoder_layers)):
        return None
    parts = {"convolutions": 2 * (2 * tokens) * mels * 3 * d + 2 * tokens * d * 3 * d}
    for layer in range(config.encoder_layers):
        ranks = _ranks(config, None, layer)
        for module in LOW_RANK_MODULES:
            parts[module] = parts.get(module, 0) + module_cost(config, module, ranks.get(module)).flops
    parts["attention"] = config.encoder_layers * 2 * 2 * tokens * tokens * d  # q k^T and the weights times v
    return parts

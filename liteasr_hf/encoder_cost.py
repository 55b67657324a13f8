"""Parameter and FLOP counts of a Whisper / LiteWhisper encoder, computed from its configuration."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import WhisperConfig

from .configuration_lite_whisper import LOW_RANK_MODULES, _module_shapes


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
    params: int
    flops: int  # for one 30-second input (batch 1)

    def fraction_of(self, other: "EncoderCost") -> dict[str, float]:
        return {"params": self.params / other.params, "flops": self.flops / other.flops}


def _ranks(config: WhisperConfig, low_rank_config: list[dict[str, int]] | None, layer: int) -> dict[str, int]:
    table = low_rank_config if low_rank_config is not None else getattr(config, "low_rank_config", None)
    return table[layer] if table else {}


def module_cost(config: WhisperConfig, module: str, rank: int | None) -> EncoderCost:
    """Cost of one encoder module at ``rank`` (``None``: dense)."""
    in_f, out_f = _module_shapes(config.d_model, config.encoder_ffn_dim)[module]
    tokens = config.max_source_positions
    return EncoderCost(
        linear_params(in_f, out_f, rank, bias=module != "k_proj"), linear_flops(in_f, out_f, rank, tokens)
    )


def encoder_cost(config: WhisperConfig, low_rank_config: list[dict[str, int]] | None = None) -> EncoderCost:
    """Parameters and FLOPs of the encoder described by ``config`` with the given (or its own) ranks.

    FLOPs count the convolutions, the linear layers and the two attention matrix products per layer, at
    Whisper's fixed input of ``2 * max_source_positions`` mel frames; norms, softmax and GELU are left out.
    """
    d, tokens, mels = config.d_model, config.max_source_positions, config.num_mel_bins
    params = (mels * 3 * d + d) + (d * 3 * d + d) + tokens * d + 2 * d  # convs, positions, final norm
    flops = 2 * (2 * tokens) * mels * 3 * d + 2 * tokens * d * 3 * d
    for layer in range(config.encoder_layers):
        ranks = _ranks(config, low_rank_config, layer)
        params += 2 * 2 * d  # two layer norms
        flops += 2 * (2 * tokens * tokens * d)  # scores and weighted sum of values
        for module in LOW_RANK_MODULES:
            cost = module_cost(config, module, ranks.get(module))
            params += cost.params
            flops += cost.flops
    return EncoderCost(params, flops)

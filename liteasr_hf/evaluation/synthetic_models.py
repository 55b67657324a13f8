"""Random-weight Whisper and LiteWhisper models with the real shapes of every Whisper size, for speed measurements
where no weights are at hand: an encoder's time does not depend on the values of its weights.

A model is named by a spec, usable wherever the benchmark takes a model name::

    shape:large-v3                       dense, large-v3's shapes
    shape:large-v3@large-v3-fast         LiteWhisper at the encoder size of the preset (its ``budget``)
    shape:large-v3@0.6                   LiteWhisper keeping 60% of the encoder's parameters
    shape:large-v3@0.55,attention=48     q/k/v at rank 48 (rank-space attention), the rest sized to fit 55%
    shape:large-v3@0.55,attention=48,kernel=off    the same on PyTorch's rank-space path instead of the
                                         Triton kernel (where the kernel would run: CUDA, fp16/bf16)

Ranks are proportional: every factorized module keeps the same share of its dense parameters, the share chosen
so that the encoder as a whole meets the size. That is the size of a real compression, not its allocation
across layers (which calibration decides); for speed, the total and the shapes are what matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from ..compression.cost import encoder_cost
from ..compression.presets import load_settings
from ..compression.rank_selection import saves_parameters
from ..models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES, LiteWhisperConfig, module_shapes
from ..models.lite_whisper.modeling_lite_whisper import LiteWhisperForConditionalGeneration

#: The dimensions of OpenAI's checkpoints (their config.json). large-v3-turbo has large-v3's encoder and a
#: 4-layer decoder.
WHISPER_SHAPES: dict[str, dict] = {
    "tiny": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536, decoder_layers=4,
                 decoder_attention_heads=6, decoder_ffn_dim=1536, num_mel_bins=80, vocab_size=51865),
    "base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, decoder_layers=6,
                 decoder_attention_heads=8, decoder_ffn_dim=2048, num_mel_bins=80, vocab_size=51865),
    "small": dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                  decoder_layers=12, decoder_attention_heads=12, decoder_ffn_dim=3072, num_mel_bins=80,
                  vocab_size=51865),
    "medium": dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096,
                   decoder_layers=24, decoder_attention_heads=16, decoder_ffn_dim=4096, num_mel_bins=80,
                   vocab_size=51865),
    "large-v3": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                     decoder_layers=32, decoder_attention_heads=20, decoder_ffn_dim=5120, num_mel_bins=128,
                     vocab_size=51866),
    "large-v3-turbo": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                           decoder_layers=4, decoder_attention_heads=20, decoder_ffn_dim=5120, num_mel_bins=128,
                           vocab_size=51866),
}
PREFIX = "shape:"
_SPEC = re.compile(r"^shape:(?P<size>[\w.-]+?)(?:@(?P<keep>[\w.-]+?))?(?:,attention=(?P<attention>\d+))?"
                   r"(?:,kernel=(?P<kernel>on|off))?$")
#: Decoder layers actually built: the encoder benchmark never runs the decoder, and the real large-v3 decoder
#: would add 3.6 GB of float32 weights per model. The config keeps the real count under ``real_decoder_layers``.
BUILT_DECODER_LAYERS = 1


def is_synthetic(name: str) -> bool:
    return str(name).startswith(PREFIX)


def shape_config(size: str, decoder_layers: int | None = BUILT_DECODER_LAYERS) -> WhisperConfig:
    """A ``WhisperConfig`` with the dimensions of Whisper ``size`` (``decoder_layers``: built decoder depth)."""
    if size not in WHISPER_SHAPES:
        raise ValueError(f"Unknown Whisper size {size!r}; choose from {', '.join(WHISPER_SHAPES)}.")
    dims = dict(WHISPER_SHAPES[size])
    real_layers = dims["decoder_layers"]
    if decoder_layers is not None:
        dims["decoder_layers"] = decoder_layers
    return WhisperConfig(**dims, max_source_positions=1500, max_target_positions=448, real_decoder_layers=real_layers)


def _round_rank(value: float, multiple: int, limit: int) -> int:
    return max(multiple, min(limit, multiple * round(value / multiple)))


def proportional_low_rank_config(
    config: WhisperConfig,
    keep: float,
    attention_rank: int | None = None,
    rank_multiple: int = 16,
) -> list[dict[str, int]]:
    """Ranks with which the encoder keeps at most ``keep`` of its parameters, every module the same share.

    ``attention_rank`` fixes the q/k/v ranks; the other modules then share what is left. Modules whose
    factorization would not save parameters at their share stay dense. Raises ``ValueError`` when ``keep``
    cannot be met (the fixed parts alone are larger).
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep = {keep!r}: give the fraction of the encoder's parameters to keep, in (0, 1].")
    shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
    fixed = {m: attention_rank for m in ("q_proj", "k_proj", "v_proj")} if attention_rank else {}
    for module, rank in fixed.items():
        if not 0 < rank < min(shapes[module]):
            raise ValueError(f"attention={rank}: a q/k/v rank must lie between 1 and {min(shapes[module]) - 1}.")
    dense = encoder_cost(config, []).params

    def ranks(share: float) -> list[dict[str, int]]:
        layer = {}
        for module in LOW_RANK_MODULES:
            in_f, out_f = shapes[module]
            rank = fixed.get(module) or _round_rank(share * in_f * out_f / (in_f + out_f), rank_multiple,
                                                    min(in_f, out_f) - 1)
            if module in fixed or saves_parameters(in_f, out_f, rank):
                layer[module] = rank
        return [dict(layer) for _ in range(config.encoder_layers)]

    def kept(share: float) -> float:
        return encoder_cost(config, ranks(share)).params / dense

    low, high = 0.0, 1.0
    if kept(low) > keep:
        raise ValueError(f"keep = {keep}: even the smallest ranks keep {kept(low):.1%} of the encoder.")
    for _ in range(40):  # bisection on the share; kept() is monotone in it
        middle = (low + high) / 2
        low, high = (middle, high) if kept(middle) <= keep else (low, middle)
    return ranks(low)


@dataclass(frozen=True)
class ShapeSpec:
    """A parsed ``shape:`` spec: Whisper size, encoder share kept (None: dense), fixed q/k/v rank, kernel use."""

    size: str
    keep: float | None = None
    attention_rank: int | None = None
    fused_kernel: bool = True


def parse_spec(spec: str) -> ShapeSpec:
    """``shape:SIZE[@PRESET|FRACTION][,attention=RANK][,kernel=on|off]`` -> :class:`ShapeSpec`."""
    match = _SPEC.match(str(spec))
    if not match:
        raise ValueError(f"{spec!r}: write shape:SIZE, shape:SIZE@PRESET, shape:SIZE@FRACTION or "
                         "shape:SIZE@FRACTION,attention=RANK[,kernel=off], e.g. shape:large-v3@large-v3-fast.")
    size, keep_text, attention = match["size"], match["keep"], match["attention"]
    if size not in WHISPER_SHAPES:
        raise ValueError(f"{spec!r}: unknown Whisper size {size!r}; choose from {', '.join(WHISPER_SHAPES)}.")
    keep = None
    if keep_text is not None:
        try:
            keep = float(keep_text)
        except ValueError:
            budget = load_settings(keep_text).budget
            if budget is None:
                raise ValueError(f"{spec!r}: preset {keep_text!r} sets no budget (encoder size); give a fraction "
                                 "instead.") from None
            keep = budget
    if (attention is not None or match["kernel"]) and keep is None:
        raise ValueError(f"{spec!r}: attention= and kernel= describe a LiteWhisper model: give a size after '@'.")
    return ShapeSpec(size, keep, None if attention is None else int(attention), match["kernel"] != "off")


def synthetic_model(
    spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> WhisperForConditionalGeneration:
    """The random-weight model ``spec`` names (see the module docstring), in eval mode on ``device``."""
    parsed = parse_spec(spec)
    config = shape_config(parsed.size)
    torch.manual_seed(seed)
    with torch.device(device):  # initialized where it runs: a large model's random init is slow on a CPU
        if parsed.keep is None:
            model = WhisperForConditionalGeneration(config)
        else:
            low_rank = proportional_low_rank_config(config, parsed.keep, attention_rank=parsed.attention_rank)
            dims = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")}
            model = LiteWhisperForConditionalGeneration(LiteWhisperConfig(low_rank_config=low_rank, **dims))
            for layer in model.get_encoder().layers:
                layer.self_attn.use_fused_kernel = parsed.fused_kernel
    return model.to(dtype=dtype).eval()


def describe(model: WhisperForConditionalGeneration) -> str:
    """One line: encoder share and the ranks of the first layer (all layers are alike)."""
    ranks = getattr(model.config, "low_rank_config", None)
    if not ranks:
        return "dense"
    share = encoder_cost(model.config).params / encoder_cost(model.config, []).params
    return f"{share:.1%} of the encoder, ranks per layer {ranks[0]}"


__all__ = ["WHISPER_SHAPES", "ShapeSpec", "describe", "is_synthetic", "parse_spec", "proportional_low_rank_config",
           "shape_config", "synthetic_model"]

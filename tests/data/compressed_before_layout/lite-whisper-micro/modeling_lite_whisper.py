"""LiteWhisper: Whisper whose encoder linear layers are low-rank factorized (LiteASR, arXiv 2502.20583).

This file travels to the Hugging Face Hub next to the weights and is read there: it imports only torch,
transformers and the files beside it. The classes subclass transformers' Whisper classes; only the
constructors that build encoder layers are adapted (from transformers 5.x `modeling_whisper.py`), so that
factorized layers are built from the config directly and no dense weight is made and thrown away.
"""

from __future__ import annotations

import importlib.util
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


def attention_flops(
    d_model: int,
    num_heads: int,
    tokens: int,
    q_rank: int | None,
    k_rank: int | None,
    v_rank: int | None,
    one_head_size: bool = True,
) -> dict[str, int | None]:
    """FLOPs (2 per multiply-add) of one encoder self-attention over ``tokens`` positions, per path.

    Counts what differs between the paths: the q, k, v projections, the two attention products and, in the
    rank space, the value up-projection after attention; ``out_proj`` and the softmax are the same in both.
    ``one_head_size``: the rank-space query/key and value sizes are padded to one size, as PyTorch's fused
    CPU attention needs (the Triton kernel does not). ``rank_space`` is ``None`` where k or v is dense.
    """
    d, h, t = d_model, num_heads, tokens
    q_in = d if q_rank is None else q_rank  # the size of what the query is computed from

    def projection(rank: int | None) -> int:  # multiply-adds per token of a d -> d projection
        return d * d if rank is None else rank * 2 * d

    full = t * (projection(q_rank) + projection(k_rank) + projection(v_rank)) + 2 * h * t * t * (d // h)
    if k_rank is None or v_rank is None:
        return {"full": 2 * full, "rank_space": None}
    size_k, size_v = _rank_space_sizes(k_rank, v_rank, one_head_size)
    q_down = 0 if q_rank is None else d * q_rank
    rank = t * (q_down + q_in * h * size_k + d * size_k + d * size_v + v_rank * d) + h * t * t * (size_k + size_v)
    return {"full": 2 * full, "rank_space": 2 * rank}


def _rank_space_sizes(k_rank: int, v_rank: int, one_head_size: bool) -> tuple[int, int]:
    """Key and value sizes the rank-space attention runs at: both the larger rank when padded to one size."""
    return (max(k_rank, v_rank),) * 2 if one_head_size else (k_rank, v_rank)


def select_attention_path(config: LiteWhisperConfig, layer: int, tokens: int, fused: bool = False) -> str:
    """``full`` or ``rank_space`` for encoder layer ``layer``: the config's choice, or with ``auto`` the path
    with fewer FLOPs over ``tokens`` positions (``fused``: the Triton kernel, which needs no padding, runs)."""
    chosen = config.layer_attention_path(layer)
    if chosen != "auto":
        return chosen
    ranks = [config.rank(layer, m) for m in ("q_proj", "k_proj", "v_proj")]
    costs = attention_flops(config.d_model, config.encoder_attention_heads, tokens, *ranks, one_head_size=not fused)
    return "rank_space" if costs["rank_space"] is not None and costs["rank_space"] < costs["full"] else "full"


class LiteWhisperAttention(WhisperAttention):
    """Encoder self-attention whose projections may be low-rank, computed on one of two paths.

    ``full``: Whisper's forward (project q, k, v to the model dimension, run the configured attention).
    ``rank_space``: with ``k = a_k B_k + b_k`` and ``v = a_v B_v + b_v`` (``a = x @ weight1``, ``B = weight2``),
    head h's scores ``q_h k_h^T`` equal ``(q_h B_k,h^T) a_k^T`` up to terms constant along each query row, which
    cancel in the softmax; so the query is mapped once into k's rank space by a merged matrix folded from the
    weights, and every head attends over the same ``a_k`` and ``a_v``. Softmax rows sum to one, so the value
    path is ``softmax(.) a_v`` followed by ``B_v,h`` and ``+ b_v``. Attention then costs ``T^2 r`` per head
    instead of ``T^2 head_dim``: cheaper only where the ranks are below the head size. The choice per layer
    is ``config.attention_path`` (``auto`` asks :func:`attention_flops`); :meth:`path` tells which runs.
    """

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
        self._folded: tuple[tuple, dict[str, torch.Tensor]] | None = None

    def path(self, tokens: int | None = None, device: torch.device | str | None = None) -> str:
        """``full`` or ``rank_space``: the path a forward over ``tokens`` positions on ``device`` takes
        (defaults: Whisper's 1500 encoder positions, the device of the weights)."""
        tokens = self.config.max_source_positions if tokens is None else tokens
        device = torch.device(device) if device is not None else self.out_proj.bias.device
        fused = _fused_kernel_possible(device, self.out_proj.bias.dtype, self.k_proj, self.v_proj)
        return select_attention_path(self.config, self.layer_idx, tokens, fused=fused)

    def extra_repr(self) -> str:
        return f"path={self.path()} (attention_path={self.config.layer_attention_path(self.layer_idx)!r})"

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        past_key_values=None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ):
        if key_value_states is not None or past_key_values is not None:
            raise ValueError("LiteWhisperAttention is encoder self-attention: it takes no key_value_states or cache.")
        if self.path(hidden_states.shape[1], hidden_states.device) == "full":
            return super().forward(
                hidden_states, attention_mask=attention_mask, output_attentions=output_attentions, **kwargs
            )
        return self._rank_space_forward(hidden_states, attention_mask, output_attentions)

    def _rank_space_forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, _ = hidden_states.shape
        heads, dropout = self.num_heads, (self.dropout if self.training else 0.0)
        fused = (
            not output_attentions and dropout == 0.0
            and _fused_kernel_possible(hidden_states.device, hidden_states.dtype, self.k_proj, self.v_proj)
        )
        key_padding = None
        if fused and attention_mask is not None:
            # The kernel takes a key padding mask (B, T); other masks (per query, additive) take SDPA.
            key_padding = _key_padding(attention_mask, tokens)
            fused = key_padding is not None
        w = self._folded_weights(one_head_size=not fused)
        size_k = w["k_down"].shape[1]
        query_input = hidden_states @ self.q_proj.weight1 if isinstance(self.q_proj, LowRankLinear) else hidden_states
        # (B, T, H, size_k): queries already mapped into k's rank space and scaled
        query = nn.functional.linear(query_input, w["query"], w["query_bias"]).view(batch, tokens, heads, size_k)
        key = hidden_states @ w["k_down"]  # (B, T, size_k), shared by every head
        value = hidden_states @ w["v_down"]  # (B, T, size_v), shared by every head
        attn_weights = None
        if fused:
            from .rank_attention_triton import rank_space_attention

            context = rank_space_attention(query.transpose(1, 2), key, value, key_padding)  # (B, T, H, r_v)
        elif output_attentions or self.config._attn_implementation == "eager":
            scores = torch.matmul(query.transpose(1, 2), key.unsqueeze(1).transpose(2, 3))  # (B, H, T, T)
            if attention_mask is not None:
                scores = _apply_mask(scores, attention_mask)
            attn_weights = nn.functional.softmax(scores, dim=-1)
            probs = nn.functional.dropout(attn_weights, p=dropout, training=self.training)
            context = torch.matmul(probs, value.unsqueeze(1)).transpose(1, 2)  # (B, T, H, size_v)
        else:
            mask = attention_mask
            if mask is not None and mask.dtype != torch.bool:
                mask = mask.to(query.dtype)
            context = nn.functional.scaled_dot_product_attention(
                query.transpose(1, 2), key.unsqueeze(1), value.unsqueeze(1),
                attn_mask=mask, dropout_p=dropout, scale=1.0, enable_gqa=True,
            ).transpose(1, 2)  # (B, T, H, size_v)
        # per head, padding dropped: (B, T, r_v) @ B_v,h (r_v, head_dim), then the value bias
        context = torch.einsum("bthr,hrd->bthd", context[..., : w["v_up"].shape[1]], w["v_up"])
        attn_output = context.reshape(batch, tokens, self.embed_dim) + w["v_bias"]
        return self.out_proj(attn_output), attn_weights

    def _folded_weights(self, one_head_size: bool) -> dict[str, torch.Tensor]:
        """The merged rank-space matrices, folded once per set of weights (folded again after loading,
        ``.to()`` or an optimizer step, which change the parameters' storage or version). Where gradients
        are wanted they are folded on every call instead, so that gradients reach the factors."""
        params = [p for m in (self.q_proj, self.k_proj, self.v_proj) for p in m.parameters()]
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self._fold(one_head_size)  # traced into the graph (no cache check to break it) / differentiable
        key = (one_head_size, *((p.data_ptr(), p._version, p.dtype, p.device) for p in params))
        if self._folded is None or self._folded[0] != key:
            with torch.no_grad():
                self._folded = (key, self._fold(one_head_size))
        return self._folded[1]

    def _fold(self, one_head_size: bool) -> dict[str, torch.Tensor]:
        device, dtype = self.out_proj.bias.device, self.out_proj.bias.dtype
        work = torch.float64 if device.type == "cpu" else torch.float32
        heads, head_dim = self.num_heads, self.head_dim
        r_k, r_v = self.k_proj.rank, self.v_proj.rank
        size_k, size_v = _rank_space_sizes(r_k, r_v, one_head_size)
        if isinstance(self.q_proj, LowRankLinear):
            q_up, q_bias = self.q_proj.weight2, self.q_proj.bias  # (r_q, d)
        else:
            q_up = self.q_proj.weight.t()  # (d, d): the query is computed from x itself
            q_bias = self.q_proj.bias
        q_up = q_up.to(work).reshape(-1, heads, head_dim)
        k_up = self.k_proj.weight2.to(work).view(r_k, heads, head_dim)
        # (r_q, H, r_k): B_q,h B_k,h^T per head, and the query bias mapped the same way (H, r_k); the k bias
        # only adds terms constant along each query row, so it drops out.
        merged = torch.einsum("qhd,khd->qhk", q_up, k_up) * self.scaling
        merged_bias = torch.einsum("hd,khd->hk", q_bias.to(work).view(heads, head_dim), k_up) * self.scaling
        pad = size_k - r_k
        merged = nn.functional.pad(merged, (0, pad)).reshape(merged.shape[0], heads * size_k)
        merged_bias = nn.functional.pad(merged_bias, (0, pad)).reshape(heads * size_k)
        folded = {
            "query": merged.t().contiguous().to(dtype),  # F.linear weight (H * size_k, r_q or d)
            "query_bias": merged_bias.to(dtype),
            "k_down": nn.functional.pad(self.k_proj.weight1, (0, size_k - r_k)).contiguous(),  # (d, size_k)
            "v_down": nn.functional.pad(self.v_proj.weight1, (0, size_v - r_v)).contiguous(),  # (d, size_v)
            "v_up": self.v_proj.weight2.view(r_v, heads, head_dim).transpose(0, 1).contiguous(),  # (H, r_v, hd)
            "v_bias": self.v_proj.bias,
        }
        return folded


def _fused_kernel_possible(device: torch.device, dtype: torch.dtype, *modules: nn.Module) -> bool:
    """The Triton kernel (``rank_attention_triton.py``) runs in fp16 and bf16 on CUDA with Triton installed,
    for ranks up to 256; checked without importing Triton, which CPU users need not have."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    if importlib.util.find_spec("triton") is None:
        return False
    return all(isinstance(m, LowRankLinear) and m.rank <= 256 for m in modules)


def _key_padding(attention_mask: torch.Tensor, tokens: int) -> torch.Tensor | None:
    """A (B, 1, T, T) mask that only hides keys, the same for every query, as a (B, T) bool keep-mask;
    ``None`` for any other mask."""
    if attention_mask.dim() != 4 or attention_mask.shape[1] != 1 or attention_mask.shape[-1] != tokens:
        return None
    keep = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
    if not (attention_mask.dtype == torch.bool or bool(((attention_mask == 0) | (attention_mask <= -1e4)).all())):
        return None  # an additive bias, not a mask
    rows = keep[:, 0]  # (B, Tq, T)
    return rows[:, 0] if bool((rows == rows[:, :1]).all()) else None


def _apply_mask(scores: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    if attention_mask.dtype == torch.bool:  # True = attend, as in scaled_dot_product_attention
        return scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    return scores + attention_mask


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

    def attention_paths(self, tokens: int | None = None, device: torch.device | str | None = None) -> list[str]:
        """The self-attention path (``full`` or ``rank_space``) each layer takes for ``tokens`` positions."""
        return [layer.self_attn.path(tokens, device) for layer in self.layers]


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
    "attention_flops",
    "select_attention_path",
    "LowRankLinear",
    "LiteWhisperAttention",
    "LiteWhisperEncoderLayer",
    "LiteWhisperPreTrainedModel",
    "LiteWhisperEncoder",
    "LiteWhisperModel",
    "LiteWhisperForConditionalGeneration",
]

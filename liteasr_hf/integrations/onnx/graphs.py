"""The modules that are exported: Whisper's encoder as it is, and one decoder step written over the model's own
layers with plain tensors in and out.

The decoder step takes its cache as tensors, ``(batch, heads, length, head_dim)`` per layer, instead of
transformers' cache objects, so that the exported graph has the input and output names ONNX clients expect and
does not depend on how a transformers release implements its cache. It computes what
``WhisperDecoder`` computes (checked against it by the parity tests): token and position embeddings, then per
layer causal self-attention over past and new tokens, cross-attention over the encoder output (projected on the
first step, taken from the cache afterwards), the MLP; the final LayerNorm and the output projection.
"""

from __future__ import annotations

import torch
from torch import nn


class EncoderGraph(nn.Module):
    """``input_features (B, mels, 3000) -> last_hidden_state (B, 1500, d)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_features).last_hidden_state


class DecoderGraph(nn.Module):
    """One decoder step; ``with_past`` selects the graph that reads the cache.

    Without past: ``(input_ids, encoder_hidden_states) -> (logits, *presents)``. With past:
    ``(input_ids, *past) -> (logits, *presents)``, where past and presents are, per layer, the self-attention
    key and value and the cross-attention key and value.
    """

    def __init__(self, model: nn.Module, with_past: bool):
        super().__init__()
        decoder = model.get_decoder()
        self.with_past = with_past
        self.embed_tokens = decoder.embed_tokens
        self.embed_positions = decoder.embed_positions
        self.embed_scale = getattr(decoder, "embed_scale", 1.0)
        self.layers = decoder.layers
        self.layer_norm = decoder.layer_norm
        self.proj_out = model.get_output_embeddings()
        config = model.config
        self.num_heads = config.decoder_attention_heads
        self.head_dim = config.d_model // self.num_heads

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, H, T, hd)
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(self, attn: nn.Module, query_input: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        # Whisper scales the projected queries before the product (transformers keeps that order for parity).
        query = self._split_heads(attn.q_proj(query_input) * self.head_dim**-0.5)
        scores = query @ key.transpose(-1, -2)  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        context = (scores.softmax(dim=-1) @ value).transpose(1, 2)  # (B, T, H, hd)
        return attn.out_proj(context.reshape(context.shape[0], context.shape[1], -1))

    def forward(self, input_ids: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.with_past:
            encoder_hidden_states, past = None, inputs
            past_length = past[0].shape[2]
        else:
            (encoder_hidden_states,), past = inputs, ()
            past_length = 0
        tokens = input_ids.shape[1]
        positions = torch.arange(tokens, device=input_ids.device) + past_length
        hidden = self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions.weight[positions]
        # query at absolute position p sees keys 0..p
        keys_at = torch.arange(past_length + tokens, device=input_ids.device)
        causal = keys_at[None, :] <= positions[:, None]  # (T, S)

        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            residual = hidden
            x = layer.self_attn_layer_norm(hidden)
            key = self._split_heads(layer.self_attn.k_proj(x))
            value = self._split_heads(layer.self_attn.v_proj(x))
            if self.with_past:
                key = torch.cat([past[4 * i], key], dim=2)
                value = torch.cat([past[4 * i + 1], value], dim=2)
            hidden = residual + self._attend(layer.self_attn, x, key, value, causal)

            residual = hidden
            x = layer.encoder_attn_layer_norm(hidden)
            if self.with_past:
                cross_key, cross_value = past[4 * i + 2], past[4 * i + 3]
            else:
                cross_key = self._split_heads(layer.encoder_attn.k_proj(encoder_hidden_states))
                cross_value = self._split_heads(layer.encoder_attn.v_proj(encoder_hidden_states))
            hidden = residual + self._attend(layer.encoder_attn, x, cross_key, cross_value, None)

            residual = hidden
            x = layer.final_layer_norm(hidden)
            hidden = residual + layer.fc2(layer.activation_fn(layer.fc1(x)))
            presents += [key, value, cross_key, cross_value]
        logits = self.proj_out(self.layer_norm(hidden))
        return (logits, *presents)

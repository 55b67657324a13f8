"""Replacing a dense linear layer by its LiteASR factorization."""

from __future__ import annotations

import torch
from torch import nn

from ..models.lite_whisper.modeling_lite_whisper import LowRankLinear
from .pca import PrincipalComponents


def factorize_linear(linear: nn.Linear, components: PrincipalComponents, rank: int) -> LowRankLinear:
    """The rank-``rank`` LiteASR factorization of ``linear`` from the PCA of its outputs.

    With ``V_k`` the top principal directions and ``mu`` the output mean, ``y = x W^T + b`` becomes
    ``(x @ W^T V_k) @ V_k^T + mu + (b - mu) V_k V_k^T``: outputs are projected onto their principal
    subspace around their mean. Computed in float64, stored in the layer's dtype and device.
    """
    weight = linear.weight.detach().to(torch.float64).cpu()  # [out, in]
    out_features, in_features = weight.shape
    bias = linear.bias.detach().to(torch.float64).cpu() if linear.bias is not None else torch.zeros(out_features, dtype=torch.float64)
    basis = components.basis(rank)  # [out, k]
    mean = components.mean
    factorized = LowRankLinear(in_features, out_features, rank).to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        factorized.weight1.copy_(weight.t() @ basis)  # [in, k]
        factorized.weight2.copy_(basis.t())  # [k, out]
        factorized.bias.copy_(mean + ((bias - mean) @ basis) @ basis.t())
    return factorized


def encoder_module_path(layer: int, module: str) -> str:
    """The dotted path of encoder layer ``layer``'s linear ``module`` (``q_proj`` ... ``fc2``) in a Whisper model."""
    inner = f"self_attn.{module}" if module in ("q_proj", "k_proj", "v_proj", "out_proj") else module
    return f"model.encoder.layers.{layer}.{inner}"


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (peft's walk-to-parent-and-setattr)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)

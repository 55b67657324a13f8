"""How much each module's truncation moves the encoder's output: weights for the budget's rank allocation.

The budget (:func:`~.rank_selection.plan_by_budget`) compares modules by the share of their own output variance a
cut loses. That share says nothing about what the loss does downstream: the same 2% lost in one layer's keys can move
the encoder's output far more than in another's fc1. Here each module is cut alone, on the dense model, to the rank
that keeps :data:`PROBE_KEPT` of its variance (outlier directions aside), and the encoder's output error per unit of
variance lost is its sensitivity. The allocation then weighs each module's loss by it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from accelerate.utils import align_module_device
from torch import nn

from ..models.lite_whisper.configuration_lite_whisper import module_shapes
from .factorization import encoder_module_path, factorize_linear, set_submodule
from .pca import PrincipalComponents
from .rank_selection import outlier_directions, rank_for_threshold, saves_parameters

#: The probe keeps this share of each module's variance outside its outlier directions.
PROBE_KEPT = 0.98


def probe_rank(eigenvalues: torch.Tensor, multiple: int, outlier_share: float | None,
               kept: float = PROBE_KEPT) -> tuple[int, float]:
    """The smallest rank (a multiple of ``multiple``, outlier directions always kept) that keeps ``kept`` of the
    variance outside the outlier directions, and the share of it that rank loses."""
    rank = rank_for_threshold(eigenvalues, kept, multiple, outlier_share)
    skip = outlier_directions(eigenvalues, outlier_share)
    rest = float(eigenvalues[skip:].sum()) or 1.0
    return rank, float(eigenvalues[rank:].sum()) / rest


@torch.inference_mode()
def module_sensitivities(model: nn.Module, features: torch.Tensor,
                         components: Mapping[tuple[int, str], PrincipalComponents], multiple: int = 16,
                         outlier_share: float | None = 0.5, kept: float = PROBE_KEPT) -> dict[tuple[int, str], float]:
    """Per (layer, module): the dense encoder's output error, relative to its output variance, when that module
    alone is cut to its probe rank (keeping ``kept`` of its variance), divided by the variance share the cut loses; scaled to a geometric mean of 1.

    ``features``: log-mel windows ``[batch, mels, frames]`` on the model's device and dtype. Modules whose probe cut
    saves nothing are left out (weight 1 in the allocation). The model is left as it was found.
    """
    encoder = model.model.encoder
    config = model.config
    shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
    # The input of every layer, kept from the dense pass: a cut in layer i changes nothing before it, so its probe
    # runs from layer i on (about half the encoder on average, not all of it).
    inputs: list[torch.Tensor] = []
    hooks = [block.register_forward_pre_hook(lambda _, args: inputs.append(args[0])) for block in encoder.layers]
    try:
        reference = encoder(features).last_hidden_state.float()  # [batch, positions, d_model]
    finally:
        for hook in hooks:
            hook.remove()
    scale = float((reference - reference.mean(dim=(0, 1))).pow(2).mean())
    raw = {}
    for (layer, module), pcs in components.items():
        rank, lost = probe_rank(pcs.eigenvalues, multiple, outlier_share, kept)
        if lost <= 0 or not saves_parameters(*shapes[module], rank):
            continue
        path = encoder_module_path(layer, module)
        dense = model.get_submodule(path)
        with align_module_device(dense):  # an offloaded layer's weights, brought in for the factorization
            probe = factorize_linear(dense, pcs, rank)
        set_submodule(model, path, probe)
        try:
            out = _encoder_from(encoder, layer, inputs[layer])
        finally:
            set_submodule(model, path, dense)
        error = float((out - reference).pow(2).mean()) / scale
        raw[(layer, module)] = max(error, 1e-12) / lost
    if not raw:
        return {}
    centre = math.exp(sum(math.log(v) for v in raw.values()) / len(raw))
    return {key: value / centre for key, value in raw.items()}


def _encoder_from(encoder: nn.Module, first: int, hidden: torch.Tensor) -> torch.Tensor:
    """The encoder's output from layer ``first`` on, given that layer's input (as the encoder's forward does it)."""
    for block in encoder.layers[first:]:
        hidden = block(hidden, None)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # transformers 4.x layers return a tuple
    return encoder.layer_norm(hidden).float()

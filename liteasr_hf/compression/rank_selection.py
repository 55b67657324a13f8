"""Choosing ranks: per-kind variance thresholds or a global size budget, kept apart from applying them.

The result is a :class:`RankPlan`, plain JSON that is saved, read and applied again.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import WhisperConfig

from ..atomic import atomic_write_text
from ..models.lite_whisper.configuration_lite_whisper import LOW_RANK_MODULES, module_shapes, validate_low_rank_config
from .cost import encoder_cost, module_cost

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")
MLP_MODULES = ("fc1", "fc2")


def module_kind(module: str) -> str:
    """``"attention"`` or ``"mlp"``: the two kinds that carry their own variance threshold."""
    if module in ATTENTION_MODULES:
        return "attention"
    if module in MLP_MODULES:
        return "mlp"
    raise ValueError(f"Unknown encoder module {module!r}; expected one of {', '.join(LOW_RANK_MODULES)}.")


def outlier_directions(eigenvalues: torch.Tensor, outlier_share: float | None) -> int:
    """Number of leading directions that each hold more than ``outlier_share`` of the variance left after
    the ones before them.

    An outlier activation (e.g. Whisper's last encoder fc2 puts ~99% of its output variance in one direction)
    makes a plain variance share meaningless: one direction passes any threshold and the rest of the signal is
    thrown away. Such directions are always kept and the threshold is applied to the variance that remains.
    """
    if not outlier_share:
        return 0
    tail = torch.flip(torch.cumsum(torch.flip(eigenvalues, [0]), 0), [0])  # tail[i] = sum(eigenvalues[i:])
    dominant = eigenvalues > outlier_share * tail
    # Count only the leading run: a later direction dominating a near-zero tail is not an outlier.
    return int(torch.cumprod(dominant.to(torch.int64), 0).sum())


def rank_for_threshold(
    eigenvalues: torch.Tensor, threshold: float, multiple: int = 16, outlier_share: float | None = None
) -> int:
    """Smallest multiple of ``multiple`` whose top eigenvalues keep more than ``threshold`` of the variance
    (after setting aside outlier directions, see :func:`outlier_directions`)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"A variance threshold must lie in (0, 1], got {threshold}.")
    skip = outlier_directions(eigenvalues, outlier_share)
    rest = eigenvalues[skip:].to(torch.float64)
    share = torch.cumsum(rest, 0) / rest.sum().clamp_min(1e-300)
    # Smallest k with share[k-1] > threshold; a threshold of 1 keeps everything.
    k = int(torch.searchsorted(share, torch.tensor([threshold], dtype=share.dtype), right=True)) + 1
    k = min(skip + k, eigenvalues.numel())
    return min(math.ceil(k / multiple) * multiple, eigenvalues.numel())


def saves_parameters(in_features: int, out_features: int, rank: int) -> bool:
    """Whether a rank-``rank`` factorization is smaller than the dense layer (and a valid rank)."""
    return rank < min(in_features, out_features) and rank * (in_features + out_features) < in_features * out_features


@dataclass
class RankPlan:
    """Which rank each encoder module gets, and why. ``ranks`` is the config's ``low_rank_config``."""

    ranks: list[dict[str, int]]
    variance_kept: list[dict[str, float]] = field(default_factory=list)
    method: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, config: WhisperConfig | None = None) -> "RankPlan":
        """Read a plan; with ``config``, check its ranks against the model's shapes."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Rank plan {path} does not exist.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            plan = cls(ranks=data["ranks"], variance_kept=data.get("variance_kept", []), method=data.get("method", {}))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a rank plan (JSON with a 'ranks' list): {err}") from err
        if config is not None:
            plan.check(config)
        return plan

    def check(self, config: WhisperConfig) -> None:
        validate_low_rank_config(self.ranks, config.encoder_layers, config.d_model, config.encoder_ffn_dim)


def plan_by_threshold(
    spectra: list[dict[str, torch.Tensor]],
    config: WhisperConfig,
    thresholds: dict[str, float],
    multiple: int = 16,
    outlier_share: float | None = None,
) -> RankPlan:
    """Per module: the threshold rank of its kind, or dense where that rank would save nothing.

    ``thresholds`` maps a kind (``attention``, ``mlp``) or a module name to a variance share; a module
    with no threshold stays dense.
    """
    shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
    ranks, kept = [], []
    for layer_spectra in spectra:
        layer_ranks, layer_kept = {}, {}
        for module, eigenvalues in layer_spectra.items():
            threshold = thresholds.get(module, thresholds.get(module_kind(module)))
            if threshold is None:
                continue
            rank = rank_for_threshold(eigenvalues, threshold, multiple, outlier_share)
            if saves_parameters(*shapes[module], rank):
                layer_ranks[module] = rank
                layer_kept[module] = _share(eigenvalues, rank)
        ranks.append(layer_ranks)
        kept.append(layer_kept)
    method = {"mode": "threshold", "thresholds": thresholds, "rank_multiple": multiple, "outlier_share": outlier_share}
    return RankPlan(ranks, kept, method)


def check_layer_floor(layer_floor: float | None, target: float | None) -> None:
    """Raise when a layer floor is not a share, or when it leaves a budget of ``target`` out of reach (every layer
    keeping ``layer_floor`` of its own keeps at least that much of the whole)."""
    if layer_floor is None:
        return
    if isinstance(layer_floor, bool) or not isinstance(layer_floor, (int, float)) or not 0 < layer_floor < 1:
        raise ValueError(f"layer_floor = {layer_floor!r}: give the share of each layer to keep at least, in (0, 1), "
                         "or leave it out.")
    if target is None:
        raise ValueError("layer_floor bounds the budget's allocation: give a budget too, or drop layer_floor.")
    if layer_floor > target:
        raise ValueError(f"layer_floor = {layer_floor} is above the budget ({target}): every layer keeping "
                         f"{layer_floor:.0%} of its own keeps more than {target:.0%} of the encoder. Lower the floor.")


def check_budget_reachable(config: WhisperConfig, target: float, measure: str = "params", multiple: int = 16,
                           modules: tuple[str, ...] = LOW_RANK_MODULES) -> None:
    """Raise before any calibration when ``target`` is out of reach whatever the data: even with every module in
    ``modules`` at rank ``multiple`` (or dense, where that rank saves nothing) the encoder would keep more.

    :func:`plan_by_budget` checks the same with the data's outlier directions, which can only raise the floor.
    """
    shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
    ranks = [{m: multiple for m in modules if saves_parameters(*shapes[m], multiple)}
             for _ in range(config.encoder_layers)]
    smallest = getattr(encoder_cost(config, ranks), measure) / getattr(encoder_cost(config, []), measure)
    if smallest > target:
        raise ValueError(
            f"A {measure} budget of {target:.1%} cannot be met: with every module at its smallest allowed rank "
            f"the encoder keeps {smallest:.1%}. Raise the budget or lower the rank multiple ({multiple})."
        )


def plan_by_budget(
    spectra: list[dict[str, torch.Tensor]],
    config: WhisperConfig,
    target: float,
    measure: str = "params",
    multiple: int = 16,
    outlier_share: float | None = None,
    weights: Mapping[tuple[int, str], float] | None = None,
    layer_floor: float | None = None,
) -> RankPlan:
    """Allocate ranks across all layers so the encoder keeps at most ``target`` of its ``measure``
    (``"params"`` or ``"flops"``).

    Criterion: greedily give up the rank block (``multiple`` directions) whose loss of *relative* output
    variance per unit of ``measure`` saved is smallest. Relative variance (the share of a module's own output
    variance it loses) is scale-free, so modules with large activations are not favoured over small ones;
    outlier directions are never given up. ``weights`` (per ``(layer, module)``, default 1) scale each module's
    loss: :func:`~.sensitivity.module_sensitivities`, how far a cut there moves the encoder's output.
    ``layer_floor``: no layer's linear modules keep less than this share of their ``measure``, so that the
    calibration's spectra cannot put most of the cut into a few layers.
    """
    if measure not in ("params", "flops"):
        raise ValueError(f"Budget measure must be 'params' or 'flops', got {measure!r}.")
    if not 0 < target <= 1:
        raise ValueError(f"A budget must be a fraction in (0, 1], got {target}.")
    check_layer_floor(layer_floor, target)
    shapes = module_shapes(config.d_model, config.encoder_ffn_dim)
    original = getattr(encoder_cost(config, []), measure)
    budget = target * original
    current = original

    def size(module: str, rank: int | None) -> int:
        return getattr(module_cost(config, module, rank), measure)

    # What each layer's linear modules may shrink to; without a floor, nothing stops a layer.
    dense_layer = sum(size(m, None) for m in shapes)
    layer_size = [dense_layer] * len(spectra)
    least = (layer_floor or 0.0) * dense_layer

    # Per module, the ladder of choices from dense down to the smallest rank, and the loss at each rung.
    ladders: dict[tuple[int, str], list[tuple[int | None, float]]] = {}
    for layer, layer_spectra in enumerate(spectra):
        for module, eigenvalues in layer_spectra.items():
            in_f, out_f = shapes[module]
            skip = outlier_directions(eigenvalues, outlier_share)
            floor = max(multiple, math.ceil(skip / multiple) * multiple)
            # Loss measured against the variance outside the outlier directions, as in rank_for_threshold.
            rest = float(eigenvalues[skip:].sum()) or 1.0
            top = next((r for r in range(min(in_f, out_f) // multiple * multiple, 0, -multiple)
                        if saves_parameters(in_f, out_f, r)), None)
            if top is None or top < floor:
                continue
            rungs = [(None, 0.0)] + [
                (r, float(eigenvalues[r:].sum()) / rest) for r in range(top, floor - 1, -multiple)
            ]
            ladders[(layer, module)] = rungs

    position = {key: 0 for key in ladders}
    heap = []

    def push(key):
        step = position[key]
        rungs = ladders[key]
        if step + 1 < len(rungs):
            saved = size(key[1], rungs[step][0]) - size(key[1], rungs[step + 1][0])
            loss = (rungs[step + 1][1] - rungs[step][1]) * (weights or {}).get(key, 1.0)
            heapq.heappush(heap, (loss / max(saved, 1), key))

    for key in ladders:
        push(key)
    while current > budget and heap:
        _, key = heapq.heappop(heap)
        rungs, step = ladders[key], position[key]
        saved = size(key[1], rungs[step][0]) - size(key[1], rungs[step + 1][0])
        if layer_size[key[0]] - saved < least:
            continue  # this module's next rungs save as much or more: its ladder ends at the floor
        current -= saved
        layer_size[key[0]] -= saved
        position[key] = step + 1
        push(key)
    if current > budget:
        smallest = current / original
        if layer_floor:
            raise ValueError(
                f"A {measure} budget of {target:.1%} cannot be met with every layer keeping {layer_floor:.0%} of its "
                f"own: the encoder still keeps {smallest:.1%}. Lower the layer floor or raise the budget."
            )
        raise ValueError(
            f"A {measure} budget of {target:.1%} cannot be met: with every module at its smallest allowed rank "
            f"the encoder keeps {smallest:.1%}. Raise the budget or lower the rank multiple ({multiple})."
        )

    ranks = [dict() for _ in spectra]
    kept = [dict() for _ in spectra]
    for (layer, module), step in position.items():
        rank = ladders[(layer, module)][step][0]
        if rank is not None:
            ranks[layer][module] = rank
            kept[layer][module] = _share(spectra[layer][module], rank)
    method = {"mode": "budget", "target": target, "measure": measure, "rank_multiple": multiple,
              "outlier_share": outlier_share, "criterion": "relative variance lost per unit saved"}
    if layer_floor:
        method["layer_floor"] = layer_floor
    if weights:
        method["criterion"] = "relative variance lost, times the module's sensitivity, per unit saved"
        method["sensitivity"] = {f"{layer}.{module}": round(w, 4) for (layer, module), w in sorted(weights.items())}
    return RankPlan(ranks, kept, method)


def _share(eigenvalues: torch.Tensor, rank: int) -> float:
    total = float(eigenvalues.sum())
    return float(eigenvalues[:rank].sum()) / total if total > 0 else 1.0

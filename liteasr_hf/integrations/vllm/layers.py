"""Encoder projections for vLLM: a dense projection as vLLM's Whisper has it, or a factorized one kept as factors.

vLLM's linear layers store ``weight`` as ``[out, in]`` and split it across tensor-parallel ranks: column-parallel
layers (q, k, v, fc1) by output rows, row-parallel layers (out_proj, fc2) by input columns, with an all-reduce after.
A factorized layer ``y = (x @ weight1) @ weight2 + bias`` keeps that contract with two layers:

- column-parallel: ``weight1`` replicated (``[in, k]`` is small), ``weight2`` split by output, as vLLM's dense
  layer is, so every rank computes its own slice of the output;
- row-parallel: ``weight1`` split by input (the input arrives split), the ``k`` partial sums all-reduced, then
  ``weight2`` and the bias replicated, so every rank holds the whole output as after vLLM's dense all-reduce.

No dense ``[out, in]`` weight is ever built from the factors: the model is served at the factorized cost.
"""

from __future__ import annotations

import torch
from torch import nn
from vllm.model_executor.layers.linear import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.model_loader.weight_utils import default_weight_loader


def load_parameter(param: nn.Parameter, tensor: torch.Tensor) -> None:
    """Copy a checkpoint tensor into a vLLM parameter through its own loader (which takes this rank's shard)."""
    getattr(param, "weight_loader", default_weight_loader)(param, tensor)


class LowRankColumnParallelLinear(nn.Module):
    """``y = (x @ weight1) @ weight2 + bias`` with the output split across tensor-parallel ranks."""

    def __init__(self, in_features: int, out_features: int, rank: int, prefix: str = ""):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = ReplicatedLinear(in_features, rank, bias=False, prefix=f"{prefix}.down")
        self.up = ColumnParallelLinear(rank, out_features, bias=True, gather_output=False, prefix=f"{prefix}.up")

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, None]:
        down, _ = self.down(hidden_states)  # (..., k)
        up, _ = self.up(down)  # (..., out / tp)
        return up, None

    def load_factors(self, weight1: torch.Tensor, weight2: torch.Tensor, bias: torch.Tensor) -> None:
        """Load the checkpoint's ``weight1`` ``[in, k]``, ``weight2`` ``[k, out]`` and ``bias`` ``[out]``."""
        load_parameter(self.down.weight, weight1.t().contiguous())
        load_parameter(self.up.weight, weight2.t().contiguous())
        load_parameter(self.up.bias, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class LowRankRowParallelLinear(nn.Module):
    """``y = (x @ weight1) @ weight2 + bias`` taking an input split across tensor-parallel ranks."""

    def __init__(self, in_features: int, out_features: int, rank: int, prefix: str = ""):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = RowParallelLinear(in_features, rank, bias=False, input_is_parallel=True, reduce_results=True,
                                      prefix=f"{prefix}.down")
        self.up = ReplicatedLinear(rank, out_features, bias=True, prefix=f"{prefix}.up")

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, None]:
        down, _ = self.down(hidden_states)  # (..., k), summed over ranks
        up, _ = self.up(down)  # (..., out)
        return up, None

    load_factors = LowRankColumnParallelLinear.load_factors
    extra_repr = LowRankColumnParallelLinear.extra_repr


def column_projection(in_features: int, out_features: int, rank: int | None, bias: bool,
                      quant_config: QuantizationConfig | None, prefix: str) -> nn.Module:
    """q, k, v or fc1: vLLM's ``ColumnParallelLinear`` when dense, the factors when ``rank`` is set."""
    if rank is None:
        return ColumnParallelLinear(in_features, out_features, bias=bias, gather_output=False,
                                    quant_config=quant_config, prefix=prefix)
    return LowRankColumnParallelLinear(in_features, out_features, rank, prefix=prefix)


def row_projection(in_features: int, out_features: int, rank: int | None,
                   quant_config: QuantizationConfig | None, prefix: str) -> nn.Module:
    """out_proj or fc2: vLLM's ``RowParallelLinear`` when dense, the factors when ``rank`` is set."""
    if rank is None:
        return RowParallelLinear(in_features, out_features, bias=True, input_is_parallel=True,
                                 quant_config=quant_config, prefix=prefix)
    return LowRankRowParallelLinear(in_features, out_features, rank, prefix=prefix)

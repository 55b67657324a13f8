"""Principal components of a layer's outputs, from its streamed statistics."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..parallel import Processes
from .calibration import OutputStatistics

Key = TypeVar("Key", bound=Hashable)


@dataclass
class PrincipalComponents:
    """PCA of outputs of width ``d``: the mean and the eigenpairs of the covariance, largest first."""

    mean: torch.Tensor  # [d] float64
    eigenvalues: torch.Tensor  # [d] float64, descending, >= 0
    eigenvectors: torch.Tensor  # [d, d] float64, column i pairs with eigenvalues[i]

    def basis(self, rank: int) -> torch.Tensor:
        """``V_k``: the top-``rank`` principal directions, ``[d, rank]``."""
        return self.eigenvectors[:, :rank]

    def variance_kept(self, rank: int) -> float:
        total = float(self.eigenvalues.sum())
        return float(self.eigenvalues[:rank].sum()) / total if total > 0 else 1.0


def principal_components(stats: OutputStatistics) -> PrincipalComponents:
    """Eigen-decompose the covariance of ``stats`` (float64; eigh on the statistics' device)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(stats.covariance())
    # eigh returns ascending order; tiny negative values are rounding of a PSD matrix.
    order = torch.arange(eigenvalues.shape[0] - 1, -1, -1, device=eigenvalues.device)
    return PrincipalComponents(
        mean=stats.mean.cpu(),
        eigenvalues=eigenvalues[order].clamp_min(0).cpu(),
        eigenvectors=eigenvectors[:, order].cpu(),
    )


def principal_components_of(stats: Mapping[Key, OutputStatistics],
                            processes: Processes | None = None) -> tuple[dict[Key, PrincipalComponents], int]:
    """:func:`principal_components` of every entry of ``stats`` (the same keys, in the same order, and the same
    summed statistics on every process) and how many of them this process decomposed.

    On several ``processes`` each one decomposes its share, the largest widths spread first over the least loaded
    processes (an eigendecomposition costs ``d^3``), and sends the results to the others: the work is divided, and
    every process gets the very same components, whatever rounding its own hardware would have given.
    """
    processes = processes or Processes()
    if not processes.distributed:
        return {key: principal_components(s) for key, s in stats.items()}, len(stats)
    keys = list(stats)
    load, owner = [0] * processes.world_size, {}
    for key in sorted(keys, key=lambda k: -stats[k].total.numel()):  # stable: ties keep the keys' order
        rank = min(range(processes.world_size), key=load.__getitem__)
        owner[key] = rank
        load[rank] += stats[key].total.numel() ** 3
    own = {key: principal_components(stats[key]) for key in keys if owner[key] == processes.rank}
    result = {}
    for key in keys:
        width, device = stats[key].total.numel(), stats[key].total.device  # nccl sends only the device's tensors
        if key in own:
            tensors = [t.to(device) for t in (own[key].mean, own[key].eigenvalues, own[key].eigenvectors)]
        else:
            tensors = [torch.empty(shape, dtype=torch.float64, device=device) for shape in ((width,), (width,),
                                                                                           (width, width))]
        for tensor in tensors:
            processes.broadcast(tensor, owner[key])
        result[key] = PrincipalComponents(*(t.cpu() for t in tensors))
    return result, len(own)

"""Principal components of a layer's outputs, from its streamed statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .calibration import OutputStatistics


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

"""Streaming output statistics of linear layers, collected with forward hooks.

Only running sums are kept (count, sum and sum of outer products, in float64), never the activations,
so memory depends on the layer widths and not on the number of calibration samples. Hooks are removed
when collection ends, also on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..parallel import Processes


#: Float64 elements converted at once when accumulating (4 MB).
CHUNK_ELEMENTS = 1 << 19


@dataclass
class OutputStatistics:
    """Running first and second moments of a module's outputs ``y`` of width ``d``."""

    count: int
    total: torch.Tensor  # [d] float64: sum of y
    outer: torch.Tensor  # [d, d] float64: sum of y y^T

    @classmethod
    def empty(cls, width: int, device: torch.device | str = "cpu") -> "OutputStatistics":
        return cls(0, torch.zeros(width, dtype=torch.float64, device=device),
                   torch.zeros(width, width, dtype=torch.float64, device=device))

    def add(self, outputs: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> None:
        """Accumulate a batch of outputs ``[..., d]``.

        Rows are converted to float64 ``chunk_elements`` at a time, so the transient copy stays a few MB
        whatever the batch size (a whole batch of fc1 outputs in float64 would be ~100 MB per step).
        """
        rows = outputs.detach().reshape(-1, outputs.shape[-1])
        step = max(1, chunk_elements // rows.shape[1])
        for start in range(0, rows.shape[0], step):
            y = rows[start : start + step].to(device=self.total.device, dtype=torch.float64)
            self.count += y.shape[0]
            self.total += y.sum(0)
            self.outer.addmm_(y.t(), y)

    def sum_over(self, processes: Processes) -> None:
        """Replace these sums by their totals over all ``processes``, in place: sums of disjoint shards of the
        calibration windows add up to the sums over all of them (float64, so the order costs ~1e-16)."""
        if not processes.distributed:
            return
        count = torch.tensor([self.count], dtype=torch.float64, device=self.total.device)  # exact below 2**53
        for tensor in (count, self.total, self.outer):
            processes.sum_(tensor)
        self.count = int(count.item())

    @property
    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)

    def covariance(self) -> torch.Tensor:
        """Covariance of the outputs ``[d, d]`` (float64), the matrix whose eigenvectors PCA keeps."""
        if self.count < 2:
            raise ValueError("Output statistics hold fewer than two samples: run calibration on more data.")
        mean = self.mean
        cov = self.outer / self.count - torch.outer(mean, mean)
        return (cov + cov.t()) / 2  # symmetric to rounding, so eigh sees an exactly symmetric matrix


class StopForward(Exception):
    """Raised by a hook to end a forward pass early once the layers of interest have run."""


def collect_output_statistics(
    modules: dict[str, nn.Module],
    forward_loop: Callable[[], None],
    stop_after: nn.Module | None = None,
    stats_device: torch.device | str = "cpu",
) -> dict[str, OutputStatistics]:
    """Run ``forward_loop`` with hooks that accumulate each module's output statistics.

    Args:
        modules: name -> module (each returning a tensor ``[..., d]``).
        forward_loop: runs the model over the calibration data; it is called once.
        stop_after: if given, the forward pass is cut short (``StopForward``) after this module runs, so
            layers past the ones being calibrated cost nothing. ``forward_loop`` must catch ``StopForward``
            per batch (see :func:`run_batches`).
        stats_device: where the float64 sums live ("cpu" keeps GPU memory for the model).
    """
    stats: dict[str, OutputStatistics] = {}
    handles = []

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args, output) -> None:
            if name not in stats:
                stats[name] = OutputStatistics.empty(output.shape[-1], stats_device)
            stats[name].add(output)

        return hook

    def stop(module: nn.Module, args, output) -> None:
        raise StopForward

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(record(name)))
        if stop_after is not None:
            handles.append(stop_after.register_forward_hook(stop))
        forward_loop()
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(modules) - set(stats))
    if missing:
        raise RuntimeError(f"Calibration never ran these modules: {', '.join(missing)}.")
    return stats


def run_batches(
    forward: Callable[[torch.Tensor], object],
    batches: Iterable[torch.Tensor],
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Call ``forward`` on each batch, treating :class:`StopForward` as the normal end of a pass; then
    ``after_batch`` (e.g. :func:`liteasr_hf.compression.memory.release_freed_memory`)."""
    for batch in batches:
        try:
            forward(batch)
        except StopForward:
            pass
        if after_batch is not None:
            after_batch()

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
    """Running first and second moments of a module's outputs ``y`` of width ``d``.

    Each sum is kept as a float64 pair, ``total + total_error`` (Knuth's TwoSum keeps every addition's rounding
    error), so that it is the exact sum of the per-window terms to ~1e-32: the same to the last bit however the
    windows are grouped (one process, or several whose sums are added up). Without it, the 1e-16 differences of
    float64 order are enough to turn eigenvectors of nearly equal eigenvalues, and the factors, by ~1e-5.
    """

    count: int
    total: torch.Tensor  # [d] float64: sum of y (high part)
    outer: torch.Tensor  # [d, d] float64: sum of y y^T (high part)
    total_error: torch.Tensor | None = None  # [d] float64: what rounding took from `total`
    outer_error: torch.Tensor | None = None  # [d, d] float64: what rounding took from `outer`

    def __post_init__(self) -> None:
        if self.total_error is None:
            self.total_error = torch.zeros_like(self.total)
        if self.outer_error is None:
            self.outer_error = torch.zeros_like(self.outer)

    @classmethod
    def empty(cls, width: int, device: torch.device | str = "cpu") -> "OutputStatistics":
        return cls(0, torch.zeros(width, dtype=torch.float64, device=device),
                   torch.zeros(width, width, dtype=torch.float64, device=device))

    def add(self, outputs: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> None:
        """Accumulate a batch of outputs ``[..., T, d]``: ``T`` positions of each window (a 2-D input is one window).

        Each window's sums are formed on their own and then added in, so they do not depend on which windows
        share a batch. Rows are converted to float64 ``chunk_elements`` at a time, so the transient copy stays
        a few MB whatever the batch size (a whole batch of fc1 outputs in float64 would be ~100 MB per step).
        """
        width = outputs.shape[-1]
        windows = outputs.detach().reshape(-1, *outputs.shape[-2:]) if outputs.dim() > 2 else outputs.detach()[None]
        step = max(1, chunk_elements // width)
        for window in windows:
            total = torch.zeros_like(self.total)
            outer = torch.zeros_like(self.outer)
            for start in range(0, window.shape[0], step):
                y = window[start : start + step].to(device=self.total.device, dtype=torch.float64)
                total += y.sum(0)
                outer.addmm_(y.t(), y)
            self.count += window.shape[0]
            _two_sum_(self.total, self.total_error, total)
            _two_sum_(self.outer, self.outer_error, outer)

    def sum_over(self, processes: Processes) -> None:
        """Replace these sums by their totals over all ``processes``, in place, the same on every process: the
        sums of disjoint shards of the calibration windows, added up exactly, are the sums over all windows."""
        if not processes.distributed:
            return
        count = torch.tensor([self.count], dtype=torch.int64, device=self.total.device)
        self.count = int(processes.sum_(count).item())

        def add_received(own: list[torch.Tensor], received: list[torch.Tensor]) -> None:
            for high, low, other_high, other_low in ((own[0], own[1], received[0], received[1]),
                                                     (own[2], own[3], received[2], received[3])):
                low += other_low
                _two_sum_(high, low, other_high)

        with torch.inference_mode():  # the sums were made in inference mode (hooks), so only there in place
            processes.fold([self.total, self.total_error, self.outer, self.outer_error], add_received)

    @property
    def mean(self) -> torch.Tensor:
        return (self.total + self.total_error) / max(self.count, 1)

    def covariance(self) -> torch.Tensor:
        """Covariance of the outputs ``[d, d]`` (float64), the matrix whose eigenvectors PCA keeps."""
        if self.count < 2:
            raise ValueError("Output statistics hold fewer than two samples: run calibration on more data.")
        mean = self.mean
        cov = (self.outer + self.outer_error) / self.count - torch.outer(mean, mean)
        return (cov + cov.t()) / 2  # symmetric to rounding, so eigh sees an exactly symmetric matrix


def _two_sum_(high: torch.Tensor, low: torch.Tensor, value: torch.Tensor) -> None:
    """``high + low += value`` in place, ``low`` taking the rounding error of ``high + value`` (Knuth's TwoSum,
    exact in floating point)."""
    total = high + value
    shifted = total - high
    low += (high - (total - shifted)) + (value - shifted)
    high.copy_(total)


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

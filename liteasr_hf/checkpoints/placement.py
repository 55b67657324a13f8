"""Where a model's weights live while it runs: one device and dtype, or an accelerate placement over several
devices, CPU memory and disk."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..atomic import scratch_directory

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    """Device, dtype and (for models larger than one device) accelerate's placement of a model.

    ``device_map`` (e.g. ``"auto"``, or module name -> device) spreads the model over ``max_memory`` (device ->
    amount, e.g. ``{0: "20GiB", "cpu": "64GiB"}``); what does not fit goes to ``offload_folder`` on disk (by
    default a temporary folder, removed afterwards). Without ``device_map`` the model sits on ``device``.
    """

    device: str | torch.device = "cpu"
    dtype: torch.dtype | str = torch.float32
    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"Placement.device = {self.device!r}: not a torch device ({err}).") from None
        if isinstance(self.dtype, str):
            if self.dtype.removeprefix("torch.") not in DTYPES:
                raise ValueError(f"Placement.dtype = {self.dtype!r}: choose one of {', '.join(DTYPES)}.")
            object.__setattr__(self, "dtype", DTYPES[self.dtype.removeprefix("torch.")])
        elif self.dtype not in DTYPES.values():
            raise ValueError(f"Placement.dtype = {self.dtype!r}: choose one of {', '.join(DTYPES)}.")
        if self.device_map is not None and not isinstance(self.device_map, (str, dict)):
            raise ValueError(f"Placement.device_map = {self.device_map!r}: give 'auto' (or another accelerate "
                             "strategy) or a dict of module name -> device.")
        for name in ("max_memory", "offload_folder"):
            if getattr(self, name) is not None and self.device_map is None:
                raise ValueError(f"Placement.{name} is set but device_map is not: {name} only applies to an "
                                 "accelerate placement (e.g. device_map='auto').")
        if self.max_memory is not None and not isinstance(self.max_memory, dict):
            raise ValueError(f"Placement.max_memory = {self.max_memory!r}: give device -> amount, "
                             "e.g. {0: '20GiB', 'cpu': '64GiB'}.")

    @contextlib.contextmanager
    def loading_kwargs(self) -> Iterator[dict]:
        """``from_pretrained`` keyword arguments for this placement (``device_map`` entries only when set); a
        temporary offload folder, when one is needed, lives as long as the block."""
        if self.device_map is None:
            yield {}
            return
        with contextlib.ExitStack() as stack:
            folder = self.offload_folder
            if folder is None:  # only used where the map sends weights to disk
                folder = stack.enter_context(scratch_directory("offload"))
            yield {"device_map": self.device_map, "max_memory": self.max_memory, "offload_folder": str(folder)}

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

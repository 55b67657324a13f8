"""Data parallelism over the processes that ``torchrun`` or ``accelerate launch`` start.

A launcher starts the same script N times with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR``,
``MASTER_PORT``) in the environment; :func:`process_group` joins them with ``torch.distributed`` (nccl on CUDA,
gloo on CPU). Without a launcher it yields one process and initializes nothing, so a plain ``python script.py``
runs exactly as it would without this module. Work is split by index (:meth:`Processes.shard`), sums are
added up across processes (:meth:`Processes.sum_`, :meth:`Processes.fold`) and results gathered in the data's order
(:meth:`Processes.gather`); only the main process writes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

#: How long a collective waits for a slow process. A failed process does not make the others wait this long:
#: the launcher sees it exit and stops the rest.
TIMEOUT = timedelta(minutes=30)

#: The command that starts N processes on CPU; `accelerate launch --cpu` starts only one without mpirun.
CPU_COMMAND = ("accelerate launch --multi_gpu --num_processes N script.py ... --device cpu "
               "(or torchrun --nproc_per_node N script.py ...)")


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of one run (one process, rank 0, when nothing was launched)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"Processes.rank = {self.rank}: must lie in [0, world_size = {self.world_size}).")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        """`` (process 2 of 4)`` in a run of several processes, else empty: for messages."""
        return f" (process {self.rank} of {self.world_size})" if self.distributed else ""

    def device(self, device: str | torch.device) -> str | torch.device:
        """``cuda`` without an index means this process's own GPU (``cuda:<local rank>``); others are returned as
        given."""
        parsed = torch.device(device)
        if self.distributed and parsed.type == "cuda" and parsed.index is None:
            return f"cuda:{self.local_rank}"
        return device

    def shard(self, n: int) -> range:
        """This process's share of ``n`` items: a contiguous block, sizes differing by at most one."""
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Replace ``tensor`` by its sum over all processes, in place (every process gets the same sum)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def total(self, value: float) -> float:
        """``value`` summed over all processes (in float64), on every process."""
        if not self.distributed:
            return value
        return float(self.sum_(torch.tensor([value], dtype=torch.float64, device=self._device())).item())

    def fold(self, tensors: list[torch.Tensor], add: Callable[[list[torch.Tensor], list[torch.Tensor]], None]) -> None:
        """Combine every process's ``tensors`` in rank order, in place, ending with the same result everywhere.

        Process ``r`` receives what processes ``0..r-1`` combined, adds it to its own with ``add(own, received)``
        and passes the result on; the last process sends the total to all. For sums that ``all_reduce`` would
        round (see :class:`~liteasr_hf.compression.calibration.OutputStatistics`). Memory: one extra copy.
        """
        if not self.distributed:
            return
        if self.rank > 0:
            received = [torch.empty_like(t) for t in tensors]
            for tensor in received:
                dist.recv(tensor, src=self.rank - 1)
            add(tensors, received)
            del received
        if self.rank < self.world_size - 1:
            for tensor in tensors:
                dist.send(tensor, dst=self.rank + 1)
        for tensor in tensors:
            dist.broadcast(tensor, src=self.world_size - 1)

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """Replace ``tensor`` (contiguous) on every process by process ``src``'s, in place."""
        if self.distributed:
            dist.broadcast(tensor, src=src)
        return tensor

    def gather(self, value: object) -> list[object]:
        """``value`` of every process, by rank, on every process. ``value`` is JSON data (dicts, lists, strings,
        numbers, None; tuples come back as lists): it travels as JSON bytes, never as a pickle, so nothing another
        process (or whoever reaches the rendezvous port) sends can run code here."""
        encoded = json.dumps(value, allow_nan=True).encode()
        if not self.distributed:
            return [json.loads(encoded)]
        device = self._device()
        size = torch.tensor([len(encoded)], dtype=torch.int64, device=device)
        sizes = [torch.empty_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = max(int(n) for n in sizes)
        data = torch.zeros(longest, dtype=torch.uint8, device=device)
        data[: len(encoded)] = torch.frombuffer(bytearray(encoded), dtype=torch.uint8).to(device)
        received = [torch.empty_like(data) for _ in range(self.world_size)]
        dist.all_gather(received, data)
        return [json.loads(r[: int(n)].cpu().numpy().tobytes()) for r, n in zip(received, sizes, strict=True)]

    def _device(self) -> torch.device:
        """Where the process group's collectives take tensors: nccl only this process's GPU, gloo the CPU."""
        cuda = dist.get_backend() == "nccl"
        return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    def barrier(self) -> None:
        """Wait for all processes: one that failed earlier never arrives, and the launcher stops the run."""
        if self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on the main process first (it fills caches: a converted checkpoint, a dataset), then on
        the others, so that no two processes write the same cache at once."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def launched() -> Processes:
    """The processes a launcher started, read from the environment; initializes nothing."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        # `accelerate launch --cpu --num_processes N` (N > 1) without an MPI host file runs the script once, alone,
        # with MASTER_ADDR set: the user asked for N processes and would silently get one.
        if env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in env:
            raise ValueError("`accelerate launch --cpu` started this script once, not once per process (it needs "
                             f"mpirun for that). Start N processes on CPU with: {CPU_COMMAND}.")
        return Processes()
    try:
        world_size = int(env["WORLD_SIZE"])
        rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", env.get("RANK", "0")))
    except ValueError as err:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers ({err}); start the script with "
                         "torchrun or accelerate launch, or without them for one process.") from err
    return Processes(rank, world_size, local_rank)


@contextlib.contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[Processes]:
    """Join the processes a launcher started (nccl for a CUDA ``device``, gloo otherwise) for the block.

    One process (no launcher, or ``--nproc_per_node 1``): nothing is initialized. On CUDA each process
    takes the GPU of its local rank (use :meth:`Processes.device`).
    """
    processes = launched()
    if not processes.distributed or dist.is_initialized():
        yield processes
        return
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if processes.local_rank >= torch.cuda.device_count():
            raise ValueError(f"Local process {processes.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                             "start at most one process per GPU (--nproc_per_node / --num_processes).")
        torch.cuda.set_device(processes.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=processes.rank, world_size=processes.world_size,
                            timeout=TIMEOUT)
    try:
        yield processes
    finally:
        dist.destroy_process_group()

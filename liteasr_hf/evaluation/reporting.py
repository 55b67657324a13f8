"""What the evaluation reports share: the spread of timings, the machine and library versions they were measured
with, and their Markdown tables. Used by the PyTorch and ONNX Runtime benchmarks and by transcription."""

from __future__ import annotations

import functools

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch


def iqr(values: Sequence[float]) -> float:
    """Interquartile range of ``values`` (inclusive quartiles); 0 with fewer than 2."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def machine_info(device: torch.device) -> dict:
    """The CPU (model name, count), the platform and, for a CUDA ``device``, the GPU: where a timing was taken."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(), "cpu_features": cpu_features()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


#: The CPU features that decide how 8-bit and float kernels run (ONNX Runtime's u8 x s8 products saturate 16-bit
#: sums on AVX2 without VNNI; with VNNI they do not), recorded beside every timing and 8-bit comparison.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c", "asimd", "asimddp", "i8mm")


def cpu_features() -> list[str]:
    """Which of :data:`CPU_FEATURES` this CPU has (``/proc/cpuinfo``'s flags; empty where it cannot be read)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return []
    flags = {f for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for f in line.split(":", 1)[1].split()}
    return [f for f in CPU_FEATURES if f in flags]


@functools.cache
def source_commit() -> str | None:
    """The git commit of the liteasr_hf source that runs (``-dirty`` appended when tracked files differ from it);
    ``None`` outside a git checkout, as for an installed wheel. Read once per process: a checkout that moves on
    during a long run must not be recorded as the code that ran (``liteasr`` reads it as the command starts)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def run_provenance(command: str, device: str | torch.device = "cpu") -> dict:
    """What a report records of the run that wrote it, so that its table can say where it came from: the command
    (local paths reduced, :func:`~liteasr_hf.portable.portable_command`), the date, the machine and the commit."""
    from ..portable import portable_command

    return {"command": portable_command(command),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(torch.device(device)), "commit": source_commit()}


def library_versions() -> dict:
    """The versions of liteasr-hf, transformers and torch, as report fields (``<name>_version``)."""
    import transformers

    from .. import __version__

    return {"liteasr_hf_version": __version__, "transformers_version": transformers.__version__,
            "torch_version": torch.__version__}


def markdown_table(rows: list[tuple[str, ...]]) -> list[str]:
    """The lines of a Markdown table whose first row is the header: the first column left-aligned, the others
    right-aligned."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    aligned = [[row[0].ljust(widths[0])] + [row[c].rjust(widths[c]) for c in range(1, len(row))] for row in rows]
    lines = ["| " + " | ".join(cells) + " |" for cells in aligned]
    lines.insert(1, "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|")
    return lines

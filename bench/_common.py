"""What every benchmark script needs: the machine's name, the command, a place for the figures."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def command_line() -> str:
    """The command as it was run (`python bench/x.py ...`), for the report."""
    return shlex.join(["python", *sys.argv])


def machine(device: object = None) -> str:
    """CPU, cores, the GPU of a CUDA device, and the torch/torchvision builds that ran."""
    parts = [f"{cpu_name()}, {os.cpu_count()} cores"]
    if getattr(device, "type", None) == "cuda":
        import torch

        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    else:
        parts.append("no GPU used")
    if "torch" in sys.modules:
        import torch
        import torchvision

        parts.append(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    return "; ".join(parts)


def publish(report: str, out: Path | None) -> None:
    """Print the markdown section, and append it to `out` (bench/RESULTS.md) when given."""
    print(report)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(report.rstrip("\n") + "\n\n")

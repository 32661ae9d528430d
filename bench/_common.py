"""What every benchmark script needs: the machine's name and a place to put the figures."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def publish(report: str, out: Path | None) -> None:
    """Print the markdown section, and append it to `out` (bench/RESULTS.md) when given."""
    print(report)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(report.rstrip("\n") + "\n\n")

"""`index --ray local` against the in-process `index`, side by side in one run (issue #14).

Both are the real CLI in a fresh process with EfficientNet-Lite0 on the same generated photos
(640x480 JPEGs). Each is run on two folder sizes; the difference between them gives the
steady-state rate (files per second once running) and the intercept the fixed cost of a run
(imports, for Ray also starting the cluster, its workers and the actors' model). The order of
the runs alternates so that a change in the machine's load does not favour one side.

    python bench/ray.py --small 60 --large 300 [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, machine, publish

MODEL = "efficientnet-lite0"


def make_photos(folder: Path, n: int, seed: int = 0) -> None:
    """n distinct 640x480 JPEGs: smooth gradients with noise (photo-like file sizes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(n):
        a, b, c = rng.uniform(0.002, 0.03, 3)
        base = np.stack([np.sin(a * x + i), np.cos(b * y - i), np.sin(c * (x + y))], -1)
        pixels = (127 + 100 * base + rng.normal(0, 12, base.shape)).clip(0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"p{i:05d}.jpg", quality=90)


def timed_index(folder: Path, ray: bool, backend: str) -> dict:
    """One fresh `deepvision index` process; wall seconds and its own summary."""
    with tempfile.TemporaryDirectory(prefix="dv-bench-idx-") as idx:
        args = [sys.executable, "-m", "deepvision", "index", str(folder), "--index-dir", idx,
                "--model", MODEL, "--json", "--backend", backend,
                *(["--ray", "local"] if ray else [])]
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, check=False,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"index failed ({done.returncode}): {done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    return {"wall": wall, "embedded": doc["embedded"], "cluster": doc.get("cluster"),
            "backend": doc["backend"]}


def measure(folders: dict[int, Path], repeats: int,
            backend: str) -> dict[tuple[str, int], list[float]]:
    walls: dict[tuple[str, int], list[float]] = {}
    for r in range(repeats):
        order = [("local", False), ("ray", True)]
        for engine, ray in order if r % 2 == 0 else order[::-1]:
            for n, folder in folders.items():
                got = timed_index(folder, ray, backend)
                assert got["embedded"] == n, got
                walls.setdefault((engine, n), []).append(got["wall"])
                print(f"{engine:5s} n={n:4d} {got['wall']:6.1f} s  {got['backend']}  "
                      f"{got['cluster'] or ''}",
                      file=sys.stderr)
    return walls


def report(walls: dict[tuple[str, int], list[float]], small: int, large: int,
           load: tuple[str, str], backend: str) -> str:
    def best(engine: str, n: int) -> float:
        return min(walls[(engine, n)])

    lines = ["## Ray extraction overhead: `index --ray local` vs in-process (issue #14)", "",
             f"`{command_line()}`", "", f"Machine: {machine()}; 1 Ray node with all its cores; "
             f"`--backend {backend}` on both sides.",
             f"Load average (1 min) before / after: {load[0]} / {load[1]}.", "",
             f"| engine | wall, {small} files | wall, {large} files | steady rate | fixed cost |",
             "| --- | ---: | ---: | ---: | ---: |"]
    rates = {}
    for engine in ("local", "ray"):
        a, b = best(engine, small), best(engine, large)
        rate = (large - small) / (b - a)
        rates[engine] = rate
        fixed = a - small / rate
        lines.append(f"| {engine} | {a:.1f} s | {b:.1f} s | {rate:.1f} files/s | {fixed:.1f} s |")
    lines += ["", f"Steady-state rate, ray / local: **{rates['ray'] / rates['local']:.2f}x**; "
              f"a {large}-file run: **{best('ray', large) / best('local', large):.2f}x** the "
              "in-process wall time. Best of the repeats; each run a fresh process and, for "
              "Ray, a fresh local cluster."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=60)
    parser.add_argument("--large", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backend", default="torch",
                        help="the same network backend on both sides (auto could pick another "
                        "one for each: its remembered choice depends on the threads)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dv-bench-ray-") as tmp:
        folders = {}
        for n in (args.small, args.large):
            folders[n] = Path(tmp) / f"photos{n}"
            make_photos(folders[n], n)
        before = os.getloadavg()[0]
        walls = measure(folders, args.repeats, args.backend)
        after = os.getloadavg()[0]
    publish(report(walls, args.small, args.large, (f"{before:.2f}", f"{after:.2f}"),
                   args.backend), args.out)


if __name__ == "__main__":
    main()

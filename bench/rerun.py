"""Nightly-rerun benchmark (issue: incremental reindexing).

1. No-change rerun: N small image files whose index is already complete; time the real
   `deepvision index` CLI (a fresh process: imports, discovery, catalog diff, summary).
   The index is seeded through the catalog API with the files' real size/mtime/xxh3 hash and
   placeholder unit vectors, because embedding 100k files on 2 CPU cores takes hours and a
   no-change rerun never reads a vector. Timed runs are the real code path.
2. 1% changed: a smaller folder indexed for real with EfficientNet-Lite0, then 1% of its files
   rewritten with new content; rerun time vs the full index time.

    python bench/rerun.py --files 100000 --changed-folder 1000 [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import cpu_name, publish

from deepvision.models.registry import REGISTRY
from deepvision.pipeline.discover import discover
from deepvision.pipeline.hashing import hash_files
from deepvision.store.indexstore import IndexStore, new_catalog_name
from deepvision.store.manifest import Manifest


def write_images(folder: Path, n: int, size: tuple[int, int] = (16, 12), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img_{i:07d}.png", compress_level=1)


def seed_index(folder: Path, store: IndexStore) -> None:
    """A complete index of `folder` without running the model (see module docstring): the
    writer's own steps (catalog, then FAISS file and manifest), vectors from a random source."""
    spec = REGISTRY["efficientnet-lite0"]
    weights = spec.find_weights(None, False)
    manifest = Manifest(name=store.name, model=spec.name, weights=weights.identity,
                        weights_origin=weights.origin, weights_path=str(weights.path),
                        dim=spec.dim, catalog=new_catalog_name())
    files = discover([folder]).files
    hashed = hash_files(files)
    assert not [h.failure for h in hashed if h.failure is not None]
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((len(hashed), spec.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with store.open_write() as writer:
        catalog = writer.begin(manifest, fresh=True)
        with catalog.write():
            for h, vec in zip(hashed, vecs, strict=True):
                vid = catalog.add_vector(h.digest, vec)
                catalog.upsert_file(h.record.path, h.record.size, h.record.mtime_ns, h.digest,
                                    vid)
            catalog.add_root(str(folder))
        # The FAISS file of the structure `auto` picks for this many vectors, as `index` would
        # leave it (else the first timed rerun would restructure), then the manifest.
        writer.finish()


def run_index(folder: Path, store: IndexStore, *extra: str) -> tuple[float, dict]:
    env = dict(os.environ, DEEPVISION_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deepvision", "index", str(folder),
                           "--index-dir", str(store.root), "--name", store.name, "--json",
                           *extra],
                          capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise SystemExit(f"index failed ({proc.returncode}): {proc.stderr}")
    return seconds, json.loads(proc.stdout)


def no_change(work: Path, n: int, repeats: int = 3) -> dict:
    folder = work / f"photos_{n}"
    store = IndexStore(work / "indexes", f"nochange_{n}")
    t0 = time.perf_counter()
    write_images(folder, n)
    seed_index(folder, store)
    setup = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        seconds, summary = run_index(folder, store)
        assert summary["embedded"] == 0 and summary["unchanged"] == n, summary
        assert summary["device"] is None  # the model was never loaded
        times.append(seconds)
    return {"files": n, "median_s": statistics.median(times), "runs_s": times, "setup_s": setup}


def one_percent(work: Path, n: int) -> dict:
    folder = work / f"changed_{n}"
    store = IndexStore(work / "indexes", f"changed_{n}")
    write_images(folder, n, size=(64, 48), seed=7)
    full_s, full = run_index(folder, store, "--model", "efficientnet-lite0", "--quiet")
    assert full["embedded"] == n, full
    changed = sorted(folder.rglob("*.png"))[:: 100][: max(1, n // 100)]
    rng = np.random.default_rng(99)
    for path in changed:
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    rerun_s, rerun = run_index(folder, store, "--quiet")
    assert rerun["updated"] == len(changed) and rerun["embedded"] == len(changed), rerun
    return {"files": n, "changed": len(changed), "full_s": full_s, "rerun_s": rerun_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=10_000, help="second size, for the projection")
    ap.add_argument("--changed-folder", type=int, default=1_000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="append a section to this markdown")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dv-bench-"))
    try:
        small = no_change(work, args.small)
        big = no_change(work, args.files)
        per_file = (big["median_s"] - small["median_s"]) / (args.files - args.small)
        fixed = big["median_s"] - per_file * args.files
        projected = fixed + per_file * 1_000_000
        changed = one_percent(work, args.changed_folder)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    machine = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report = "\n".join([
        f"## Nightly rerun (bench/rerun.py) — {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {machine}, no GPU. Command: `python bench/rerun.py --files {args.files} "
        f"--small {args.small} --changed-folder {args.changed_folder}`",
        "",
        "| case | files | time (median of 3, whole `deepvision index` process) |",
        "| --- | ---: | ---: |",
        f"| no-change rerun | {small['files']:,} | {small['median_s']:.2f} s |",
        f"| no-change rerun | {big['files']:,} | {big['median_s']:.2f} s |",
        f"| projection (linear: {fixed:.2f} s fixed + {per_file * 1e6:.1f} µs/file) | 1,000,000 "
        f"| {projected:.1f} s |",
        "",
        f"1% changed: {changed['changed']} of {changed['files']:,} files (64×48 PNG) rewritten; "
        f"full index with EfficientNet-Lite0 {changed['full_s']:.1f} s, rerun "
        f"{changed['rerun_s']:.1f} s ({changed['full_s'] / changed['rerun_s']:.1f}× faster).",
        "",
    ])
    publish(report, args.out)


if __name__ == "__main__":
    main()

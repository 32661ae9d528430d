"""Index structures at scale (issue: indexes that scale).

Synthetic clustered unit vectors (Gaussian clusters, not uniform noise), 2048-d by default.
For each index type (and `auto`): build time, bytes per vector on disk and in RAM, single-query
latency p50/p99, QPS for batches of 100, recall@10 against exact search.

    python bench/index_scale.py --sizes 100000 1000000 --types auto flat ivf ivfpq hnsw \\
        [--max-memory 16G] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import cpu_name, publish

from deepvision.store.faiss_index import (
    TRAIN_POINTS_PER_CENTROID,
    VectorIndex,
    default_max_memory,
    parse_size,
    plan_index,
)

NPROBE_SWEEP = (8, 16, 32, 64, 128)


def clustered(n: int, dim: int, seed: int, centers: int = 2000, block: int = 100_000) -> np.ndarray:
    """Unit vectors around `centers` random directions, built block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(12345).standard_normal((centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, block):
        m = min(block, n - s)
        x = c[rng.integers(0, centers, m)]
        x += rng.standard_normal((m, dim)).astype(np.float32) * (0.9 / np.sqrt(dim))
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top(db: np.ndarray, q: np.ndarray, k: int, block: int = 200_000) -> np.ndarray:
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    for s in range(0, len(db), block):
        sims = q @ db[s:s + block].T
        idx = np.argpartition(-sims, k, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, idx, 1)], 1)
        cand_i = np.concatenate([best_i, idx + s], 1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(kind: str, db: np.ndarray, q: np.ndarray, truth: np.ndarray, budget: int,
            work: Path) -> dict:
    n, dim = db.shape
    plan = plan_index(kind, n, dim, budget)
    ids = np.arange(n, dtype=np.int64)
    before = rss_bytes()
    t0 = time.perf_counter()
    sample = None
    if plan.needs_training:
        pick = np.random.default_rng(0).choice(n, min(n, TRAIN_POINTS_PER_CENTROID * plan.nlist),
                                               replace=False)
        sample = db[np.sort(pick)]
    blocks = ((ids[s:s + 100_000], db[s:s + 100_000]) for s in range(0, n, 100_000))
    index = VectorIndex.from_blocks(dim, blocks, plan, sample)
    build_s = time.perf_counter() - t0
    del sample  # RSS growth below is then the index itself (plus allocator slack)
    gc.collect()
    ram = rss_bytes() - before
    path = work / f"{kind}.faiss"
    index.save(path)
    disk = path.stat().st_size
    index.configure()

    def top10(queries: np.ndarray) -> np.ndarray:
        # What `search` does: for PQ, candidates from the codes, re-ranked with stored vectors.
        return index.top(queries, 10, lambda u: db[u])[1]

    lat = []
    for i in range(min(200, len(q))):
        t = time.perf_counter()
        top10(q[i:i + 1])
        lat.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    got = np.concatenate([top10(q[s:s + 100]) for s in range(0, len(q), 100)])
    qps = len(q) / (time.perf_counter() - t)
    rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)]))
    sweep = []
    for nprobe in (NPROBE_SWEEP if plan.needs_training else ()):
        index.configure(nprobe=nprobe)
        times = []
        for i in range(min(100, len(q))):
            t = time.perf_counter()
            top10(q[i:i + 1])
            times.append((time.perf_counter() - t) * 1000)
        hits = top10(q)
        r = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits, truth, strict=True)]))
        sweep.append((nprobe, float(np.percentile(times, 50)), r))
    path.unlink()
    return {"kind": kind, "chosen": plan.factory, "n": n, "build_s": build_s,
            "disk_b": disk / n, "ram_b": max(ram, 0) / n, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "qps": qps, "recall": rec,
            "nprobe": plan.nprobe, "sweep": sweep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--types", nargs="+", default=["auto", "flat", "ivf", "ivfpq", "hnsw"])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--max-memory", default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    budget = parse_size(args.max_memory) if args.max_memory else default_max_memory()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dv-scale-") as tmp:
        for n in args.sizes:
            db = clustered(n, args.dim, seed=1)
            q = clustered(args.queries, args.dim, seed=2)
            truth = exact_top(db, q, 10)
            for kind in args.types:
                row = measure(kind, db, q, truth, budget, Path(tmp))
                rows.append(row)
                print(row, flush=True)
                gc.collect()
            del db
            gc.collect()
    cpu = cpu_name()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines = [f"## Index structures (bench/index_scale.py) — {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {cpu}, {os.cpu_count()} cores, no GPU; faiss-cpu. Clustered synthetic "
             f"{args.dim}-d unit vectors, {args.queries} queries, k=10, memory budget "
             f"{budget / 2**30:.1f} GiB, peak RSS {peak:.1f} GiB. "
             f"Command: `python bench/index_scale.py --sizes {' '.join(map(str, args.sizes))} "
             f"--types {' '.join(args.types)}"
             + (f" --max-memory {args.max_memory}`" if args.max_memory else "`"), "",
             "| n | type | FAISS structure | build s | disk B/vec | RSS growth B/vec | p50 ms "
             "| p99 ms "
             "| QPS (batch 100) | recall@10 |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['kind']} | `{r['chosen']}` | {r['build_s']:.1f} | "
                     f"{r['disk_b']:.0f} | {r['ram_b']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{r['qps']:.0f} | {r['recall']:.3f} |")
    sweeps = [r for r in rows if r["sweep"]]
    if sweeps:
        lines += ["", "nprobe sweep (single-query p50 ms / recall@10); the default is set with "
                  "the index:", "", "| n | structure | default | "
                  + " | ".join(f"nprobe {p}" for p in NPROBE_SWEEP) + " |",
                  "| ---: | --- | ---: |" + " ---: |" * len(NPROBE_SWEEP)]
        for r in sweeps:
            cells = " | ".join(f"{ms:.2f} / {rc:.3f}" for _, ms, rc in r["sweep"])
            lines.append(f"| {r['n']:,} | `{r['chosen']}` | {r['nprobe']} | {cells} |")
    report = "\n".join(lines) + "\n"
    publish(report, args.out)


if __name__ == "__main__":
    main()

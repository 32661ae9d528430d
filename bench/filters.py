"""Filtered search (#28): p50 and recall@10 per FAISS structure for filters that pass 50 %,
1 % and 0.01 % of a collection.

Clustered synthetic unit vectors (bench/index_scale.clustered); the passing vectors are a
uniform random subset (a filter uncorrelated with what pictures look like, the hard case for
an ANN structure). Each query is searched alone, as `search` and `serve` do for one upload,
through `VectorIndex.top(..., allowed=...)`: the ID selector, the widened nprobe / efSearch,
or the exact road for few ids, all included in the time; the stored vectors come from memory
(the catalog's sqlite read for the exact road is measured separately with --catalog, as is
the SQL that turns a filter into vector ids). Recall@10 is against numpy brute force over
the passing vectors only.

    python bench/filters.py --n 1000000 --dim 128 [--types flat ivf ivfpq ivfpq-ondisk hnsw]
        [--catalog] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, cpu_name, publish
from index_scale import clustered

from deepvision.filters import Filter
from deepvision.store import ondisk
from deepvision.store.catalog import Catalog
from deepvision.store.faiss_index import EXACT_MAX, ONDISK, VectorIndex, plan_index

FRACTIONS = (0.5, 0.01, 0.0001)
K = 10


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build(kind: str, ids: np.ndarray, db: np.ndarray, work: Path) -> tuple[VectorIndex, float]:
    plan = plan_index(kind, len(db), db.shape[1])
    sample = db[np.random.default_rng(5).choice(len(db), min(len(db), 64 * max(1, plan.nlist)),
                                                replace=False)]
    t = time.perf_counter()
    blocks = ((ids[s:s + 100_000], db[s:s + 100_000]) for s in range(0, len(db), 100_000))
    if kind == ONDISK:
        index = ondisk.build(ondisk.train(sample, plan), blocks, plan, work / "faiss-1.bin",
                             ondisk.LocalRunner(2))
    else:
        index = VectorIndex.from_blocks(db.shape[1], blocks, plan, sample=sample)
    index.configure()
    return index, time.perf_counter() - t


def truth(queries: np.ndarray, db: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    sims = queries @ db[allowed - 1].T
    return allowed[np.argsort(-sims, axis=1)[:, :K]]


def measure(index: VectorIndex, queries: np.ndarray, db: np.ndarray,
            allowed: np.ndarray | None) -> tuple[float, float]:
    """(p50 ms of single queries, recall@10)."""
    stored = lambda u: db[u - 1]  # noqa: E731 (ids are rows + 1)
    want = truth(queries, db, allowed if allowed is not None else np.arange(1, len(db) + 1))
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, got = index.top(q[None], K, stored, allowed)
        times.append(time.perf_counter() - t)
        found.append(got[0])
    recall = np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(found, want, strict=True)])
    return float(np.median(times) * 1000), float(recall)


def catalog_costs(n: int, dim: int, work: Path) -> list[str]:
    """The sqlite side: a date filter -> passing vector ids (Catalog.passing_vectors) and the
    exact road's read of stored vectors (Catalog.vectors_for), on an n-file catalog."""
    cat = Catalog(work / "catalog.sqlite")
    rng = np.random.default_rng(3)
    keys = rng.uniform(0, 1e9, n)
    vec = np.zeros(dim, np.float16).tobytes()
    t = time.perf_counter()
    with cat.write():
        db = cat._db  # bulk rows straight through sqlite: a million Python calls take minutes
        db.executemany("INSERT INTO vectors (id, hash, frame, vec) VALUES (?, ?, 0, ?)",
                       ((i + 1, f"h{i}", vec) for i in range(n)))
        db.executemany("INSERT INTO files VALUES (?, 1, 1, ?, ?, 'ok', NULL, NULL)",
                       ((f"/p/{i % 1000}/f{i}.jpg", f"h{i}", i + 1) for i in range(n)))
        db.executemany("INSERT INTO filemeta (path, size, mtime_ns, kind, taken_key) VALUES "
                       "(?, 1, 1, 'image', ?)",
                       ((f"/p/{i % 1000}/f{i}.jpg", float(keys[i])) for i in range(n)))
    rows = [f"catalog of {n:,} files built in {time.perf_counter() - t:.0f} s", ""]
    rows += ["| filter passes | SQL -> vector ids ms | read stored vectors ms |",
             "| ---: | ---: | ---: |"]
    for frac in FRACTIONS:
        after = datetime(1970, 1, 1) + timedelta(seconds=float(np.quantile(keys, 1 - frac)))
        flt = Filter(after=after)
        t = time.perf_counter()
        allowed = cat.passing_vectors(flt)
        sql_ms = (time.perf_counter() - t) * 1000
        few = allowed[:EXACT_MAX]
        t = time.perf_counter()
        cat.vectors_for(few, dim)
        read_ms = (time.perf_counter() - t) * 1000
        rows.append(f"| {frac:.2%} ({len(allowed):,}) | {sql_ms:.1f} | {read_ms:.1f} "
                    f"({len(few):,} vectors) |")
    cat.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--types", nargs="*", default=["ivf", "ivfpq", ONDISK, "flat", "hnsw"])
    ap.add_argument("--ef-search", type=int, default=None, help="HNSW efSearch (default 128)")
    ap.add_argument("--catalog", action="store_true", help="also time the sqlite side")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    db = clustered(args.n, args.dim, seed=1)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    queries = clustered(args.queries, args.dim, seed=2)
    rng = np.random.default_rng(4)
    subsets = {f: np.sort(rng.choice(ids, max(1, round(args.n * f)), replace=False))
               for f in FRACTIONS}
    loads = [load_avg()]
    header = ("| type | FAISS structure | build s | unfiltered | "
              + " | ".join(f"{f:.2%} ({len(subsets[f]):,})" for f in FRACTIONS) + " |")
    rows = [header, "| --- | --- | ---: | ---: |" + " ---: |" * len(FRACTIONS)]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        extra = catalog_costs(args.n, args.dim, Path(tmp)) if args.catalog else []
        print("\n".join(extra), flush=True)
        for kind in args.types:
            index, build_s = build(kind, ids, db, Path(tmp))
            index.configure(ef_search=args.ef_search)
            cells = [measure(index, queries, db, None)]
            cells += [measure(index, queries, db, subsets[f]) for f in FRACTIONS]
            rows.append(f"| {kind} | `{index.plan.factory}` | {build_s:.0f} | "
                        + " | ".join(f"{p:.2f} ms / {r:.3f}" for p, r in cells) + " |")
            print(rows[-1], flush=True)
            loads.append(load_avg())
            del index
    report = "\n".join([
        f"## Filtered search (bench/filters.py) — {time.strftime('%Y-%m-%d')}", "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, no GPU; shared with other agents' "
        f"jobs (load average before and after each type: {' -> '.join(loads)}). "
        f"{args.n:,} clustered synthetic {args.dim}-d unit vectors, {args.queries} single "
        f"queries, k={K}; each cell is p50 / recall@10 against brute force over the passing "
        f"vectors. Command: `{command_line()}`", "", *rows, "", *extra])
    publish(report, args.out)


if __name__ == "__main__":
    main()

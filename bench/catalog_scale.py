"""The sqlite catalog at 1M / 10M rows (issue 14): insert rate, lookup rates, no-op rerun time.

Builds a real catalog through `store.catalog.Catalog` the way `index` fills it: one vector and
one file row per image, committed every `--commit-every` images (index's default 1000), random
content hashes (xxh3-like hex, so the hash indexes take random inserts as they do in use),
synthetic paths, 1,000 files per folder. Vectors are `--dim`-d float16 (small: the disk here
cannot hold 10M x 1280-d); the files table is full size.

Then, on the finished file (page cache warm, as on a nightly rerun):
- lookups: `hits_for` of 100 random vector ids (what one search query resolves), `contents_for`
  of 1,000 random hashes (what an incremental run links), `files_under` of one folder;
- no-op rerun: the catalog side of `index` with nothing changed: `files_under(root)` for the
  whole collection, then `IndexRun._plan` (the real planning code) against a discovery result
  equal to what the catalog holds. The filesystem walk itself is not included (bench/rerun.py
  measured the whole process, walk included, up to 100k files).

    python bench/catalog_scale.py --rows 1000000 10000000 [--dim 16] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, cpu_name, publish

from deepvision.pipeline.discover import Discovery
from deepvision.progress import Silent
from deepvision.services.sync import IndexRequest, IndexRun, IndexSummary
from deepvision.store.catalog import Catalog
from deepvision.store.indexstore import IndexStore
from deepvision.types import FileRecord

ROOT = "/archive"


def path_of(i: int) -> str:
    return f"{ROOT}/{i // 1_000_000:04d}/{i // 1000 % 1000:03d}/img_{i:010d}.jpg"


def hash_of(i: int) -> str:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest()


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build(path: Path, rows: int, dim: int, commit_every: int) -> float:
    """Rows inserted per second through Catalog.add_vector + upsert_file."""
    catalog = Catalog(path)
    vec = np.random.default_rng(0).standard_normal(dim).astype(np.float16)
    t0 = time.perf_counter()
    for start in range(0, rows, commit_every):
        with catalog.write():
            for i in range(start, min(rows, start + commit_every)):
                vid = catalog.add_vector(hash_of(i), vec)
                catalog.upsert_file(path_of(i), 1000 + i % 5000, 1_700_000_000_000_000_000 + i,
                                    hash_of(i), vid)
        if start and start % 1_000_000 == 0:
            rate = start / (time.perf_counter() - t0)
            print(f"  {start:,} rows, {rate:,.0f} rows/s, load {load_avg()}", flush=True)
    seconds = time.perf_counter() - t0
    catalog.close()
    return rows / seconds


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def lookups(path: Path, rows: int) -> dict[str, float]:
    catalog = Catalog(path, readonly=True)
    rng = np.random.default_rng(1)
    id_batches = [rng.integers(1, rows + 1, 100) for _ in range(200)]
    hash_batches = [[hash_of(int(i)) for i in rng.integers(0, rows, 1000)] for _ in range(20)]
    folders = [path_of(int(i)).rsplit("/", 1)[0] for i in rng.integers(0, rows, 50)]
    with catalog.snapshot():
        t = timed(lambda: [catalog.hits_for(b) for b in id_batches], 3)
        hits = 200 * 100 / t
        t = timed(lambda: [catalog.contents_for(b) for b in hash_batches], 3)
        contents = 20 * 1000 / t
        t = timed(lambda: [catalog.files_under(f) for f in folders], 3)
        folder_ms = t / len(folders) * 1000
    catalog.close()
    return {"hits_per_s": hits, "contents_per_s": contents, "folder_ms": folder_ms}


def noop_rerun(path: Path, rows: int, work: Path) -> dict[str, float]:
    """files_under(root) + IndexRun._plan with a discovery equal to the catalog's rows."""
    found = Discovery(files=[FileRecord(path_of(i), 1000 + i % 5000,
                                        1_700_000_000_000_000_000 + i) for i in range(rows)])
    req = IndexRequest(roots=(Path(ROOT),), store=IndexStore(work, "bench"))
    run = IndexRun(req, Silent(), hasher=lambda recs: [])
    catalog = Catalog(path, readonly=True)
    gc.collect()
    with catalog.snapshot():
        t0 = time.perf_counter()
        known = catalog.files_under(ROOT)
        t1 = time.perf_counter()
        summary = IndexSummary(index="bench", model="bench", device=None)
        plan = run._plan(catalog, known, found, summary)
        t2 = time.perf_counter()
    catalog.close()
    if summary.unchanged != rows or plan.embed or plan.gone:
        raise AssertionError(f"not a no-op: {summary.unchanged} unchanged of {rows}")
    del known, found
    gc.collect()
    return {"files_under_s": t1 - t0, "plan_s": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--commit-every", type=int, default=1000)
    ap.add_argument("--folder", type=Path, default=None, help="where the catalogs go (deleted)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = []
    work = Path(tempfile.mkdtemp(prefix="dv-catalog-", dir=args.folder))
    try:
        for rows in args.rows:
            path = work / f"catalog-{rows}.sqlite"
            before = load_avg()
            rate = build(path, rows, args.dim, args.commit_every)
            size = sum(p.stat().st_size for p in work.glob(f"catalog-{rows}.sqlite*"))
            look = lookups(path, rows)
            noop = noop_rerun(path, rows, work)
            row = {"rows": rows, "insert_per_s": rate, "bytes": size, **look, **noop,
                   "load_before": before, "load_after": load_avg()}
            print(row, flush=True)
            results.append(row)
            for p in work.glob(f"catalog-{rows}.sqlite*"):
                p.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines = [f"## sqlite catalog at scale (bench/catalog_scale.py) — {time.strftime('%Y-%m-%d')}",
             "", f"Machine: Intel Xeon, 2 cores, 24 GiB, no GPU ({cpu_name()}, {os.cpu_count()} "
             f"cores), sqlite {__import__('sqlite3').sqlite_version}, shared with other "
             f"sessions' work. One file row + one {args.dim}-d float16 vector per image, "
             f"committed every {args.commit_every}; peak RSS {peak:.1f} GiB. "
             f"Command: `{command_line()}`", "",
             "| rows | insert rows/s | catalog size | bytes/row | hits_for ids/s (batches of "
             "100) | contents_for hashes/s (batches of 1000) | files_under one folder ms | "
             "no-op rerun: files_under(root) s | + _plan s | load before / after |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['insert_per_s']:,.0f} | {r['bytes'] / 2**30:.2f} GiB | "
            f"{r['bytes'] / r['rows']:.0f} | {r['hits_per_s']:,.0f} | {r['contents_per_s']:,.0f} "
            f"| {r['folder_ms']:.2f} | {r['files_under_s']:.1f} | {r['plan_s']:.1f} | "
            f"{r['load_before']} / {r['load_after']} |")
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()

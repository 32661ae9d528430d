"""What local-feature verification (issue #25) costs: index time, bytes per picture, query time.

    python bench/verify_cost.py DB_FOLDER QUERY_FOLDER [--work DIR] [--out bench/RESULTS.md]

Side by side in one run, on this machine: `index` with and without --local-features (two fresh
indexes of DB_FOLDER, the network's time included in both), the evidence file's bytes per
picture, and one query at a time through one Searcher (the model loaded once, as `serve` holds
it): the vector search alone, with verification, and the query-side steps apart (features of
the query, the checks). The load average is printed beside the figures: other jobs on a 2-core
machine move every time here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import command_line, machine, publish


def timed_index(db: Path, work: Path, *flags: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deepvision", "index", str(db), "--index-dir",
                    str(work), "--quiet", *flags], check=True)
    return time.perf_counter() - start


def query_times(work: Path, queries: list[Path]) -> dict[str, list[float]]:
    from deepvision.match.verifier import index_verifier, load_picture
    from deepvision.pipeline.embedder import EmbedOptions
    from deepvision.progress import Silent
    from deepvision.services.embedding import index_embedder
    from deepvision.services.search import RankOptions, Searcher
    from deepvision.store.indexstore import IndexStore

    store = IndexStore(work)
    embedder = index_embedder(store.check(), None, EmbedOptions(workers=0))
    searcher = Searcher(store, embedder, index_verifier(store))
    out: dict[str, list[float]] = {"vectors only": [], "verified": [], "query features": []}
    for q in [queries[0], *queries]:  # the first one warms up, and is not counted
        for key, opts in (("vectors only", RankOptions(verify=False)),
                          ("verified", RankOptions())):
            start = time.perf_counter()
            searcher.search_files([str(q)], replace(opts), Silent(), None)
            out[key].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert searcher.verifier is not None
        searcher.verifier.query(load_picture(str(q)))
        out["query features"].append(time.perf_counter() - start)
    return {k: v[1:] for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db", type=Path)
    ap.add_argument("queries", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--limit", type=int, default=40, help="queries timed")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dv-verify-cost-"))
    load = os.getloadavg()[0]
    plain = timed_index(args.db, work / "plain", "--no-local-features")
    full = timed_index(args.db, work / "full")
    evidence = work / "full" / "default" / "local-features.sqlite"
    import sqlite3

    with sqlite3.connect(evidence) as db:
        n, total = db.execute("SELECT COUNT(*), SUM(LENGTH(data)) FROM evidence").fetchone()
    queries = sorted(p for p in args.queries.rglob("*") if p.suffix.lower() in
                     (".jpg", ".jpeg", ".png"))[:args.limit]
    times = query_times(work / "full", queries)

    def ms(xs: list[float]) -> str:
        p90 = sorted(xs)[int(len(xs) * 0.9)]
        return f"{statistics.median(xs) * 1000:.0f} ms (p90 {p90 * 1000:.0f})"

    extra = (full - plain) / n * 1000

    publish(f"""## Verification cost (bench/verify_cost.py) — {time.strftime('%Y-%m-%d')}

`{command_line()}`

Machine: {machine()}; load average at the start {load:.1f} (other jobs shared the 2 cores).

| what | figure |
| --- | --- |
| `index` of {n} pictures, --no-local-features | {plain:.1f} s |
| `index` of the same with local features (the default) | {full:.1f} s (+{extra:.0f} ms a picture) |
| evidence stored per picture | {total / n / 1024:.1f} KB (budget 16 KB) |
| one query, vectors only (p50) | {ms(times['vectors only'])} |
| one query, verified (p50) | {ms(times['verified'])} |
| the query's own features at 640 px (the second look) | {ms(times['query features'])} |

{len(queries)} queries from {args.queries}, one at a time through one Searcher.
""", args.out)


if __name__ == "__main__":
    main()

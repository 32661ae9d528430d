"""HTML report at scale: 1,000 queries x 10 matches (issue: results people can use).

Writes N small JPEGs, builds a search result of Q queries with K matches each drawn from them,
times the report (thumbnails + page) cold and warm (thumbnails reused), and times headless
Chromium loading the page.

    python bench/html_report.py [--images 2000 --queries 1000 --k 10] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import cpu_name, publish

from deepvision.output.render import search_html
from deepvision.services.search import QueryResult, SearchResult
from deepvision.services.thumbnails import FileThumbnails
from deepvision.types import Match


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="dv-html-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = []
        for i in range(args.images):
            p = folder / f"img_{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(p)
            paths.append(str(p))
        queries = [QueryResult(paths[q], None, [
            Match(r + 1, paths[m], float(1 - r * 0.05))
            for r, m in enumerate(rng.choice(args.images, args.k, replace=False))])
            for q in rng.choice(args.images, args.queries, replace=False)]
        result = SearchResult("/index", "efficientnet-lite0", queries)
        out = Path(tmp) / "report" / "search.html"
        t = time.perf_counter()
        search_html(result, out, FileThumbnails())
        cold = time.perf_counter() - t
        t = time.perf_counter()
        search_html(result, out, FileThumbnails())
        warm = time.perf_counter() - t
        page_mb = out.stat().st_size / 1e6
        thumbs = list((out.parent / "search_files").iterdir())
        thumbs_mb = sum(p.stat().st_size for p in thumbs) / 1e6
        browser = shutil.which("chromium")
        load = float("nan")
        if browser:
            t = time.perf_counter()
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                            "--disable-background-networking", "--disable-component-update",
                            "--no-first-run", "--disable-sync", "--dump-dom", out.as_uri()],
                           capture_output=True, timeout=300, check=False)
            load = time.perf_counter() - t
    report = "\n".join([
        f"## HTML report (bench/html_report.py) — {time.strftime('%Y-%m-%d')}", "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores. {args.queries} queries × {args.k} "
        f"matches over {args.images} distinct 320×240 JPEGs. Command: `python "
        f"bench/html_report.py --images {args.images} --queries {args.queries} --k {args.k}`", "",
        "| step | figure |", "| --- | ---: |",
        f"| report, cold (writes {len(thumbs)} thumbnails) | {cold:.1f} s |",
        f"| report, warm (thumbnails reused) | {warm:.2f} s |",
        f"| page size | {page_mb:.2f} MB |",
        f"| thumbnails | {thumbs_mb:.1f} MB |",
        f"| headless Chromium: start, load, lay out, dump DOM | {load:.1f} s |", ""])
    publish(report, args.out)


if __name__ == "__main__":
    main()
